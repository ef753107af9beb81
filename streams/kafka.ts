import type { EddyConfig } from '../common/config.ts';
import type { KafkaClient } from './client.ts';
import { platformaticClient } from './clients/platformatic.ts';

/**
 * The Kafka client library behind streams/client.ts: @platformatic/kafka (pure JavaScript), chosen
 * over kafkajs and @confluentinc/kafka-javascript by the A/B in docs/benchmarks/streams.md.
 */
export function createKafkaClient(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string): KafkaClient {
  return platformaticClient(config, clientId);
}
