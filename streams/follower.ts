import { randomBytes } from 'node:crypto';
import type { Admin } from './client.ts';
import { errorMessage } from '../common/errors.ts';
import { pollUntil } from '../common/retry.ts';
import type { Logger } from '../common/log.ts';
import { FETCH_EACH_EVENT, type ConsumerRunner, type EventRecord } from './consumer.ts';
import type { Streams } from './connect.ts';
import type { TopicName } from './topics.ts';

/**
 * Keeps an in-process projection in step with the log (after Kafka Streams' global stores): every
 * process that follows must see every event, so each one reads with a consumer group of its own,
 * from the beginning (event sourcing: the projection is rebuilt, never stored); the group is
 * deleted on stop.
 *
 * Ready = caught up: the group's committed offsets reached the end offsets captured at start, on
 * every partition of the followed topics. Committed offsets (not "records seen") also count
 * messages the runner dead-lettered, so one undecodable event cannot keep a follower unready.
 */
export interface FollowerOptions {
  /** Names the private consumer group (`<name>-<random>`). */
  name: string;
  topics: readonly TopicName[];
  /** Applies one event to the projection; called in log order per partition. Must not throw. */
  apply(record: EventRecord): void;
  logger: Logger;
}

export class LogFollower {
  private runner: ConsumerRunner | undefined;
  private readyAt: number | undefined;
  private readyWaiters: Array<() => void> = [];
  private stopped = false;
  private readonly suffix = randomBytes(4).toString('hex');

  constructor(private readonly streams: Streams, private readonly opts: FollowerOptions) {}

  get ready(): boolean {
    return this.readyAt !== undefined;
  }

  /** Resolves once caught up (immediately when already). */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  async start(): Promise<void> {
    const targets = await this.streams.withAdmin((admin) => endOffsets(admin, this.streams, this.opts.topics));
    const runner = this.streams.consumer({
      group: `${this.opts.name}-${this.suffix}`,
      topics: this.opts.topics,
      fromBeginning: true,
      // A followed log is small and seldom written; its events (a model published) are waited
      // for, and a fetch that waited to fill would hold back readiness by its maximum wait.
      fetch: FETCH_EACH_EVENT,
      handler: {
        handle: async (records) => {
          for (const r of records) this.opts.apply(r);
        },
      },
    });
    this.runner = runner;
    await runner.start();
    void this.watchCatchUp(runner.groupId, targets);
  }

  /** Waits until caught up with the end offsets captured at start, then flips to ready. */
  private async watchCatchUp(groupId: string, targets: Map<string, Map<number, bigint>>): Promise<void> {
    await this.reach(groupId, targets);
    if (this.stopped) return;
    this.readyAt = Date.now();
    for (const w of this.readyWaiters.splice(0)) w();
  }

  /**
   * Polls the group's committed offsets until they reach `targets` (true), `timeoutMs` passes or
   * the follower stops (false). Offsets that cannot be read (Kafka away) count as not there yet.
   */
  private async reach(groupId: string, targets: Map<string, Map<number, bigint>>, timeoutMs?: number): Promise<boolean> {
    let admin: Awaited<ReturnType<Streams['kafka']['admin']>> | undefined;
    try {
      return await pollUntil(async () => {
        try {
          admin ??= await this.streams.kafka.admin();
          return await caughtUp(admin, groupId, targets);
        } catch (err) {
          this.opts.logger.warn({ err: errorMessage(err) }, 'cannot read consumer offsets yet; retrying');
          return false;
        }
        // A restarted server is not ready until this says so: checking every 100 ms at most costs
        // one small admin request per tick, a 500 ms cap cost up to half a second of readiness.
      }, { initialMs: 50, maxMs: 100, stop: () => this.stopped, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
    } finally {
      await admin?.close().catch(() => undefined);
    }
  }

  /**
   * Waits until this follower has applied everything its topics held when called (their end
   * offsets then), at most `timeoutMs`; true once it has, false on the timeout or when Kafka cannot
   * be asked. For a decision that must not be taken on a stale picture: the Kafka predict path asks
   * before it dead-letters a request for a client it does not know, whose labels may be a moment
   * behind in this process.
   */
  async catchUpNow(timeoutMs: number): Promise<boolean> {
    const runner = this.runner;
    if (!runner || this.stopped) return false;
    let targets: Map<string, Map<number, bigint>>;
    try {
      targets = await this.streams.withAdmin((admin) => endOffsets(admin, this.streams, this.opts.topics));
    } catch (err) {
      this.opts.logger.warn({ err: errorMessage(err) }, 'cannot read the end offsets to catch up with');
      return false;
    }
    return this.reach(runner.groupId, targets, timeoutMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const runner = this.runner;
    if (!runner) return;
    await runner.stop().catch(() => undefined);
    // The group is private to this process lifetime: leave nothing behind in the cluster.
    await this.streams.withAdmin((admin) => admin.deleteGroups([runner.groupId])).catch((err: unknown) => {
      this.opts.logger.warn({ err: errorMessage(err), group: runner.groupId }, 'could not delete the follower consumer group');
    });
  }

  /** The error that stopped the follower's consumer for good, if any (readiness and health report it). */
  get crashError(): Error | undefined {
    return this.runner?.crashError;
  }
}

async function endOffsets(admin: Admin, streams: Streams, topics: readonly TopicName[]): Promise<Map<string, Map<number, bigint>>> {
  const out = new Map<string, Map<number, bigint>>();
  for (const t of topics) {
    const physical = streams.topics.physical(t);
    const offsets = await admin.fetchTopicOffsets(physical);
    const byPartition = new Map<number, bigint>();
    for (const o of offsets) {
      // Nothing retained on this partition (empty or all deleted): nothing to catch up on.
      if (BigInt(o.high) > BigInt(o.low)) byPartition.set(o.partition, BigInt(o.high));
    }
    out.set(physical, byPartition);
  }
  return out;
}

async function caughtUp(admin: Admin, groupId: string, targets: Map<string, Map<number, bigint>>): Promise<boolean> {
  const pending = [...targets].filter(([, parts]) => parts.size > 0);
  if (pending.length === 0) return true;
  const committed = await admin.fetchOffsets({ groupId, topics: pending.map(([t]) => t) });
  for (const { topic, partitions } of committed) {
    const wanted = targets.get(topic);
    if (!wanted) continue;
    for (const [partition, high] of wanted) {
      const c = partitions.find((p) => p.partition === partition);
      if (!c || c.offset === '-1' || BigInt(c.offset) < high) return false;
    }
  }
  return true;
}
