import { AssignerProtocol, CompressionTypes, Kafka, logLevel, PartitionAssigners, type LogEntry, type PartitionAssigner } from 'kafkajs';
import type { EddyConfig } from '../../common/config.ts';
import { createLogger, type Logger } from '../../common/log.ts';
import { coPartitionedAssignment } from '../assigner.ts';
import type { ConnectedAdmin, ConsumerDriver, ConsumerDriverOptions, FetchedBatch, KafkaClient, ProducerDriver } from '../client.ts';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** kafkajs logs through pino so every line is structured like the rest of Eddy's. */
function pinoLogCreator(logger: Logger) {
  return () => ({ namespace, level, log }: LogEntry) => {
    const { message, ...extra } = log;
    if (message.startsWith('Limiting retries for the idempotent producer')) return;
    const retried = namespace === 'Connection' || 'retryCount' in extra;
    const name = LEVELS[level] ?? 'info';
    logger[retried && name === 'error' ? 'warn' : name]({ kafkajs: namespace, ...extra }, message);
  };
}

/** kafkajs's custom assignor protocol around {@link coPartitionedAssignment}. */
const CoPartitionedAssigner: PartitionAssigner = ({ cluster }) => ({
  name: 'EddyCoPartitioned',
  version: 0,
  async assign({ members, topics }) {
    const subscriptions = members.map((m) => ({
      memberId: m.memberId,
      topics: AssignerProtocol.MemberMetadata.decode(m.memberMetadata)?.topics ?? topics,
    }));
    const assignment = coPartitionedAssignment(subscriptions, topics, (t) => cluster.findTopicPartitionMetadata(t).map((p) => p.partitionId));
    return [...assignment].map(([memberId, a]) => ({
      memberId,
      memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: a, userData: Buffer.alloc(0) }),
    }));
  },
  protocol({ topics }) {
    return { name: 'EddyCoPartitioned', metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
  },
});

export function kafkajsClient(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string): KafkaClient {
  const level = config.logLevel === 'debug' || config.logLevel === 'trace' ? 'debug' : config.logLevel === 'info' ? 'warn' : config.logLevel;
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  const kafka = new Kafka({
    clientId,
    brokers: config.kafkaBrokers,
    logLevel: logLevel.WARN,
    logCreator: pinoLogCreator(createLogger('kafkajs', level)),
    connectionTimeout: 3000,
    retry: { initialRetryTime: 200, retries: 8 },
  });

  return {
    library: 'kafkajs',
    async admin(): Promise<ConnectedAdmin> {
      const admin = kafka.admin();
      await admin.connect();
      return {
        listTopics: () => admin.listTopics(),
        async createTopics(topics) {
          await admin.createTopics({
            waitForLeaders: false,
            topics: topics.map((t) => ({
              topic: t.topic, numPartitions: t.numPartitions, replicationFactor: t.replicationFactor,
              configEntries: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
            })),
          });
        },
        deleteTopics: (topics) => admin.deleteTopics({ topics }),
        async partitionLeaders(topic) {
          const { topics } = await admin.fetchTopicMetadata({ topics: [topic] });
          return (topics[0]?.partitions ?? []).map((p) => ({ partition: p.partitionId, leader: p.leader }));
        },
        async fetchTopicOffsets(topic) {
          return (await admin.fetchTopicOffsets(topic)).map((o) => ({ partition: o.partition, low: o.low, high: o.high }));
        },
        async fetchOffsets({ groupId, topics }) {
          return (await admin.fetchOffsets({ groupId, topics })).map((t) => ({
            topic: t.topic, partitions: t.partitions.map((p) => ({ partition: p.partition, offset: p.offset })),
          }));
        },
        async listGroups() {
          return (await admin.listGroups()).groups.map((g) => g.groupId);
        },
        async describeGroups(groupIds) {
          const { groups } = await admin.describeGroups(groupIds);
          return groups.map((g) => ({ groupId: g.groupId, state: g.state, members: g.members.map((m) => ({ memberId: m.memberId, clientId: m.clientId })) }));
        },
        deleteGroups: async (groupIds) => {
          await admin.deleteGroups(groupIds);
        },
        close: () => admin.disconnect(),
      };
    },

    producer(): ProducerDriver {
      // kafkajs retries a failed Produce request whole (e.g. NOT_LEADER on one partition right after
      // topic creation), which duplicates the partitions that had succeeded: the idempotent producer's
      // sequence numbers let the broker drop those. Retries stay bounded so a dead cluster surfaces.
      const producer = kafka.producer({ allowAutoTopicCreation: false, idempotent: true, maxInFlightRequests: 5, retry: { retries: 10, initialRetryTime: 100 } });
      return {
        connect: () => producer.connect(),
        disconnect: () => producer.disconnect(),
        async send(batch) {
          await producer.sendBatch({ topicMessages: batch, acks: -1, compression: CompressionTypes.None });
        },
      };
    },

    consumer(options: ConsumerDriverOptions): ConsumerDriver {
      const consumer = kafka.consumer({
        groupId: options.groupId,
        allowAutoTopicCreation: false,
        sessionTimeout: options.sessionTimeoutMs,
        heartbeatInterval: options.heartbeatIntervalMs,
        maxWaitTimeInMs: 100,
        // Round-robin stays second so a group with an older member still forms during an upgrade.
        partitionAssigners: [CoPartitionedAssigner, PartitionAssigners.roundRobin],
      });
      const assignmentListeners: Array<(a: Record<string, number[]>) => void> = [];
      consumer.on(consumer.events.REBALANCING, () => {
        for (const l of assignmentListeners) l({});
      });
      consumer.on(consumer.events.GROUP_JOIN, (e) => {
        const a: Record<string, number[]> = {};
        for (const [topic, partitions] of Object.entries(e.payload.memberAssignment)) a[topic] = [...partitions];
        for (const l of assignmentListeners) l(a);
      });
      return {
        onAssignment: (l) => assignmentListeners.push(l),
        onCrash(listener) {
          consumer.on(consumer.events.CRASH, (e) => {
            if (!e.payload.restart) listener(e.payload.error);
          });
        },
        async start(eachBatch) {
          await consumer.connect();
          for (const topic of options.topics) await consumer.subscribe({ topic, fromBeginning: options.fromBeginning });
          await consumer.run({
            autoCommit: false,
            eachBatchAutoResolve: false,
            partitionsConsumedConcurrently: options.partitionsConsumedConcurrently,
            eachBatch: async (payload) => {
              const { batch } = payload;
              // kafkajs fetches whole record batches; slices keep to the runner's batch size.
              for (let start = 0; start < batch.messages.length; start += options.maxBatchSize) {
                if (!payload.isRunning() || payload.isStale()) return;
                const slice = batch.messages.slice(start, start + options.maxBatchSize);
                const fetched: FetchedBatch = {
                  topic: batch.topic,
                  partition: batch.partition,
                  messages: slice.map((m) => ({ key: m.key ?? null, value: m.value ?? null, offset: m.offset, timestamp: Number(m.timestamp) })),
                  isRunning: () => payload.isRunning() && !payload.isStale(),
                  heartbeat: () => payload.heartbeat(),
                  // Through the batch payload, not consumer.commitOffsets: the latter is a no-op once
                  // stop() began, and a graceful stop must commit the records it finished.
                  commit: async (next) => {
                    await payload.commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: next }] }] });
                    payload.resolveOffset((BigInt(next) - 1n).toString());
                  },
                };
                await eachBatch(fetched);
              }
            },
          });
        },
        async stop() {
          await consumer.stop();
          await consumer.disconnect();
        },
      };
    },
  };
}
