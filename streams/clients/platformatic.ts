import type { CommitOptions, CommitOptionsPartition, ConsumeOptions, GroupPartitionsAssigner, MessageToProduce } from '@platformatic/kafka';
import { lazyLibraryValidators } from './lazy-validators.ts';
import type { EddyConfig } from '../../common/config.ts';
import { EddyError, errorMessage } from '../../common/errors.ts';
import { createLogger } from '../../common/log.ts';
import { coPartitionedAssignment } from '../assigner.ts';
import type { ConnectedAdmin, ConsumerDriver, ConsumerDriverOptions, FetchedBatch, KafkaClient, ProducerDriver, RawMessage } from '../client.ts';

// The library is imported here, after its option validators were made to compile on first use:
// a static import would evaluate it before any code of this module (or, bundled, of its chunk) ran.
lazyLibraryValidators();
const { Admin: PlatformaticAdmin, compatibilityPartitioner, Consumer, consumeOptionsProperties, MessagesStreamFallbackModes, MessagesStreamModes, ProduceAcks, Producer, stringSerializer } = await import('@platformatic/kafka');

/**
 * The consumer reads record batches through a patch of the library (patches/, applied by
 * patch-package when `npm ci` runs; docs/streams.md, "The library patch"). Without it the
 * library refuses the `batches` option with a schema error; this says what to do instead.
 */
function assertPatched(): void {
  if (!Object.hasOwn(consumeOptionsProperties, 'batches')) {
    throw new EddyError('KAFKA_CLIENT_UNPATCHED', '@platformatic/kafka is installed without Eddy\'s patch (patches/@platformatic+kafka+*.patch): run `npm ci` (its postinstall applies it)');
  }
}

/**
 * Eddy's Kafka seam (streams/client.ts) on @platformatic/kafka 1.35: admin, an idempotent producer
 * (one send in flight, Java-compatible partitioner) and a group consumer whose message stream is
 * regrouped into per-partition batches for the runner. docs/streams.md, "The Kafka client", says
 * why each setting is what it is.
 */

/**
 * Most bytes one fetch takes from one partition (Kafka's own default, the Java client's
 * max.partition.fetch.bytes). The library's default is its whole fetch size (10 MiB): against a
 * backlog, one fetch then brought the first partition's whole backlog and little of the others, and
 * a runner allowed several partitions at once worked on one, 2,000 records at a time. A record
 * batch larger than this still arrives whole (Kafka always returns a partition's first batch).
 */
const FETCH_MAX_BYTES_PER_PARTITION = 1_048_576;

/** {@link coPartitionedAssignment} as this library's assignor (it runs on the group leader). */
const coPartitioned: GroupPartitionsAssigner = (_current, members, topics, metadata) => {
  const subscriptions = [...members.values()].map((m) => ({ memberId: m.memberId, topics: m.topics ?? [...topics] }));
  const byMember = coPartitionedAssignment(subscriptions, topics, (t) => {
    const count = metadata.topics.get(t)?.partitionsCount ?? 0;
    return Array.from({ length: count }, (_, i) => i);
  });
  return [...byMember].map(([memberId, owned]) => ({
    memberId,
    assignments: new Map(Object.entries(owned).map(([topic, partitions]) => [topic, { topic, partitions }])),
  }));
};

/**
 * The offsets committed by the batches of many partitions, in one OffsetCommit request. A record
 * batch's `commit()` asks the consumer for a commit of its own partition, a request each: at low
 * rates, where a fetch brings a few records for each of a dozen partitions, that was a commit
 * request (and a write to `__consumer_offsets`) per partition per fetch. Here every commit asked
 * for in one event-loop turn, or while the previous request is on its way, goes in the next
 * request (the newest offset per partition), and each caller learns that request's outcome. A
 * caller waits at most for the request in flight before its own is sent.
 *
 * A record batch's `commit()` (the stream's, bound to its partition) calls the consumer's public
 * `commit(options, callback)`; this replaces that method on the one instance. Were a later version of the library to commit some
 * other way, its commits would simply go one by one again.
 */
