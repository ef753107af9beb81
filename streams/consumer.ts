import { randomUUID } from 'node:crypto';
import type { ConsumerDriver, ConsumerDriverOptions, FetchedBatch, KafkaClient, RawMessage } from './client.ts';
import { DecodeError, type AnyEvent, type EventCodec } from './codec.ts';
import type { EventProducer } from './producer.ts';
import { logEnd, TOPICS, type TopicName, type TopicNames } from './topics.ts';
import { EddyError, errorMessage } from '../common/errors.ts';
import { retry } from '../common/retry.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { counter, histogram } from '../common/metrics.ts';
import type { DeadLetter } from '../schemas/events.ts';

/** One decoded event with where it came from. */
export interface EventRecord<E extends AnyEvent = AnyEvent> {
  event: E;
  topic: TopicName;
  partition: number;
  offset: string;
  key: string | null;
  /** Broker timestamp (ms) of the message. */
  timestamp: number;
}

/**
 * What the runtime hands a handler once, at init (after Kafka Streams' ProcessorContext): a way
 * to emit events and to schedule periodic work. A handler gets its stores (Redis, ClickHouse) from
 * whoever registers it; the runtime that created them closes them.
 */
export interface ProcessorContext {
  logger: Logger;
  /** Sends events through the process's producer (validated, keyed by clientId, idempotent). */
  emit(events: readonly AnyEvent[]): Promise<void>;
  /**
   * Runs `task` every `intervalMs` while the consumer runs, with the partitions this member owns
   * at that moment (a task touches only what this member owns; the others are their owners').
   * A run never overlaps the previous one; a failure is logged and the task runs again at the next
   * tick. Scheduled tasks stop (and the one in flight is awaited) before the consumer leaves.
   */
  schedule(name: string, intervalMs: number, task: (owned: Ownership) => Promise<void>): void;
  /**
   * The end of each partition of `topic` now (the offset the next record will get), asked of
   * Kafka: with the offsets a handler has seen, it tells "nothing more to read" from "the
   * consumer is behind" (the trigger processor's backlog rule). Rejects while Kafka is away.
   */
  endOffsets(topic: TopicName): Promise<Map<number, bigint>>;
}

/** The partitions a member owns right now. */
export interface Ownership {
  owns(topic: TopicName, partition: number): boolean;
}

export interface BatchContext {
  /** Keeps the group membership alive during long work. */
  heartbeat(): Promise<void>;
  /** False once shutdown started: long handlers may stop early by throwing a retriable error. */
  isRunning(): boolean;
  /**
   * False once a rebalance gave the batch's partition to another member, which handles the
   * uncommitted batch again (true while this consumer is only stopping): a long handler may
   * abandon its work then by throwing a retriable error (the trainer's model search does).
   */
  isAssigned(): boolean;
  logger: Logger;
}

/**
 * What a consumer does with events (after the Kafka Streams `Processor`). `handle` receives the
 * records of ONE partition, in offset order. It must be idempotent (use `eventId`): after a crash
 * or a retry the runner delivers from the last committed offset again.
 * - return: the records are done; their offsets are committed.
 * - throw a retriable EddyError (Redis or ClickHouse down...): nothing is committed, the same
 *   records are retried with backoff, the partition makes no progress meanwhile (pause, not drop).
 * - throw anything else: the records are retried one by one to isolate the poison record, which
 *   goes to the dead-letter topic with the reason; the rest are processed.
 */
export interface EventHandler {
  init?(ctx: ProcessorContext): Promise<void>;
  handle(records: EventRecord[], ctx: BatchContext): Promise<void>;
  close?(): Promise<void>;
}

