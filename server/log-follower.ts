import { randomBytes } from 'node:crypto';
import type { Admin } from 'kafkajs';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { ConsumerRunner, Streams, TopicName } from '../streams/index.ts';
import { serverMetrics } from './metrics.ts';
import type { LabelDirectory, ModelRegistry } from './registry.ts';

/**
 * Keeps this replica's projections (model registry, label definitions, example counts) in step
 * with the log. Every replica must see every event, so each one reads with a consumer group of its
 * own, from the beginning (event sourcing: the registry is rebuilt, never stored); the group is
 * deleted on close.
 *
 * Ready = caught up: the group's committed offsets reached the end offsets captured at start, on
 * every partition of `models` and `labels`. Committed offsets (not "records seen") also count
 * messages the runner dead-lettered, so one undecodable event cannot keep a replica unready.
 * The `examples` topic only refines the baseline's majority label; it does not gate readiness.
 */
export class LogFollower {
  private registryRunner: ConsumerRunner | undefined;
  private examplesRunner: ConsumerRunner | undefined;
  private readyAt: number | undefined;
  private readyWaiters: Array<() => void> = [];
  private stopped = false;
  private readonly suffix = randomBytes(4).toString('hex');

  constructor(
    private readonly streams: Streams,
    private readonly registry: ModelRegistry,
    private readonly labels: LabelDirectory,
    private readonly replicaId: string,
    private readonly logger: Logger,
    /** Count examples for the baseline (servers: yes; the CLI only needs the registry). */
    private readonly countExamples = true,
  ) {}

  get ready(): boolean {
    return this.readyAt !== undefined;
  }

  /** Resolves once caught up (immediately when already). */
  whenReady(): Promise<void> {
    if (this.ready) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  async start(): Promise<void> {
    const gated: TopicName[] = ['models', 'labels'];
    const targets = await this.streams.withAdmin((admin) => endOffsets(admin, this.streams, gated));
    const registryRunner = this.streams.consumer({
      group: `server-registry-${this.replicaId}-${this.suffix}`,
      topics: gated,
      fromBeginning: true,
      handler: {
        handle: async (records) => {
          for (const r of records) {
            if (r.topic === 'labels') {
              this.labels.apply(r.event);
              continue;
            }
            const change = this.registry.apply(r.event);
            if (change?.kind === 'ignored') this.logger.warn({ clientId: change.clientId, reason: change.reason }, 'model event ignored');
          }
        },
      },
    });
    this.registryRunner = registryRunner;
    await registryRunner.start();
    void this.watchCatchUp(registryRunner.groupId, targets);
    if (!this.countExamples) return;
    const examplesRunner = this.streams.consumer({
      group: `server-examples-${this.replicaId}-${this.suffix}`,
      topics: ['examples'],
      fromBeginning: true,
      handler: {
        handle: async (records) => {
          for (const r of records) this.labels.countExample(r.event);
        },
      },
    });
    this.examplesRunner = examplesRunner;
    await examplesRunner.start();
  }

  /** Polls the group's committed offsets until they reach the targets, then flips to ready. */
  private async watchCatchUp(groupId: string, targets: Map<string, Map<number, bigint>>): Promise<void> {
    const admin = this.streams.kafka.admin();
    try {
      await admin.connect();
      for (let delay = 50; !this.stopped; delay = Math.min(delay * 2, 500)) {
        try {
          if (await caughtUp(admin, groupId, targets)) break;
        } catch (err) {
          this.logger.warn({ err: errorMessage(err) }, 'cannot read consumer offsets yet; retrying');
        }
        await new Promise((r) => setTimeout(r, delay));
      }
    } finally {
      await admin.disconnect().catch(() => undefined);
    }
    if (this.stopped) return;
    this.readyAt = Date.now();
    serverMetrics.registryReady().set(1);
    this.logger.info({ clients: this.registry.size }, 'model registry caught up with the models topic; ready');
    for (const w of this.readyWaiters.splice(0)) w();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    const runners = [this.registryRunner, this.examplesRunner].filter((r): r is ConsumerRunner => r !== undefined);
    await Promise.allSettled(runners.map((r) => r.stop()));
    // Our groups are private to this process lifetime: leave nothing behind in the cluster.
    await this.streams.withAdmin((admin) => admin.deleteGroups(runners.map((r) => r.groupId))).catch((err: unknown) => {
      this.logger.warn({ err: errorMessage(err) }, 'could not delete the follower consumer groups');
    });
  }

  /** The error that stopped a follower consumer for good, if any (readiness and health report it). */
  get crashError(): Error | undefined {
    return this.registryRunner?.crashError;
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
