import type { RedisClient } from '../common/redis.ts';
import type { EddyConfig } from '../common/config.ts';
import { createLogger } from '../common/log.ts';
import { connectStreams, TOPIC_NAMES, type Streams, type TopicName } from '../streams/index.ts';
import { createClickHouse, identifier, type ClickHouseClient } from '../common/clickhouse.ts';
import { ANALYTICS_TOPICS } from './analytics/processor.ts';
import { ANALYTICS_TABLE_NAMES, ANALYTICS_VIEW_NAMES, migrateAnalytics } from './analytics/schema.ts';
import { FEATURE_TOPICS } from './features/processor.ts';
import { connectRedis, deleteKeys, scanKeys } from '../common/redis.ts';
import { featureKeys } from '../common/keyspace.ts';
import { retry } from '../common/retry.ts';
import { startProcessors } from './run.ts';

export interface ReplayProgress {
  /** Messages consumed and committed so far (over every replayed topic and partition). */
  done: number;
  /** Messages between the log start and the end offsets captured when the replay began. */
  total: number;
}

export interface ReplayOptions {
  /** Clear the feature state and the analytics tables first (default true): a rebuild, not a merge. */
  clear?: boolean;
  onProgress?(p: ReplayProgress): void;
  pollMs?: number;
}

type Ends = Map<string, Map<number, { low: bigint; high: bigint }>>;

const REPLAYED_TOPICS: readonly TopicName[] = TOPIC_NAMES.filter((t) => FEATURE_TOPICS.includes(t) || ANALYTICS_TOPICS.includes(t));

/**
 * Rebuilds Redis feature state and the ClickHouse analytics log from Kafka, the source of truth:
 * capture the end offsets, clear the projections (feature keys under the Redis prefix, the
 * analytics tables), run the feature and analytics processors as FRESH consumer groups from the
 * beginning until they have committed the captured ends, then remove those groups. Live
 * processors should be stopped meanwhile (they would write into the state being rebuilt); events
 * that arrive during the replay are applied too, idempotently. Trigger state and the feedback
 * processor are not replayed: they emit events, and their past outputs are already in the log.
 */
export async function replay(config: EddyConfig, opts: ReplayOptions = {}): Promise<ReplayProgress & { ms: number; groups: string[] }> {
  const t0 = Date.now();
  const logger = createLogger('replay', config.logLevel);
  const streams = await connectStreams(config, 'eddy-replay');
  try {
    const ends = await captureEnds(streams, REPLAYED_TOPICS);
    let total = 0;
    for (const parts of ends.values()) for (const { low, high } of parts.values()) total += Number(high - low);
    if (opts.clear ?? true) {
      const redis = await connectRedis(config);
      const ch = createClickHouse(config);
      try {
        const deleted = await clearFeatureState(redis, config.redisPrefix);
        await clearAnalytics(ch, config.clickhouseDatabase);
        logger.info({ redisKeys: deleted, database: config.clickhouseDatabase }, 'cleared projections');
      } finally {
        redis.disconnect();
        await ch.close();
      }
    }
    const groupPrefix = `replay-${Date.now().toString(36)}`;
    const procs = await startProcessors(config, { only: ['features', 'analytics'], groupPrefix });
    const groups = [`${groupPrefix}.features`, `${groupPrefix}.analytics`];
    let done = 0;
    try {
      for (;;) {
        done = await committedSince(streams, groups, ends);
        opts.onProgress?.({ done, total });
        if (done >= total) break;
        for (const r of Object.values(procs.runners)) {
          if (r.crashError) throw r.crashError;
        }
        await new Promise((r) => setTimeout(r, opts.pollMs ?? 250));
      }
    } finally {
      await procs.stop();
      await streams.withAdmin((admin) => admin.deleteGroups(groups.map((g) => streams.topics.group(g)))).catch(() => undefined);
    }
    return { done, total, ms: Date.now() - t0, groups };
  } finally {
    await streams.close();
  }
}

async function captureEnds(streams: Streams, topics: readonly TopicName[]): Promise<Ends> {
  // Right after topics are created, leaders may still be moving ("not the leader"): retry briefly.
  return retry(() => fetchEnds(streams, topics), { initialMs: 300, maxMs: 3_000, attempts: 8, retriable: () => true });
}

async function fetchEnds(streams: Streams, topics: readonly TopicName[]): Promise<Ends> {
  const ends: Ends = new Map();
  await streams.withAdmin(async (admin) => {
    for (const t of topics) {
      const physical = streams.topics.physical(t);
      const parts = new Map<number, { low: bigint; high: bigint }>();
      for (const o of await admin.fetchTopicOffsets(physical)) parts.set(o.partition, { low: BigInt(o.low), high: BigInt(o.high) });
      ends.set(physical, parts);
    }
  });
  return ends;
}

/**
 * Messages below the captured ends that every replay group reading their topic has committed
 * (a topic both processors read counts as done when the slower one is there).
 */
async function committedSince(streams: Streams, groups: string[], ends: Ends): Promise<number> {
  return streams.withAdmin(async (admin) => {
    const progress = new Map<string, bigint>(); // topic/partition -> min committed over groups
    for (const group of groups) {
      const topics = group.endsWith('.features') ? FEATURE_TOPICS : ANALYTICS_TOPICS;
      const committed = await admin.fetchOffsets({ groupId: streams.topics.group(group), topics: topics.map((t) => streams.topics.physical(t)) });
      for (const c of committed) {
        const parts = ends.get(c.topic);
        if (!parts) continue;
        for (const p of c.partitions) {
          const end = parts.get(p.partition);
          if (!end) continue;
          let at = BigInt(p.offset) < 0n ? end.low : BigInt(p.offset);
          if (at > end.high) at = end.high;
          if (at < end.low) at = end.low;
          const key = `${c.topic}/${p.partition}`;
          const prev = progress.get(key);
          progress.set(key, prev === undefined || at < prev ? at : prev);
        }
      }
    }
    let done = 0;
    for (const [topic, parts] of ends) {
      for (const [partition, end] of parts) {
        const at = progress.get(`${topic}/${partition}`) ?? end.low;
        done += Number(at - end.low);
      }
    }
    return done;
  });
}

/** Deletes the feature processor's keys under `prefix` (never trigger state or other prefixes). */
export async function clearFeatureState(redis: RedisClient, prefix: string): Promise<number> {
  const featureKey = new RegExp(`^${prefix.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:\\{[^}]*\\}:f:`);
  let deleted = 0;
  // Every master of a cluster is scanned, and a page's keys (many clients: many slots) are
  // deleted one DEL per slot there; a single Redis gets one DEL per page, as before.
  for await (const keys of scanKeys(redis, `${prefix}:*`)) {
    deleted += await deleteKeys(redis, keys.filter((k) => featureKey.test(k)), 'clearing feature state');
  }
  // The client index has no hash tag (it spans clients): a DEL of its own.
  deleted += await deleteKeys(redis, [featureKeys.clients(prefix)], 'clearing feature state');
  return deleted;
}

/** Drops and recreates the analytics tables and views (TRUNCATE is not in every version we support). */
export async function clearAnalytics(ch: ClickHouseClient, database: string): Promise<void> {
  const db = identifier(database);
  for (const v of ANALYTICS_VIEW_NAMES) await ch.command({ query: `DROP TABLE IF EXISTS ${db}.${v}` });
  for (const t of ANALYTICS_TABLE_NAMES) await ch.command({ query: `DROP TABLE IF EXISTS ${db}.${t}` });
  await migrateAnalytics(ch, database);
}
