import type { Admin, KafkaClient } from './client.ts';
import type { EddyConfig } from '../common/config.ts';
import { DependencyUnavailableError, errorMessage } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { EventCodec } from './codec.ts';
import { createKafkaClient } from './kafka.ts';
import { EventProducer } from './producer.ts';
import { ConsumerRunner, type ConsumerRunnerOptions } from './consumer.ts';
import { ensureTopics, TopicNames } from './topics.ts';
import { claimInstanceId } from './instance.ts';

/**
 * Everything a component needs to talk to Kafka, connected and ready: topics exist, schemas are
 * registered, the producer is connected. Components create consumers from it and close it once.
 */
export interface Streams {
  config: EddyConfig;
  kafka: KafkaClient;
  codec: EventCodec;
  topics: TopicNames;
  producer: EventProducer;
  logger: Logger;
  consumer(options: ConsumerRunnerOptions): ConsumerRunner;
  withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}

export async function connectStreams(config: EddyConfig, clientId: string, opts: { ensureTopics?: boolean } = {}): Promise<Streams> {
  const logger = createLogger(clientId, config.logLevel);
  const kafka = createKafkaClient(config, clientId);
  const topics = new TopicNames(config.topicPrefix);
  const withAdmin = async <T>(fn: (admin: Admin) => Promise<T>): Promise<T> => {
    let admin;
    try {
      admin = await kafka.admin();
    } catch (err) {
      throw new DependencyUnavailableError('kafka', `Kafka at ${config.kafkaBrokers.join(',')} is not reachable (${errorMessage(err)}); is it running? try 'eddy stack status'`, err);
    }
    try {
      return await fn(admin);
    } finally {
      await admin.close();
    }
  };
  const codec = await EventCodec.connect({ url: config.schemaRegistryUrl, logger });
  if (opts.ensureTopics ?? true) {
    const { created } = await withAdmin((admin) => ensureTopics(admin, topics, { partitions: config.partitions, replicationFactor: config.replicationFactor }));
    if (created.length > 0) logger.info({ created }, 'created topics');
  }
  const producer = new EventProducer(kafka, codec, topics);
  await producer.connect();
  const runners: ConsumerRunner[] = [];
  return {
    config, kafka, codec, topics, producer, logger, withAdmin,
    consumer(options) {
      // Recovery in seconds (docs/reliability.md): a short session with frequent heartbeats, and a
      // stable instance id so a restarted process takes its partitions back without waiting for it.
      const claim = options.groupInstanceId === undefined ? claimInstanceId(config.kafka.instanceId, topics.group(options.group)) : undefined;
      const runner = new ConsumerRunner(kafka, codec, producer, topics, {
        logger, sessionTimeoutMs: config.kafka.sessionTimeoutMs, heartbeatIntervalMs: config.kafka.heartbeatIntervalMs,
        ...options,
        fetch: { minBytes: config.kafka.fetchMinBytes, maxWaitMs: config.kafka.fetchMaxWaitMs, ...options.fetch },
        groupInstanceId: options.groupInstanceId ?? claim?.id,
        onStopped: () => {
          claim?.release();
          options.onStopped?.();
        },
      });
      runners.push(runner);
      return runner;
    },
    async close() {
      await Promise.allSettled(runners.map((r) => r.stop()));
      await producer.disconnect();
    },
  };
}
