import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { featureKeys, predictionKey } from '../common/keyspace.ts';
import { readRealtimeFeatures } from '../featurizer/realtime.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { caughtUp, cleanupProcessorsTest, count, dumpRedis, example, feedback, labelAdded, prediction, tableRows } from './processors-support.ts';
import { testStreamsRetrying } from './processors-support.ts';

const config = testConfig();
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
const client = 'acme';
const db = config.clickhouseDatabase;
const p = config.redisPrefix;

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
  procs = await startProcessors(config, { only: ['features', 'analytics'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  // With clients of its own: the processors' are closed by now.
  await cleanupProcessorsTest(config, streams);
});

describe('feature processor', () => {
  const t0 = Date.UTC(2026, 10, 1, 12);
  const day = 24 * 3600 * 1000;
  const ex = [
    example(client, 'Network', { occurredAt: t0, metadata: { requester: 'ann', channel: 'email' } }),
    example(client, 'Network', { occurredAt: t0 + 1000, metadata: { requester: 'ann' } }),
    example(client, 'Hardware', { occurredAt: t0 + 2000, metadata: { requester: 'ann', channel: 'email' } }),
    // a week later: ann's history has decayed by half
    example(client, 'Hardware', { occurredAt: t0 + 7 * day, metadata: { requester: 'ann' } }),
    example(client, 'Hardware', { occurredAt: t0 + 7 * day + 1, metadata: { requester: 'bob' }, source: 'DEFINITION' }),
  ];

  it('projects labels, counts, quality buckets and predictions into Redis, with the features each example saw in ClickHouse', async () => {
    await streams.producer.sendAll([
      { name: 'LabelSetChanged', value: labelAdded(client, 'Network', { occurredAt: t0 - 10 }) },
      { name: 'LabelSetChanged', value: labelAdded(client, 'Hardware', { occurredAt: t0 - 5 }) },
      { name: 'LabelSetChanged', value: labelAdded(client, 'Old', { occurredAt: t0 - 4 }) },
      { name: 'LabelSetChanged', value: labelAdded(client, 'Old', { occurredAt: t0 - 3, change: 'REMOVED' }) },
    ]);
    for (const e of ex) await streams.producer.send('LabeledExample', e);
    await streams.producer.send('PredictionMade', prediction(client, 'r1', 'Network', { occurredAt: t0 + 3000 }));
    await streams.producer.send('PredictionFeedback', feedback(client, 'r1', 'ACCEPTED', null, { occurredAt: t0 + 4000 }));

    await waitFor('5 examples in ClickHouse', async () => (await count(procs.clickhouse, db, 'examples')) === 5);
    await waitFor('labels and feedback projected', async () => {
      const c = await procs.redis.hgetall(featureKeys.counts(p, client));
      return c.label_changes === '4' && c.feedback === '1' && c.predictions === '1';
    });

    const counts = await procs.redis.hgetall(featureKeys.counts(p, client));
    expect(counts).toMatchObject({ examples: '5', 'label:Network': '2', 'label:Hardware': '3', 'source:DEFINITION': '1', 'source:ASSIGNMENT': '4' });
    expect(Number(counts.last_activity_ms)).toBe(t0 + 7 * day + 1);
    expect(Object.keys(await procs.redis.hgetall(featureKeys.labels(p, client))).sort()).toEqual(['Hardware', 'Network']);
    expect(await procs.redis.hgetall(featureKeys.quality(p, client, t0 + 4000))).toEqual({ predictions: '1', 'variant:LIVE': '1', 'outcome:ACCEPTED': '1' });
    const stored = await procs.redis.hgetall(predictionKey(p, client, 'r1'));
    expect({ label: stored.l, text: stored.text, metadata: JSON.parse(stored.md!) }).toMatchObject({ label: 'Network', text: 'request r1', metadata: { requester: 'ann' } });

    const rows = await tableRows(procs.clickhouse, db, 'examples');
    const features = (id: string) => JSON.parse(rows.find((r) => r.event_id === id)!.features as string) as Record<string, number>;
    // The first example saw nothing (its own label must not leak into its features).
    expect(features(ex[0]!.eventId)).toEqual({});
    expect(features(ex[1]!.eventId)).toEqual({ 'requester.log_count': expect.closeTo(Math.log1p(1), 4), 'requester.share:Network': 1 });
    expect(features(ex[2]!.eventId)).toMatchObject({ 'requester.share:Network': 1, 'channel.share:Network': 1 });
    // A week later: ann's 3 examples weigh ~1.5; shares are unchanged by decay.
    const f3 = features(ex[3]!.eventId);
    expect(f3['requester.share:Network']).toBeCloseTo(2 / 3, 5);
    expect(f3['requester.share:Hardware']).toBeCloseTo(1 / 3, 5);
    expect(f3['requester.log_count']).toBeCloseTo(Math.log1p(1.5), 3);
    expect(features(ex[4]!.eventId)).toEqual({});

    // The server reads the same numbers the same way (at the same instant).
    const served = await readRealtimeFeatures(procs.redis, p, client, { requester: 'ann' }, { timeoutMs: 1000, nowMs: t0 + 7 * day });
    expect(served.defaulted).toBe(false);
    // ann now: Network 2 + Hardware 1 a week ago (each worth 1/2 today), Hardware 1 today.
    expect(served.features['requester.share:Network']).toBeCloseTo(1 / 2.5, 5);
    expect(served.features['requester.share:Hardware']).toBeCloseTo(1.5 / 2.5, 5);
    expect(served.features['requester.log_count']).toBeCloseTo(Math.log1p(2.5), 3);
  });

  it('never counts a redelivered event twice: duplicates on the log and a full re-read from offset 0', async () => {
    const before = await dumpRedis(procs.redis, p);
    const rowsBefore = await tableRows(procs.clickhouse, db, 'examples');
    // the producer's at-least-once duplicates (same eventId, new offset)
    for (const e of ex.slice(0, 3)) await streams.producer.send('LabeledExample', e);
    // and a second consumer group that re-reads the whole log into the same Redis and database
    const again = await startProcessors(config, { only: ['features'], groupPrefix: 'reread', waitForAssignment: true });
    try {
      await waitFor('the re-read group caught up', () => caughtUp(streams, 'reread.features', FEATURE_TOPICS), 30_000, 200);
      await waitFor('the live group caught up', () => caughtUp(streams, 'processors.features', FEATURE_TOPICS), 30_000, 200);
    } finally {
      await again.stop();
    }
    // Quality and prediction state, counts, entity histories: byte for byte the same.
    expect(await dumpRedis(procs.redis, p)).toEqual(before);
    // ClickHouse: duplicates collapse; each example keeps the features it saw the first time.
    const rowsAfter = await tableRows(procs.clickhouse, db, 'examples');
    const strip = (rows: Array<Record<string, unknown>>) => rows.map(({ kafka_offset: _o, kafka_partition: _p, ...r }) => r);
    expect(strip(rowsAfter)).toEqual(strip(rowsBefore));
  });
});
