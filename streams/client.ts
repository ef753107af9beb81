/**
 * The seam between Eddy and a Kafka client library. Everything outside `streams/` sees only these
 * types: Eddy's own small Admin, a producer that sends already-encoded messages, and a group
 * consumer that hands the runner one partition's batch at a time. The client library implements
 * them in `streams/clients/` (today @platformatic/kafka; kafkajs and the Confluent client were
 * implemented too for the A/B, see git history and docs/benchmarks/streams.md).
 */

/** A message as fetched: bytes, with its offset (a decimal string: offsets are 64-bit). */
export interface RawMessage {
  key: Buffer | null;
  value: Buffer | null;
  offset: string;
  /** Broker timestamp, ms since the epoch. */
  timestamp: number;
}

/** A message to produce (already encoded). */
export interface OutgoingMessage {
  key: string | Buffer | null;
  value: Buffer | string | null;
  headers?: Record<string, string>;
}

export interface TopicMessages {
  topic: string;
  messages: OutgoingMessage[];
}

export interface NewTopic {
  topic: string;
  numPartitions: number;
  replicationFactor: number;
  configs?: Record<string, string>;
}

export interface PartitionOffsets {
  partition: number;
  /** First retained offset. */
  low: string;
  /** End offset: the offset the next message will get. */
  high: string;
}

export interface GroupOffsets {
  topic: string;
  /** `offset` is the next offset to read, or '-1' when the group never committed there. */
  partitions: Array<{ partition: number; offset: string }>;
}

/** Consumer group states as Kafka names them ('Stable', 'Empty', 'PreparingRebalance', 'Dead'...). */
export interface GroupDescription {
  groupId: string;
  state: string;
  members: Array<{ memberId: string; clientId: string }>;
}

/**
 * Eddy's admin operations: what topics.ts, followers, the lag collector, the CLI and the tests need,
 * in one shape whatever the client library.
 */
export interface Admin {
  listTopics(): Promise<string[]>;
  /** Creates the topics; one that already exists (a concurrent creator won) is not an error. */
  createTopics(topics: NewTopic[]): Promise<void>;
  deleteTopics(topics: string[]): Promise<void>;
  /** Partition ids and leaders (-1: none yet) of a topic, or [] when it does not exist. */
  partitionLeaders(topic: string): Promise<Array<{ partition: number; leader: number }>>;
  fetchTopicOffsets(topic: string): Promise<PartitionOffsets[]>;
  fetchOffsets(request: { groupId: string; topics: string[] }): Promise<GroupOffsets[]>;
  listGroups(): Promise<string[]>;
  describeGroups(groupIds: string[]): Promise<GroupDescription[]>;
  /** Deletes the groups; one that does not exist is not an error. */
  deleteGroups(groupIds: string[]): Promise<void>;
}

export interface ConnectedAdmin extends Admin {
  close(): Promise<void>;
}

export interface ProducerDriver {
  connect(): Promise<void>;
  /**
   * Sends the messages (acks=all, idempotent) and resolves once every one is acknowledged; rejects
   * when one could not be written, with `retriable` set when trying again later may succeed.
   */
  send(batch: TopicMessages[]): Promise<void>;
  disconnect(): Promise<void>;
}

export interface ConsumerDriverOptions {
  groupId: string;
  topics: string[];
  /** Where a partition without a committed offset starts. */
  fromBeginning: boolean;
  /** Partitions whose batches may be handled at the same time (order is kept within each). */
  partitionsConsumedConcurrently: number;
  /** Most messages of one partition handed over in one batch. */
  maxBatchSize: number;
  /** The group drops a member it has not heard from for this long (ms). */
  sessionTimeoutMs: number;
  /** How often a member tells the group it is alive (ms). */
  heartbeatIntervalMs: number;
  /** Static membership (KIP-345): a restarted member with the same id gets its partitions back without a rebalance. */
  groupInstanceId?: string;
  /** A fetch waits at the broker until this many bytes are ready (1: answered as soon as anything is)... */
  fetchMinBytes: number;
  /** ...or until this much time has passed (ms). */
  fetchMaxWaitMs: number;
}

/** One partition's messages, in offset order, as handed to the runner. */
export interface FetchedBatch {
  topic: string;
  partition: number;
  messages: RawMessage[];
  /** False once the consumer is stopping or this partition was taken away: stop early, commit what is done. */
  isRunning(): boolean;
  /**
   * False once a rebalance has given this partition to another member (which reads the
   * uncommitted batch again); true while a rebalance is still deciding, and while this consumer is
   * only stopping. Long work may be abandoned when it turns false: it is done again over there.
   */
  isAssigned(): boolean;
  /** Keeps the membership alive during long work (a no-op where the library heartbeats by itself). */
  heartbeat(): Promise<void>;
  /**
   * Commits `nextOffset` (last handled + 1) for this partition; works during a graceful stop.
   * Rejects when the cluster refuses or does not answer (a broker restart, a lost coordinator):
   * with EddyError KAFKA_FENCED when another member took this member's static instance id, else
   * with the client's error (the runner then joins again; the batch is read again, uncommitted).
   */
  commit(nextOffset: string): Promise<void>;
}

export interface ConsumerDriver {
  /** Called with the partitions (physical topic -> ids) this member owns after each rebalance ({} while none). */
  onAssignment(listener: (assignment: Record<string, number[]>) => void): void;
  /** Called when the library gives up on the consumer for good. */
  onCrash(listener: (err: Error) => void): void;
  /** Joins the group and starts handing batches to `eachBatch` (which must not throw). */
  start(eachBatch: (batch: FetchedBatch) => Promise<void>): Promise<void>;
  /** Graceful: no new batches, the ones in hand finish (and may commit), then the group is left. */
  stop(): Promise<void>;
}

/** A Kafka client library behind Eddy's seam. */
export interface KafkaClient {
  admin(): Promise<ConnectedAdmin>;
  producer(): ProducerDriver;
  consumer(options: ConsumerDriverOptions): ConsumerDriver;
}