function coalesceCommits(consumer: { commit(options: CommitOptions, callback: (error: Error | null) => void): void }): void {
  const commitNow = consumer.commit.bind(consumer);
  let waiting = new Map<string, CommitOptionsPartition>();
  let callbacks: Array<(error: Error | null) => void> = [];
  let scheduled = false;
  let inFlight = false;
  const send = (): void => {
    scheduled = false;
    if (inFlight || callbacks.length === 0) return;
    const offsets = [...waiting.values()];
    const answer = callbacks;
    waiting = new Map();
    callbacks = [];
    inFlight = true;
    commitNow({ offsets }, (error) => {
      inFlight = false;
      for (const cb of answer) cb(error ?? null);
      send();
    });
  };
  const coalesced = (options: CommitOptions, callback?: (error: Error | null) => void): Promise<void> | void => {
    for (const o of options.offsets) {
      const key = `${o.topic}:${o.partition}`;
      const before = waiting.get(key);
      if (!before || before.offset < o.offset) waiting.set(key, o);
    }
    if (!scheduled) {
      scheduled = true;
      setImmediate(send);
    }
    if (callback) {
      callbacks.push(callback);
      return;
    }
    return new Promise<void>((resolve, reject) => callbacks.push((e) => (e ? reject(e) : resolve())));
  };
  (consumer as { commit: typeof coalesced }).commit = coalesced;
}