export interface ConsumerRunnerOptions {
  /** Logical group name; the physical group id carries the topic prefix. */
  group: string;
  topics: readonly TopicName[];
  handler: EventHandler;
  /** Start from the beginning of the log when the group has no committed offset (event sourcing: yes). */
  fromBeginning?: boolean;
  /** Largest slice of a fetched batch handed to `handle` at once; offsets are committed per slice. */
  maxRecordsPerCall?: number;
  /** Partitions processed concurrently by this process (order is kept within each). */
  partitionsConsumedConcurrently?: number;
  /**
   * Backoff for retriable errors: starts at initialMs (200 ms), doubles, capped at maxMs (2 s, so
   * work resumes within 2 s of a dependency's return however long it was away); retried until stopped.
   */
  retry?: { initialMs?: number; maxMs?: number };
  /**
   * What to do with a message that cannot be decoded or is not valid (a policy, after Kafka Streams'
   * deserialization exception handler): 'dead-letter' (default) records it and continues; 'fail'
   * stops the consumer with the error.
   */
  onUndecodable?: 'dead-letter' | 'fail';
  /** The group drops this member when it has not heard from it for this long (default 10 s; connectStreams passes EDDY_KAFKA_SESSION_TIMEOUT_MS). */
  sessionTimeoutMs?: number;
  /** How often the member tells the group it is alive (default 1 s; connectStreams passes EDDY_KAFKA_HEARTBEAT_MS). */
  heartbeatIntervalMs?: number;
  /**
   * Static membership (KIP-345): a member that restarts with the same id within the session
   * timeout gets its partitions back without a rebalance. Unique per process.
   */
  groupInstanceId?: string;
  /**
   * How long a fetch may wait to fill: the broker answers once `minBytes` are ready or after
   * `maxWaitMs` (defaults 1 byte and 500 ms: as soon as anything is there; connectStreams passes
   * EDDY_KAFKA_FETCH_MIN_BYTES and EDDY_KAFKA_FETCH_MAX_WAIT_MS). A larger `minBytes` turns a
   * trickle of events into a few batches a second: fewer fetches, handler calls and commits, at
   * the cost of up to `maxWaitMs` of delay when traffic is low. With 1, `maxWaitMs` delays
   * nothing: it is how long an idle fetch waits before the next.
   */
  fetch?: { minBytes?: number; maxWaitMs?: number };
  /** Called once the runner has stopped (gracefully or after a crash). */
  onStopped?: () => void;
  logger?: Logger;
}

/**
 * The `fetch` of a consumer someone waits on (a caller, a watcher, a readiness check): the broker
 * answers as soon as one record is there, so the configured fetch window delays nothing; the wait
 * then only paces an idle consumer's fetches.
 */
export const FETCH_EACH_EVENT: Readonly<{ minBytes: number }> = Object.freeze({ minBytes: 1 });

const metrics = {
  received: () => counter({
    name: 'eddy_consumer_received_total', help: 'Messages fetched by a consumer group', labelNames: ['group', 'topic'],
  }),
  processed: () => counter({
    name: 'eddy_consumer_processed_total', help: 'Events handled and committed', labelNames: ['group', 'topic'],
  }),
  deadLettered: () => counter({
    name: 'eddy_consumer_dead_lettered_total', help: 'Messages sent to the dead-letter topic', labelNames: ['group', 'topic', 'code'],
  }),
  retries: () => counter({
    name: 'eddy_consumer_retries_total', help: 'Retriable failures (the work was retried, not dropped)', labelNames: ['group', 'code'],
  }),
  latency: () => histogram({
    name: 'eddy_consumer_handle_seconds', help: 'Time to handle one call of records', labelNames: ['group'],
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
  }),
};

class StoppedError extends Error {}

/**
 * Runs an EventHandler over topics as a consumer group: decodes through the registry, keeps
 * per-partition order, commits only after the handler succeeded, retries transient failures with
 * backoff, dead-letters what can never succeed and carries on, and shuts down gracefully
 * (stop fetching, finish the records in hand, commit, leave the group).
 */
export class ConsumerRunner {
  readonly groupId: string;
  private consumer: ConsumerDriver;
  private readonly driverOptions: ConsumerDriverOptions;
  private reconnecting: Promise<void> | undefined;
  /** A driver that failed while a reconnection was under way (retried once that one ends, if it is still the current one). */
  private failedMeanwhile: ConsumerDriver | undefined;
  private readonly logger: Logger;
  private readonly opts: Required<Pick<ConsumerRunnerOptions, 'fromBeginning' | 'maxRecordsPerCall' | 'partitionsConsumedConcurrently' | 'retry' | 'onUndecodable'>>;
  private running = false;
  private crashed: Error | undefined;
  private stopping: Promise<void> | undefined;
  private assigned: Record<string, number[]> = {};
  private assignmentWaiters: Array<() => void> = [];
  private readonly tasks: ScheduledTask[] = [];

