import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { ClickHouseClient } from '@clickhouse/client';
import { identifier } from '../processors/analytics/clickhouse.ts';
import type { Streams, TopicName } from '../streams/index.ts';
import type { LabeledExample, LabelSetChanged, PredictionFeedback, PredictionMade } from '../schemas/events.ts';

/** Shared by the processors' tests: event builders, state dumps, cleanup. */

export function example(clientId: string, label: string, over: Partial<LabeledExample> = {}): LabeledExample {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId: randomUUID(),
    text: `text for ${label} ${randomUUID().slice(0, 6)}`, label, source: 'ASSIGNMENT', metadata: {}, predictionId: null, ...over,
  };
}

export function labelAdded(clientId: string, label: string, over: Partial<LabelSetChanged> = {}): LabelSetChanged {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), change: 'ADDED', label, previousLabel: null, description: `${label} team`, keywords: [label.toLowerCase()], ...over };
}

export function prediction(clientId: string, requestId: string, label: string, over: Partial<PredictionMade> = {}): PredictionMade {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), requestId, text: `request ${requestId}`, metadata: { requester: 'ann' },
    label, scores: [{ label, score: 0.9 }], modelVersion: 'v1', variant: 'LIVE', latencyMs: 1.5, channel: 'HTTP', featuresDefaulted: false, ...over,
  };
}

export function feedback(clientId: string, requestId: string, outcome: PredictionFeedback['outcome'], correctLabel: string | null = null, over: Partial<PredictionFeedback> = {}): PredictionFeedback {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), requestId, outcome, correctLabel, actor: 'agent', ...over };
}

/** True when the group has committed every message of `topics` (empty partitions count as done). */
export async function caughtUp(streams: Streams, logicalGroup: string, topics: readonly TopicName[]): Promise<boolean> {
  return streams.withAdmin(async (admin) => {
    const groupId = streams.topics.group(logicalGroup);
    const committed = await admin.fetchOffsets({ groupId, topics: topics.map((t) => streams.topics.physical(t)) });
    for (const t of topics) {
      const ends = await admin.fetchTopicOffsets(streams.topics.physical(t));
      const mine = committed.find((c) => c.topic === streams.topics.physical(t));
      for (const e of ends) {
        if (e.high === '0' || e.high === e.low) continue;
        const c = mine?.partitions.find((x) => x.partition === e.partition)?.offset ?? '-1';
        if (BigInt(c) < BigInt(e.high)) return false;
      }
    }
    return true;
  });
}

/** Every key under `prefix` with its value (TTL excluded), in a stable order, for equality checks. */
export async function dumpRedis(redis: Redis, prefix: string, exclude: RegExp = /:t$/): Promise<Record<string, unknown>> {
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, batch] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...batch);
  } while (cursor !== '0');
  const out: Record<string, unknown> = {};
  for (const key of keys.filter((k) => !exclude.test(k)).sort()) {
    const type = await redis.type(key);
    if (type === 'hash') out[key] = sortObject(await redis.hgetall(key));
    else if (type === 'string') out[key] = await redis.get(key);
    else if (type === 'set') out[key] = (await redis.smembers(key)).sort();
    // seen sets are scored by processing time: compare their members only
    else if (type === 'zset') out[key] = (await redis.zrange(key, 0, -1)).sort();
    else out[key] = type;
  }
  return out;
}

function sortObject(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

export async function deleteRedisPrefix(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
}

/** Deduplicated rows of a table (FINAL), ordered by event id. */
export async function tableRows(ch: ClickHouseClient, db: string, table: string): Promise<Array<Record<string, unknown>>> {
  const rs = await ch.query({ query: `SELECT * FROM ${identifier(db)}.${identifier(table)} FINAL ORDER BY client_id, event_id`, format: 'JSONEachRow' });
  return rs.json();
}

export async function count(ch: ClickHouseClient, db: string, table: string, final = true): Promise<number> {
  const rs = await ch.query({ query: `SELECT count() AS n FROM ${identifier(db)}.${identifier(table)}${final ? ' FINAL' : ''}`, format: 'JSONEachRow' });
  const rows = await rs.json<{ n: string }>();
  return Number(rows[0]?.n ?? 0);
}

export async function dropDatabase(ch: ClickHouseClient, db: string): Promise<void> {
  await ch.command({ query: `DROP DATABASE IF EXISTS ${identifier(db)}` });
}
