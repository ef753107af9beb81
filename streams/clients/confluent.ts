import { KafkaJS } from '@confluentinc/kafka-javascript';
import type { EddyConfig } from '../../common/config.ts';
import { createLogger, type Logger } from '../../common/log.ts';
import type { ConnectedAdmin, ConsumerDriver, ConsumerDriverOptions, FetchedBatch, GroupDescription, KafkaClient, ProducerDriver } from '../client.ts';

const { Kafka, logLevel, CompressionTypes, PartitionAssigners } = KafkaJS;

/** librdkafka's rebalance event codes (rd_kafka_resp_err_t). */
const ASSIGN_PARTITIONS = -175;
const REVOKE_PARTITIONS = -174;
/** librdkafka's "unknown topic or partition" / "group id not found" answers to admin calls. */
const UNKNOWN_TOPIC_OR_PART = 3;
const GROUP_ID_NOT_FOUND = 69;
const TOPIC_ALREADY_EXISTS = 36;

const GROUP_STATES = ['Unknown', 'PreparingRebalance', 'CompletingRebalance', 'Stable', 'Dead', 'Empty'];

/** The KafkaJS-compatible API logs through this: structured, into pino. */
function kafkaLogger(logger: Logger): KafkaJS.Logger {
  const line = (level: 'error' | 'warn' | 'info' | 'debug') => (message: string, extra?: object) => logger[level]({ librdkafka: extra }, message);
  const self: KafkaJS.Logger = {
    error: line('error'), warn: line('warn'), info: line('info'), debug: line('debug'),
    namespace: () => self,
    setLogLevel: () => undefined,
  };
  return self;
}

function errorCode(err: unknown): number | undefined {
  return typeof err === 'object' && err !== null ? (err as { code?: number }).code : undefined;
}