  constructor(
    private readonly kafka: KafkaClient,
    private readonly codec: EventCodec,
    private readonly producer: EventProducer,
    private readonly names: TopicNames,
    private readonly options: ConsumerRunnerOptions,
  ) {
    this.groupId = names.group(options.group);
    this.logger = (options.logger ?? createLogger('consumer')).child({ group: this.groupId });
    this.opts = {
      fromBeginning: options.fromBeginning ?? true,
      maxRecordsPerCall: options.maxRecordsPerCall ?? 1000,
      partitionsConsumedConcurrently: options.partitionsConsumedConcurrently ?? 1,
      retry: { initialMs: options.retry?.initialMs ?? 200, maxMs: options.retry?.maxMs ?? 2_000 },
      onUndecodable: options.onUndecodable ?? 'dead-letter',
    };
    this.driverOptions = {
      groupId: this.groupId,
      topics: options.topics.map((t) => names.physical(t)),
      fromBeginning: this.opts.fromBeginning,
      partitionsConsumedConcurrently: this.opts.partitionsConsumedConcurrently,
      maxBatchSize: this.opts.maxRecordsPerCall,
      sessionTimeoutMs: options.sessionTimeoutMs ?? 10_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 1_000,
      groupInstanceId: options.groupInstanceId,
      fetchMinBytes: options.fetch?.minBytes ?? 1,
      fetchMaxWaitMs: options.fetch?.maxWaitMs ?? 500,
    };
    this.consumer = this.newDriver();
  }

  private newDriver(): ConsumerDriver {
    const driver = this.kafka.consumer(this.driverOptions);
    // Co-partitioned (one member owns partition p of every topic: per-client state that spans
    // topics has one writer); nothing is owned between the start of a rebalance and the next assignment.
    driver.onAssignment((byPhysical) => {
      if (driver !== this.consumer) return;
      const assigned: Record<string, number[]> = {};
      for (const [physical, partitions] of Object.entries(byPhysical)) assigned[this.names.logical(physical) ?? physical] = partitions;
      this.assigned = assigned;
      if (Object.keys(assigned).length === 0) return;
      this.logger.info({ assigned }, 'partitions assigned');
      for (const w of this.assignmentWaiters.splice(0)) w();
    });
    let failed = false;
    driver.onCrash((err) => {
      if (failed || driver !== this.consumer) return;
      failed = true;
      if (this.reconnecting) this.failedMeanwhile = driver;
      else this.reconnect(err);
    });
    return driver;
  }

  /**
   * The library gave up on its consumer (its fetches failed past its retries: the broker is away).
   * After kafkajs' runner, which restarts on retriable errors: a new consumer joins with the same
   * instance id, with capped backoff, until the cluster answers again or the runner stops. What
   * was in hand is not committed and is read again (handlers are idempotent).
   */
  private reconnect(cause: Error): void {
    if (!this.running || this.reconnecting) return;
    this.assigned = {};
    this.reconnecting = (async () => {
      let delay = this.opts.retry.initialMs!;
      let err: unknown = cause;
      for (;;) {
        metrics.retries().inc({ group: this.groupId, code: 'KAFKA_UNAVAILABLE' });
        this.logger.warn({ err: errorMessage(err), retryInMs: delay }, 'consumer lost the cluster; joining again');
        await this.consumer.stop().catch(() => undefined);
        await new Promise((r) => setTimeout(r, delay));
        if (!this.running) return;
        this.consumer = this.newDriver();
        try {
          await this.consumer.start((batch) => this.onBatch(batch));
          return;
        } catch (e) {
          err = e;
          delay = Math.min(delay * 2, this.opts.retry.maxMs!);
        }
      }
    })().finally(() => {
      this.reconnecting = undefined;
      if (this.failedMeanwhile === this.consumer) this.reconnect(new Error('the new consumer failed as it started'));
      this.failedMeanwhile = undefined;
    });
  }

  /** Partitions per (logical) topic this member owns since the last rebalance. */
  get assignment(): Readonly<Record<string, readonly number[]>> {
    return this.assigned;
  }

  get isRunning(): boolean {
    return this.running;
  }

  /** The error that stopped the consumer for good, if any. */
  get crashError(): Error | undefined {
    return this.crashed;
  }

  async start(): Promise<void> {
    await this.options.handler.init?.({
      logger: this.logger,
      emit: (events) => this.producer.sendAll(events),
      schedule: (name, intervalMs, task) => {
        this.tasks.push(new ScheduledTask(name, intervalMs, task, this.logger));
      },
      endOffsets: async (topic) => {
        const admin = await this.kafka.admin();
        try {
          return await logEnd(admin, this.names.physical(topic));
        } finally {
          await admin.close().catch(() => undefined);
        }
      },
    });
    await this.producer.connect();
    this.running = true;
    await this.consumer.start((batch) => this.onBatch(batch));
    const ownership: Ownership = { owns: (topic, partition) => this.running && (this.assigned[topic]?.includes(partition) ?? false) };
    for (const t of this.tasks) t.start(ownership);
    this.logger.info({ topics: this.options.topics }, 'consumer started');
  }