export function platformaticClient(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string): KafkaClient {
  const logger = createLogger('kafka', config.logLevel === 'info' ? 'warn' : config.logLevel);
  const base = { clientId, bootstrapBrokers: config.kafkaBrokers, timeout: 10_000, retries: 8, retryDelay: 200, autocreateTopics: false };

  return {
    async admin(): Promise<ConnectedAdmin> {
      const admin = new PlatformaticAdmin(base);
      // The library connects on first use; asking for metadata now makes an unreachable cluster
      // fail here (after its retries), where Eddy reports it as a dependency that is down.
      try {
        await admin.metadata({ topics: [] });
      } catch (err) {
        await admin.close().catch(() => undefined);
        throw err;
      }
      const partitionsOf = async (topic: string): Promise<number[]> => {
        const meta = await admin.metadata({ topics: [topic], forceUpdate: true });
        const count = meta.topics.get(topic)?.partitionsCount ?? 0;
        return Array.from({ length: count }, (_, i) => i);
      };
      return {
        listTopics: () => admin.listTopics(),
        async createTopics(topics) {
          // One request per topic (partitions, replicas and configs are per request in this API), in parallel.
          await Promise.all(topics.map(async (t) => {
            try {
              await admin.createTopics({
                topics: [t.topic], partitions: t.numPartitions, replicas: t.replicationFactor,
                configs: Object.entries(t.configs ?? {}).map(([name, value]) => ({ name, value })),
              });
            } catch (err) {
              if (!/already exists/i.test(JSON.stringify(err, Object.getOwnPropertyNames(err as object)) + errorMessage(err))) throw err;
            }
          }));
        },
        deleteTopics: (topics) => admin.deleteTopics({ topics }),
        async partitionLeaders(topic) {
          try {
            const meta = await admin.metadata({ topics: [topic], forceUpdate: true });
            return (meta.topics.get(topic)?.partitions ?? []).map((p, partition) => ({ partition, leader: p.leader }));
          } catch {
            return [];
          }
        },
        async fetchTopicOffsets(topic) {
          const partitions = await partitionsOf(topic);
          const ask = (timestamp: bigint) => admin.listOffsets({ topics: [{ name: topic, partitions: partitions.map((partitionIndex) => ({ partitionIndex, timestamp })) }] });
          // -1: the end offset; -2: the first retained offset (ListOffsets' LATEST and EARLIEST).
          const [high, low] = await Promise.all([ask(-1n), ask(-2n)]);
          const lows = new Map((low[0]?.partitions ?? []).map((p) => [p.partitionIndex, p.offset]));
          return (high[0]?.partitions ?? []).map((p) => ({ partition: p.partitionIndex, high: p.offset.toString(), low: (lows.get(p.partitionIndex) ?? 0n).toString() }))
            .sort((a, b) => a.partition - b.partition);
        },
        async fetchOffsets({ groupId, topics }) {
          const wanted = await Promise.all(topics.map(async (name) => ({ name, partitionIndexes: await partitionsOf(name) })));
          const [group] = await admin.listConsumerGroupOffsets({ groups: [{ groupId, topics: wanted }] });
          return (group?.topics ?? []).map((t) => ({
            topic: t.name,
            partitions: t.partitions.map((p) => ({ partition: p.partitionIndex, offset: p.committedOffset.toString() })),
          }));
        },
        async listGroups() {
          return [...(await admin.listGroups()).keys()];
        },
        async describeGroups(groupIds) {
          const groups = await admin.describeGroups({ groups: groupIds });
          return [...groups.values()].map((g) => ({
            groupId: g.id,
            state: g.state.split('_').map((w) => w[0] + w.slice(1).toLowerCase()).join(''),
            members: [...g.members.values()].map((m) => ({ memberId: m.id, clientId: m.clientId })),
          }));
        },
        async deleteGroups(groupIds) {
          try {
            await admin.deleteGroups({ groups: groupIds });
          } catch (err) {
            if (!/GROUP_ID_NOT_FOUND|does not exist|not found/i.test(JSON.stringify(err, Object.getOwnPropertyNames(err as object)))) throw err;
          }
        },
        close: () => admin.close(),
      };
    },

    producer(): ProducerDriver {
      const create = () => new Producer<Buffer, Buffer, string, string>({
        ...base, idempotent: true, acks: ProduceAcks.ALL,
        // The Java client's partitioner (murmur2 & 0x7fffffff), as kafkajs and librdkafka's murmur2:
        // the library's default (murmur2 >>> 0) would move some clients to other partitions.
        partitioner: compatibilityPartitioner,
        serializers: { headerKey: stringSerializer, headerValue: stringSerializer },
      });
      let producer = create();
      let sending: Promise<void> = Promise.resolve();
      /**
       * After a failed send, a new producer (a new producer id). The library advances a partition's
       * sequence number only when the broker answers; a batch the broker wrote but whose answer was
       * lost (the broker killed in between) leaves the sequence where it was, the next batch is sent
       * with the same sequence numbers, and the broker, having that sequence in its log, answers it
       * as a duplicate without writing it: acknowledged and lost (bench:chaos, 15:13 run: 4 events).
       * A new producer id starts its sequences afresh, so nothing can be taken for a duplicate.
       */
      const replace = () => {
        const old = producer;
        producer = create();
        old.close().catch(() => undefined);
      };
      return {
        // Connections open on the first send.
        connect: async () => undefined,
        disconnect: () => producer.close(),
        async send(batch) {
          const messages: Array<MessageToProduce<Buffer, Buffer, string, string>> = [];
          for (const t of batch) {
            for (const m of t.messages) {
              messages.push({
                topic: t.topic,
                key: m.key === null ? undefined : Buffer.isBuffer(m.key) ? m.key : Buffer.from(m.key),
                value: m.value === null ? undefined : Buffer.isBuffer(m.value) ? m.value : Buffer.from(m.value),
                headers: m.headers,
              });
            }
          }
          // One send at a time: with the idempotent producer, sends in flight together lost
          // messages without an error (1.35.0: 24,000 of 30,000 written with 4 sends of 2,000 in
          // flight; all 30,000 one at a time or without idempotence).
          const sent = sending.then(() => producer.send({ messages }).catch((err: unknown) => {
            replace();
            throw err;
          }));
          sending = sent.then(() => undefined, () => undefined);
          await sent;
        },
      };
    },

    consumer(options: ConsumerDriverOptions): ConsumerDriver {
      assertPatched();
      const consumer = new Consumer({
        ...base,
        groupId: options.groupId,
        sessionTimeout: options.sessionTimeoutMs,
        heartbeatInterval: options.heartbeatIntervalMs,
        ...(options.groupInstanceId ? { groupInstanceId: options.groupInstanceId } : {}),
        partitionAssigner: coPartitioned,
        // The protocol name kafkajs members of Eddy's groups advertise first, so a group of old
        // (kafkajs) and new members forms during a rolling upgrade; whichever leads assigns co-partitioned.
        protocols: [{ name: 'EddyCoPartitioned', version: 0 }],
        autocommit: false,
        minBytes: options.fetchMinBytes,
        maxWaitTime: options.fetchMaxWaitMs,
        maxBytesPerPartition: FETCH_MAX_BYTES_PER_PARTITION,
      });
      coalesceCommits(consumer);
      const assignmentListeners: Array<(a: Record<string, number[]>) => void> = [];
      const crashListeners: Array<(err: Error) => void> = [];
      let owned = new Set<string>();
      /**
       * The library hands over one Kafka record batch at a time (with `batches: true`; a fetch
       * brings several per partition); Eddy's runner works on one partition's batch of up to
       * `maxBatchSize` messages. Messages queue per partition; one batch per partition is in hand at a time (order),
       * up to `partitionsConsumedConcurrently` partitions at once, the partitions in turn (the
       * longest unserved first), and the stream pauses while too many wait.
       */
      interface PartitionQueue {
        key: string; topic: string; partition: number; busy: boolean;
        messages: RawMessage[];
        /** For each message, the commit of the record batch it came in (the same function for a whole batch). */
        commits: CommitBatch[];
      }
      const queues = new Map<string, PartitionQueue>();
      const MAX_WAITING = options.maxBatchSize * 4;
      let waiting = 0;
      /** What waits in the queues is dropped: a new stream reads every owned partition from its committed offset (the batches in hand finish). */
      const dropQueued = () => {
        for (const q of queues.values()) empty(q);
        waiting = 0;
      };
      /** Drops what waits in one queue (its messages and their commits go together). */
      const empty = (q: PartitionQueue) => {
        q.messages = [];
        q.commits = [];
      };
      /** Between a rebalance and the join that ends it, who owns what is not known yet. */
      let rebalancing = false;
      consumer.on('consumer:group:rebalance', () => {
        rebalancing = true;
        owned = new Set();
        dropQueued();
        if (running && stream?.isPaused()) stream.resume();
        for (const l of assignmentListeners) l({});
      });
      consumer.on('consumer:group:join', (e) => {
        const a: Record<string, number[]> = {};
        for (const { topic, partitions } of e.assignments ?? []) a[topic] = [...partitions].sort((x, y) => x - y);
        owned = new Set(Object.entries(a).flatMap(([t, ps]) => ps.map((p) => `${t}:${p}`)));
        rebalancing = false;
        // A rejoin (not the first join, which the first stream follows): read again from the commits.
        if (following) replaceStream();
        for (const l of assignmentListeners) l(a);
      });

      const inHand = new Set<Promise<void>>();
      let running = false;
      type Stream = Awaited<ReturnType<typeof consumer.consume>>;
      /** The stream whose messages are queued; undefined while a replacement is being opened. */
      let stream: Stream | undefined;
      /**
       * The newest stream opened and not yet closed (the followed one, or one opened for a rejoin
       * that a later rejoin superseded). The library tracks a topic while any stream of it is open
       * and joins the group again when a stream opens on an untracked topic, so one stays open
       * until the next is: a moment with none made every replacement a rejoin, and every rejoin a
       * replacement (bench:chaos, a rebalance a second for minutes, nothing consumed).
       */
      let standing: Stream | undefined;
      let eachBatch: ((batch: FetchedBatch) => Promise<void>) | undefined;
      const consumeOptions = {
        topics: options.topics,
        mode: MessagesStreamModes.COMMITTED,
        fallbackMode: options.fromBeginning ? MessagesStreamFallbackModes.EARLIEST : MessagesStreamFallbackModes.LATEST,
        autocommit: false,
        minBytes: options.fetchMinBytes,
        maxWaitTime: options.fetchMaxWaitMs,
        // Record batches instead of messages (patches/: the library's per-message objects were nearly half a consumer's CPU).
        batches: true,
      } as ConsumeOptions<Buffer, Buffer, Buffer, Buffer>;
      /** Queues what `s` delivers while it is the current stream; a replaced one's late messages are ignored. */
      const follow = (s: Stream): void => {
        stream = s;
        s.on('data', (chunk) => {
          if (s !== stream) return;
          const b = chunk as unknown as RecordBatchChunk; // `batches: true`: record batches, not messages
          const key = `${b.topic}:${b.partition}`;
          let q = queues.get(key);
          if (!q) queues.set(key, (q = { key, topic: b.topic, partition: b.partition, messages: [], commits: [], busy: false }));
          appendRecords(q.messages, q.commits, b);
          waiting += b.records.length;
          // Too many waiting: stop the stream (it stops fetching) until batches finish.
          if (waiting >= MAX_WAITING) s.pause();
          dispatchSoon();
        });
        s.on('error', (err: Error) => {
          if (s !== stream) return;
          logger.error({ err: errorMessage(err) }, 'consumer stream failed');
          if (running) for (const l of crashListeners) l(err);
        });
      };
      /**
       * The library delivers a fetch's record batches one by one, in one synchronous loop:
       * dispatching at the first would hand a partition's first batch to the runner alone and the
       * rest in a second call (two handler calls and two commits per partition per fetch). Once the
       * loop is over, each partition's messages of the fetch go in one call.
       */
      let dispatchQueued = false;
      const dispatchSoon = (): void => {
        if (dispatchQueued) return;
        dispatchQueued = true;
        queueMicrotask(() => {
          dispatchQueued = false;
          dispatch();
        });
      };
      const dispatch = (): void => {
        for (const q of queues.values()) {
          if (!running || inHand.size >= options.partitionsConsumedConcurrently) return;
          if (q.busy || q.messages.length === 0) continue;
          const key = q.key;
          if (!owned.has(key)) {
            // Taken away by a rebalance: its new owner reads these from the committed offset.
            waiting -= q.messages.length;
            empty(q);
            continue;
          }
          const messages = q.messages.splice(0, options.maxBatchSize);
          const commits = q.commits.splice(0, messages.length);
          waiting -= messages.length;
          q.busy = true;
          // To the back of the line: with fewer batches in hand than partitions owned (the trainer
          // works on one), the partition served first would otherwise be served again whenever it
          // has records waiting, and a busy one starve the rest (bench:chaos: a trainer took the
          // partitions of a dead one and started their requests only after three more of its own).
          queues.delete(key);
          queues.set(key, q);
          const fetched: FetchedBatch = {
            topic: q.topic, partition: q.partition, messages,
            isRunning: () => running && owned.has(key),
            isAssigned: () => rebalancing || owned.has(key),
            heartbeat: async () => undefined, // the library heartbeats on its own timer
            commit: async (next) => {
              // The commit of the record batch that holds the message before `next` (its
              // partition's leader epoch), or of the last message's (the runner commits past it).
              let commit = commits[commits.length - 1]!;
              const lastDone = String(BigInt(next) - 1n);
              for (let i = messages.length - 1; i >= 0; i--) {
                if (messages[i]!.offset === lastDone) {
                  commit = commits[i]!;
                  break;
                }
              }
              try {
                await new Promise<void>((resolve, reject) => commit(BigInt(next), (err) => (err ? reject(err) : resolve())));
              } catch (err) {
                if (hasApiId(err, 'FENCED_INSTANCE_ID')) throw new EddyError('KAFKA_FENCED', `another member took this member's instance id: ${errorMessage(err)}`, { cause: err });
                throw err;
              }
            },
          };
          const work: Promise<void> = eachBatch!(fetched).finally(() => {
            q.busy = false;
            inHand.delete(work);
            if (waiting < MAX_WAITING && stream?.isPaused() && running) stream.resume();
            dispatch();
          });
          inHand.add(work);
        }
      };

      /**
       * After a rejoin, a new stream: it reads every partition this member owns from the group's
       * committed offset (the earliest or latest offset where there is none). The queues of the
       * old one are dropped with it. Keeping the old stream lost records (bench:chaos, 56 events
       * committed with no effect): the library moves its position back to the committed offset
       * only where a commit exists, and a fetch sent before the rebalance that answers after it
       * moves the position forward again, past what the queues had held.
       */
      let replacing: Promise<void> = Promise.resolve();
      let following = false;
      let wanted = 0;
      const replaceStream = (): void => {
        const generation = ++wanted;
        // From now on nothing the old stream delivers is queued.
        stream = undefined;
        dropQueued();
        replacing = replacing.then(async () => {
          // A later rejoin asked for its own stream meanwhile: that one is opened instead, and the
          // standing stream stays open until then.
          if (!running || generation !== wanted) return;
          try {
            const fresh = await consumer.consume(consumeOptions);
            const previous = standing;
            standing = fresh;
            await previous?.close().catch(() => undefined);
            // Superseded while it opened: it stands (unfollowed, so it does not fetch) until the next one opens.
            if (running && generation === wanted) follow(fresh);
          } catch (err) {
            if (running) for (const l of crashListeners) l(err instanceof Error ? err : new Error(String(err)));
          }
        });
      };

      return {
        onAssignment: (l) => assignmentListeners.push(l),
        onCrash: (l) => crashListeners.push(l),
        async start(handler) {
          eachBatch = handler;
          running = true;
          standing = await consumer.consume(consumeOptions);
          follow(standing);
          following = true;
        },
        async stop() {
          running = false;
          stream?.pause();
          await Promise.allSettled([...inHand]);
          await replacing;
          await standing?.close().catch(() => undefined);
          await consumer.close();
        },
      };
    },
  };
}