export function confluentClient(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string): KafkaClient {
  // librdkafka logs every group join/leave at INFO; only warnings and errors reach our log by default.
  const level = config.logLevel === 'debug' || config.logLevel === 'trace' ? 'debug' : config.logLevel === 'info' ? 'warn' : config.logLevel;
  const logger = createLogger('kafka', level);
  const kafka = new Kafka({
    kafkaJS: {
      clientId,
      brokers: config.kafkaBrokers,
      logLevel: level === 'debug' ? logLevel.DEBUG : logLevel.WARN,
      logger: kafkaLogger(logger),
      connectionTimeout: 3000,
    },
  });

  return {
    library: 'confluent',
    async admin(): Promise<ConnectedAdmin> {
      const admin = kafka.admin();
      await admin.connect();
      return {
        listTopics: () => admin.listTopics(),
        async createTopics(topics) {
          try {
            await admin.createTopics({
              topics: topics.map((t) => ({
                topic: t.topic, numPartitions: t.numPartitions, replicationFactor: t.replicationFactor,
                configEntries: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
              })),
            });
          } catch (err) {
            if (errorCode(err) !== TOPIC_ALREADY_EXISTS) throw err;
          }
        },
        deleteTopics: (topics) => admin.deleteTopics({ topics }),
        async partitionLeaders(topic) {
          try {
            const [meta] = await admin.fetchTopicMetadata({ topics: [topic] });
            return (meta?.partitions ?? []).map((p) => ({ partition: p.partitionId, leader: p.leader }));
          } catch (err) {
            if (errorCode(err) === UNKNOWN_TOPIC_OR_PART) return [];
            throw err;
          }
        },
        async fetchTopicOffsets(topic) {
          return (await admin.fetchTopicOffsets(topic)).map((o) => ({ partition: o.partition, low: o.low, high: o.high }));
        },
        async fetchOffsets({ groupId, topics }) {
          // Partitions (or whole topics) where the group never committed are left out of this
          // client's answer; Eddy's Admin lists every partition, with -1 for those.
          const [answer, meta] = await Promise.all([admin.fetchOffsets({ groupId, topics }), admin.fetchTopicMetadata({ topics })]);
          const committed = new Map(answer.flatMap((t) => t.partitions.map((p) => [`${t.topic}:${p.partition}`, p.offset])));
          return meta.map((t) => ({
            topic: t.name,
            partitions: t.partitions.map((p) => ({ partition: p.partitionId, offset: committed.get(`${t.name}:${p.partitionId}`) ?? '-1' })),
          }));
        },
        async listGroups() {
          return (await admin.listGroups()).groups.map((g) => g.groupId);
        },
        async describeGroups(groupIds) {
          const { groups } = await admin.describeGroups(groupIds);
          return groups.map((g): GroupDescription => ({
            groupId: g.groupId,
            state: GROUP_STATES[g.state] ?? 'Unknown',
            members: g.members.map((m) => ({ memberId: m.memberId, clientId: m.clientId })),
          }));
        },
        async deleteGroups(groupIds) {
          const results = await admin.deleteGroups(groupIds);
          const failed = results.find((r) => r.error && r.errorCode !== GROUP_ID_NOT_FOUND);
          if (failed?.error) throw failed.error;
        },
        close: () => admin.disconnect(),
      };
    },

    producer(): ProducerDriver {
      // librdkafka batches per partition (linger 5 ms), retries inside the idempotent producer
      // (sequence numbers: no duplicates, order kept) and fails a message after message.timeout.ms,
      // so a dead cluster surfaces as an error instead of an endless wait.
      const producer = kafka.producer({
        'linger.ms': 5,
        'message.timeout.ms': 30_000,
        kafkaJS: { idempotent: true, acks: -1, compression: CompressionTypes.None, allowAutoTopicCreation: false, maxInFlightRequests: 5 },
      });
      return {
        connect: () => producer.connect(),
        disconnect: () => producer.disconnect(),
        async send(batch) {
          await Promise.all(batch.map((t) => producer.send({ topic: t.topic, messages: t.messages })));
        },
      };
    },

    consumer(options: ConsumerDriverOptions): ConsumerDriver {
      const assignmentListeners: Array<(a: Record<string, number[]>) => void> = [];
      const crashListeners: Array<(err: Error) => void> = [];
      const consumer = kafka.consumer({
        kafkaJS: {
          groupId: options.groupId,
          fromBeginning: options.fromBeginning,
          autoCommit: false,
          allowAutoTopicCreation: false,
          sessionTimeout: options.sessionTimeoutMs,
          heartbeatInterval: options.heartbeatIntervalMs,
          maxWaitTimeInMs: 100,
          // librdkafka's range assignor gives partition p of every topic to the same member when the
          // topics have equal partition counts (Eddy's do): co-partitioned, see streams/assigner.ts.
          // Custom assignors are not supported by this client.
          partitionAssigners: [PartitionAssigners.range],
        },
        // The KafkaJS-compatible API hands at most 32 messages to eachBatch unless told otherwise.
        'js.consumer.max.batch.size': options.maxBatchSize,
        ...(options.groupInstanceId ? { 'group.instance.id': options.groupInstanceId } : {}),
        rebalance_cb: (err: { code: number }, assignment: Array<{ topic: string; partition: number }>) => {
          const owned: Record<string, number[]> = {};
          if (err.code === ASSIGN_PARTITIONS) {
            for (const { topic, partition } of assignment) (owned[topic] ??= []).push(partition);
            for (const list of Object.values(owned)) list.sort((a, b) => a - b);
          } else if (err.code !== REVOKE_PARTITIONS) return;
          for (const l of assignmentListeners) l(owned);
        },
      });
      let running = false;
      const inHand = new Set<Promise<void>>();
      return {
        onAssignment: (l) => assignmentListeners.push(l),
        onCrash: (l) => crashListeners.push(l),
        async start(eachBatch) {
          await consumer.connect();
          await consumer.subscribe({ topics: options.topics });
          running = true;
          await consumer.run({
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: options.partitionsConsumedConcurrently,
            eachBatch: async (payload) => {
              // Fetched after stop() began: left unresolved and uncommitted, read again after a restart.
              if (!running) return;
              const { batch } = payload;
              const fetched: FetchedBatch = {
                topic: batch.topic,
                partition: batch.partition,
                messages: batch.messages.map((m) => ({ key: m.key ?? null, value: m.value ?? null, offset: m.offset, timestamp: Number(m.timestamp) })),
                isRunning: () => running && payload.isRunning() && !payload.isStale(),
                // librdkafka heartbeats from its own thread.
                heartbeat: async () => undefined,
                commit: async (next) => {
                  // Resolving tells the client these are done (it would seek back to unresolved ones).
                  payload.resolveOffset((BigInt(next) - 1n).toString());
                  await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: next }]);
                },
              };
              const work = eachBatch(fetched);
              inHand.add(work);
              try {
                await work;
              } finally {
                inHand.delete(work);
              }
            },
          });
        },
        async stop() {
          running = false;
          // Commits are refused once disconnect() begins, so the batches in hand finish (and commit)
          // first; then the group is left.
          await Promise.allSettled([...inHand]);
          await consumer.disconnect();
        },
      };
    },
  };
}