  /**
   * Waits for the next assignment of partitions to this member: call it before `start()` or before
   * the rebalance it is to see (useful before producing in tests and tools). An assignment that
   * happened before the call does not count; `assignment` tells what is owned now.
   */
  async waitForAssignment(timeoutMs = 30_000): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const waiter = () => {
        clearTimeout(timer);
        resolve();
      };
      const timer = setTimeout(() => {
        this.assignmentWaiters = this.assignmentWaiters.filter((w) => w !== waiter);
        reject(new EddyError('TIMEOUT', `consumer group ${this.groupId} got no assignment within ${timeoutMs} ms`));
      }, timeoutMs);
      this.assignmentWaiters.push(waiter);
    });
  }

  /** Graceful stop: no new fetches, the records in hand finish and commit, then the group is left. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.running = false;
      try {
        await Promise.all(this.tasks.map((t) => t.stop()));
        await this.reconnecting;
        await this.consumer.stop();
      } finally {
        await this.options.handler.close?.();
        this.options.onStopped?.();
        this.logger.info('consumer stopped');
      }
    })();
    return this.stopping;
  }

  /** A failure the runner cannot get past (the 'fail' policy, a commit refused): stop for good, uncommitted. */
  private crash(err: Error): void {
    if (this.crashed) return;
    this.crashed = err;
    this.running = false;
    this.logger.error({ err: errorMessage(err) }, 'consumer crashed');
    void this.stop().catch(() => undefined);
  }

  private async onBatch(batch: FetchedBatch): Promise<void> {
    if (!this.running) return;
    const topic = this.names.logical(batch.topic);
    if (!topic) return this.crash(new EddyError('UNKNOWN_TOPIC', `subscribed to ${batch.topic}, which is not in the catalogue`));
    metrics.received().inc({ group: this.groupId, topic }, batch.messages.length);
    if (!batch.isRunning()) return;
    try {
      await this.processSlice(topic, batch.partition, batch.messages, batch);
    } catch (err) {
      if (err instanceof StoppedError) return; // uncommitted: redelivered after restart
      if (!batch.isRunning()) return;
      return this.crash(err instanceof Error ? err : new Error(String(err)));
    }
    try {
      const next = (BigInt(batch.messages[batch.messages.length - 1]!.offset) + 1n).toString();
      await batch.commit(next);
      await batch.heartbeat();
    } catch (err) {
      // A partition taken away mid-batch refuses the commit; its new owner redoes the batch (idempotent).
      if (!this.running || !batch.isRunning()) return;
      const error = err instanceof Error ? err : new Error(String(err));
      // Two live members with one instance id would fence each other for ever: stop this one.
      if (error instanceof EddyError && error.code === 'KAFKA_FENCED') return this.crash(error);
      // The cluster refused or did not answer (a broker restart, a lost coordinator): the batch is
      // processed but not committed. Join again, as when the client gives up fetching; the next
      // member reads from the last commit and redoes the batch (handlers are idempotent). Stopping
      // here instead left a live process consuming nothing after a broker restart (bench:chaos).
      this.logger.warn({ topic, partition: batch.partition, err: errorMessage(error) }, 'commit failed; joining again');
      this.reconnect(error);
    }
  }

  private async processSlice(topic: TopicName, partition: number, slice: RawMessage[], batch: FetchedBatch): Promise<void> {
    const records: EventRecord[] = [];
    const dead: DeadLetter[] = [];
    const allowed: readonly string[] = TOPICS[topic].events;
    for (const m of slice) {
      // Synchronous for a schema id the codec knows (no promise or closure per record); the
      // registry is asked, with retries while it is away, only for an id seen for the first time.
      let decoded: AnyEvent | Error | undefined;
      try {
        decoded = this.codec.decodeKnown(m.value);
      } catch (err) {
        decoded = err instanceof Error ? err : new Error(String(err));
      }
      decoded ??= await this.withRetry(batch, () => this.codec.decode(m.value));
      if (decoded instanceof Error) {
        const code = decoded instanceof DecodeError ? decoded.failure : 'UNDECODABLE';
        dead.push(this.deadLetter(topic, partition, m, code, decoded.message));
      } else if (!allowed.includes(decoded.name)) {
        dead.push(this.deadLetter(topic, partition, m, 'UNEXPECTED_TYPE', `${decoded.name} does not belong on topic ${topic} (expected ${allowed.join(', ')})`));
      } else {
        records.push({
          event: decoded, topic, partition, offset: m.offset,
          key: m.key ? m.key.toString() : null, timestamp: m.timestamp,
        });
      }
    }
    if (dead.length > 0 && this.opts.onUndecodable === 'fail') {
      throw new EddyError('UNDECODABLE_MESSAGE', `${dead[0]!.reason} (${topic}/${partition}@${dead[0]!.offset})`);
    }
    if (records.length > 0) {
      const ctx: BatchContext = {
        heartbeat: () => batch.heartbeat(),
        isRunning: () => batch.isRunning() && this.running,
        isAssigned: () => batch.isAssigned(),
        logger: this.logger,
      };
      const timer = metrics.latency().startTimer({ group: this.groupId });
      const whole = await this.withRetry(batch, () => this.options.handler.handle(records, ctx));
      if (whole instanceof Error) {
        // Isolate the poison record: the handler is idempotent, so replaying the good ones is safe.
        this.logger.warn({ err: errorMessage(whole), records: records.length }, 'handler failed on a call; retrying record by record');
        for (const r of records) {
          const one = await this.withRetry(batch, () => this.options.handler.handle([r], ctx));
          if (one instanceof Error) {
            const m = slice.find((x) => x.offset === r.offset)!;
            dead.push(this.deadLetter(topic, partition, m, 'HANDLER_FAILED', errorMessage(one)));
          }
        }
      }
      timer();
    }
    if (dead.length > 0) {
      await this.withRetry(batch, () => this.producer.sendAll(dead.map((value) => ({ name: 'DeadLetter', value }) as AnyEvent)), true);
      for (const d of dead) {
        metrics.deadLettered().inc({ group: this.groupId, topic, code: d.errorCode });
        this.logger.warn({ topic, partition, offset: d.offset, code: d.errorCode, reason: d.reason }, 'message dead-lettered');
      }
    }
    metrics.processed().inc({ group: this.groupId, topic }, records.length);
  }

  /**
   * Runs `fn`, retrying retriable errors with capped exponential backoff while heartbeating, until
   * it succeeds or the runner stops (then StoppedError: nothing is committed). A non-retriable
   * error is returned (not thrown) so the caller decides: dead-letter it, or fail when `rethrow`.
   */
  private async withRetry<T>(batch: FetchedBatch, fn: () => Promise<T>, rethrow = false): Promise<T | Error> {
    try {
      return await retry(fn, {
        initialMs: this.opts.retry.initialMs!, maxMs: this.opts.retry.maxMs!,
        onRetry: (err, retryInMs) => {
          // The partition is gone or the consumer is stopping: no retry follows (the wait below ends it).
          if (!batch.isRunning() || !this.running) return;
          const code = err instanceof EddyError ? err.code : 'UNKNOWN';
          metrics.retries().inc({ group: this.groupId, code });
          this.logger.warn({ code, err: errorMessage(err), retryInMs }, 'transient failure; pausing this partition and retrying');
        },
        // Wait in short steps, heartbeating (the group keeps this member) and giving up on stop.
        wait: async (ms) => {
          const until = Date.now() + ms;
          while (Date.now() < until) {
            if (!batch.isRunning() || !this.running) throw new StoppedError();
            await new Promise((r) => setTimeout(r, Math.min(250, until - Date.now())));
            await batch.heartbeat().catch(() => undefined);
          }
        },
      });
    } catch (err) {
      if (err instanceof StoppedError || rethrow || !(err instanceof Error)) throw err;
      return err;
    }
  }

  private deadLetter(topic: TopicName, partition: number, m: RawMessage, code: DeadLetter['errorCode'], reason: string): DeadLetter {
    return {
      eventId: randomUUID(),
      clientId: m.key?.toString() || 'unknown',
      occurredAt: Date.now(),
      sourceTopic: this.names.physical(topic),
      partition,
      offset: Number(m.offset),
      consumerGroup: this.groupId,
      errorCode: code,
      reason,
      key: m.key ?? null,
      value: m.value ?? null,
    };
  }
}

/** A periodic task of a handler (ProcessorContext.schedule): no overlap, failures logged, stopped with the consumer. */
export class ScheduledTask {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    readonly name: string,
    private readonly intervalMs: number,
    private readonly task: (owned: Ownership) => Promise<void>,
    private readonly logger: Logger,
  ) {}

  start(owned: Ownership): void {
    this.timer ??= setInterval(() => {
      if (this.inFlight) return;
      this.inFlight = this.task(owned)
        .catch((err: unknown) => this.logger.warn({ task: this.name, err: errorMessage(err) }, 'scheduled task failed; it runs again at the next tick'))
        .finally(() => { this.inFlight = undefined; });
    }, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }
}
