import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { replay, type ReplayProgress } from '../processors/replay.ts';
import { ANALYTICS_TABLE_NAMES } from '../processors/analytics/schema.ts';
import { ANALYTICS_TOPICS } from '../processors/analytics/processor.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { createClickHouse } from '../common/clickhouse.ts';
import { connectRedis } from '../common/redis.ts';
import type { AnyEvent } from '../streams/index.ts';
import { caughtUp, deleteRedisPrefix, dropDatabase, dumpRedis, example, feedback, labelAdded, prediction, tableRows } from './processors-support.ts';
import { testStreamsRetrying } from './processors-support.ts';

const config = testConfig();
let streams: Awaited<ReturnType<typeof testStreams>>;
let live: RunningProcessors | undefined;

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
});

afterAll(async () => {
  await live?.stop();
  const ch = createClickHouse(config);
  await dropDatabase(ch, config.clickhouseDatabase);
  await ch.close();
  const redis = await connectRedis(config);
  await deleteRedisPrefix(redis, config.redisPrefix);
  redis.disconnect();
  await streams?.cleanup();
});

async function snapshot(): Promise<{ redis: Record<string, unknown>; tables: Record<string, unknown> }> {
  const redis = await connectRedis(config);
  const ch = createClickHouse(config);
  try {
    const tables: Record<string, unknown> = {};
    for (const t of ANALYTICS_TABLE_NAMES) tables[t] = await tableRows(ch, config.clickhouseDatabase, t);
    return { redis: await dumpRedis(redis, config.redisPrefix), tables };
  } finally {
    redis.disconnect();
    await ch.close();
  }
}

describe('replay', () => {
  it('rebuilds Redis and ClickHouse from the log into exactly the live-built state', async () => {
    live = await startProcessors(config, { only: ['features', 'analytics', 'feedback'], waitForAssignment: true });
    const t0 = Date.UTC(2026, 9, 1);
    const events: AnyEvent[] = [];
    const labels = ['Network', 'Hardware', 'Access'];
    for (const client of ['acme', 'globex', 'initech']) {
      for (const l of labels) events.push({ name: 'LabelSetChanged', value: labelAdded(client, l, { occurredAt: t0 }) });
      for (let i = 0; i < 60; i++) {
        events.push({
          name: 'LabeledExample',
          value: example(client, labels[i % 3]!, { occurredAt: t0 + i * 3_600_000, metadata: { requester: `u${i % 5}`, channel: i % 2 ? 'chat' : 'email' } }),
        });
      }
      for (let i = 0; i < 10; i++) {
        events.push({ name: 'PredictionMade', value: prediction(client, `${client}-r${i}`, labels[i % 3]!, { occurredAt: t0 + i * 1000 }) });
      }
      events.push({ name: 'LabelSetChanged', value: labelAdded(client, 'Access', { occurredAt: t0 + 1, change: 'RENAMED', previousLabel: 'Access', label: 'Identity' }) });
      events.push({ name: 'RetrainRequested', value: { eventId: randomUUID(), clientId: client, occurredAt: t0, reason: 'MANUAL', detail: '', requestedBy: 'ops', dataAsOf: null } });
    }
    await streams.producer.sendAll(events);
    // feedback after its predictions were projected: it becomes examples on the log, too
    await waitFor('predictions projected', () => caughtUp(streams, 'processors.features', ['predictions']), 30_000, 100);
    const fb: AnyEvent[] = [];
    for (const client of ['acme', 'globex']) {
      for (let i = 0; i < 6; i++) fb.push({ name: 'PredictionFeedback', value: feedback(client, `${client}-r${i}`, i % 2 ? 'ACCEPTED' : 'REASSIGNED', i % 2 ? null : 'Hardware', { occurredAt: t0 + 86_400_000 + i }) });
    }
    await streams.producer.sendAll(fb);
    await waitFor('the feedback became examples', () => caughtUp(streams, 'processors.feedback', ['feedback']), 30_000, 100);
    await waitFor('live processors caught up', async () =>
      (await caughtUp(streams, 'processors.features', FEATURE_TOPICS)) && (await caughtUp(streams, 'processors.analytics', ANALYTICS_TOPICS)), 30_000, 100);
    await live.stop();
    live = undefined;

    const liveState = await snapshot();
    expect((liveState.tables.examples as unknown[]).length).toBe(3 * 60 + 12);
    expect(Object.keys(liveState.redis).length).toBeGreaterThan(100);

    // Damage the projections, so only a real rebuild can restore them.
    {
      const redis = await connectRedis(config);
      const ch = createClickHouse(config);
      await redis.hset(`${config.redisPrefix}:{acme}:f:counts`, 'examples', '999');
      await redis.del(`${config.redisPrefix}:{globex}:f:labels`);
      await ch.insert({ table: `${config.clickhouseDatabase}.examples`, format: 'JSONEachRow', values: [{ event_id: 'bogus', client_id: 'acme', occurred_at: 0, occurred_at_ms: 0 }] });
      redis.disconnect();
      await ch.close();
      expect(await snapshot()).not.toEqual(liveState);
    }

    const progress: ReplayProgress[] = [];
    const result = await replay(config, { onProgress: (p) => progress.push(p), pollMs: 100 });
    expect(result.done).toBe(result.total);
    expect(result.total).toBe(events.length + fb.length + 12 /* derived examples */);
    expect(progress.at(-1)).toEqual({ done: result.total, total: result.total });

    const replayed = await snapshot();
    expect(replayed.redis).toEqual(liveState.redis);
    for (const t of ANALYTICS_TABLE_NAMES) expect(replayed.tables[t], t).toEqual(liveState.tables[t]);

    // The replay's consumer groups are gone; the live groups are untouched.
    const groups = await streams.withAdmin(async (admin) => admin.listGroups());
    expect(groups.some((g) => g.includes('replay-'))).toBe(false);
    expect(groups).toContain(`${config.topicPrefix}processors.features`);
  });
});