/** Commits `offset` (the next to read) for a record batch's partition, with the leader epoch it was fetched at. */
type CommitBatch = (offset: bigint, callback: (error: Error | null) => void) => void;

/**
 * One record batch as the patched library's message stream delivers it with `batches: true`
 * (patches/@platformatic+kafka+1.35.0.patch, docs/streams.md): the parsed records of one Kafka
 * record batch of one partition, those before the requested offset left out.
 */
interface RecordBatchChunk {
  topic: string;
  partition: number;
  firstOffset: bigint;
  firstTimestamp: bigint;
  records: ReadonlyArray<{ offsetDelta: number; timestampDelta: bigint; key: Buffer | null; value: Buffer | null }>;
  commit: CommitBatch;
}

/**
 * Appends a record batch's records as RawMessages (offsets as decimal strings, timestamps in ms)
 * and, for each, the batch's commit. Offsets and timestamps are added as numbers where they are
 * exact (below 2^53: any offset a partition reaches in practice), not as BigInts per record.
 */
export function appendRecords(messages: RawMessage[], commits: CommitBatch[], b: RecordBatchChunk): void {
  const { records } = b;
  const exact = b.firstOffset <= MAX_EXACT && b.firstOffset >= 0n;
  const base = Number(b.firstOffset);
  const time = Number(b.firstTimestamp);
  for (let i = 0; i < records.length; i++) {
    const r = records[i]!;
    messages.push({
      key: r.key ?? null,
      value: r.value ?? null,
      offset: exact ? String(base + r.offsetDelta) : (b.firstOffset + BigInt(r.offsetDelta)).toString(),
      timestamp: time + Number(r.timestampDelta),
    });
    commits.push(b.commit);
  }
}
const MAX_EXACT = BigInt(Number.MAX_SAFE_INTEGER) - 2n ** 31n;

/** Whether a @platformatic/kafka error, or one it wraps (MultipleErrors.errors, cause), carries this Kafka error id. */
function hasApiId(err: unknown, id: string, depth = 0): boolean {
  if (!err || typeof err !== 'object' || depth > 5) return false;
  const e = err as { apiId?: unknown; errors?: unknown; cause?: unknown };
  if (e.apiId === id) return true;
  if (Array.isArray(e.errors) && e.errors.some((x) => hasApiId(x, id, depth + 1))) return true;
  return hasApiId(e.cause, id, depth + 1);
}
