import type { EddyConfig } from '../common/config.ts';
import type { KafkaClient, KafkaLibrary } from './client.ts';

/**
 * The Kafka client library, chosen by EDDY_KAFKA_CLIENT (kafkajs, confluent or platformatic) for the
 * A/B benchmarks; each is loaded only when chosen (the Confluent client is a native addon).
 */
export function kafkaLibrary(env: NodeJS.ProcessEnv = process.env): KafkaLibrary {
  const name = env.EDDY_KAFKA_CLIENT ?? 'kafkajs';
  if (name !== 'kafkajs' && name !== 'confluent' && name !== 'platformatic') {
    throw new Error(`EDDY_KAFKA_CLIENT must be kafkajs, confluent or platformatic, not ${name}`);
  }
  return name;
}

export async function createKafkaClient(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string, library = kafkaLibrary()): Promise<KafkaClient> {
  if (library === 'confluent') return (await import('./clients/confluent.ts')).confluentClient(config, clientId);
  if (library === 'platformatic') return (await import('./clients/platformatic.ts')).platformaticClient(config, clientId);
  return (await import('./clients/kafkajs.ts')).kafkajsClient(config, clientId);
}
