import { spawnSync } from 'node:child_process';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { MONITOR_TOPICS, MonitorProcessor, monitorOptions } from '../processors/monitor/processor.ts';
import { isRetriable } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import type { EventRecord } from '../streams/consumer.ts';
import { biasOf, findDrops, jensenShannon, qualityOf } from '../models/quality.ts';
import { monitorKeys } from '../common/keyspace.ts';
import type { AnyEvent } from '../streams/codec.ts';
import type { QualityAlert, RetrainRequested } from '../schemas/events.ts';
import { caughtUp, deleteRedisPrefix, example } from './processors-support.ts';
import { collect, DAY, judged } from './monitor-support.ts';

describe('quality arithmetic (pure)', () => {
  it('computes per-label and macro precision, recall and F1 from judgement counters', () => {
    // A: 8 right, 2 wrong (truly B); B: 5 right, 1 rejected; nothing truly A was predicted B.
    const q = qualityOf({ n: 16, correct: 13, rejected: 1, 'tp:A': 8, 'fp:A': 2, 'fpk:A': 2, 'fn:B': 2, 'tp:B': 5, 'fp:B': 1, 'pred:A': 10, 'pred:B': 6, 'obs:A': 8, 'obs:B': 7 });
    const a = q.labels.find((l) => l.label === 'A')!;
    const b = q.labels.find((l) => l.label === 'B')!;
    expect(a.precision).toBeCloseTo(0.8);
    expect(a.recall).toBeCloseTo(1);
    expect(b.precision).toBeCloseTo(5 / 6);
    expect(b.recall).toBeCloseTo(5 / 7);
    expect(q.precision).toBeCloseTo((0.8 + 5 / 6) / 2);
    expect(q.accuracy).toBeCloseTo(13 / 16);
    expect(q.f1).toBeCloseTo((a.f1 + b.f1) / 2);
  });

  it('reports the worst drop first and nothing below the support or the threshold', () => {
    const good = qualityOf({ n: 40, correct: 40, 'tp:A': 20, 'tp:B': 20, 'pred:A': 20, 'pred:B': 20, 'obs:A': 20, 'obs:B': 20 });
    const bad = qualityOf({ n: 40, correct: 30, 'tp:A': 20, 'tp:B': 10, 'fp:A': 10, 'fpk:A': 10, 'fn:B': 10, 'pred:A': 30, 'pred:B': 10, 'obs:A': 20, 'obs:B': 20 });
    const drops = findDrops(bad, good, { dropPct: 10, minSupport: 20 });
    expect(drops[0]).toMatchObject({ metric: 'recall', label: 'B' });
    expect(drops[0]!.dropPercent).toBeCloseTo(50);
    expect(findDrops(bad, good, { dropPct: 60, minSupport: 20 })).toEqual([]);
    expect(findDrops(bad, good, { dropPct: 10, minSupport: 41 })).toEqual([]);
  });

  it('measures bias with Jensen-Shannon divergence: 0 for equal distributions, 1 for disjoint, larger when skewed', () => {
    expect(jensenShannon([0.5, 0.5], [0.5, 0.5])).toBeCloseTo(0);
    expect(jensenShannon([1, 0], [0, 1])).toBeCloseTo(1);
    const skewed = biasOf({ 'tp:A': 30, 'fpk:A': 50, 'tp:B': 10, 'tp:C': 10, 'obs:A': 30, 'obs:B': 35, 'obs:C': 35 });
    const balanced = biasOf({ 'tp:A': 25, 'fpk:A': 8, 'tp:B': 25, 'fpk:B': 8, 'tp:C': 25, 'fpk:C': 9, 'obs:A': 33, 'obs:B': 33, 'obs:C': 34 });
    expect(skewed.overPredicted).toBe('A');
    expect(skewed.divergence).toBeGreaterThan(0.1);
    expect(balanced.divergence).toBeLessThan(0.01);
  });
});

const config = testConfig({
  EDDY_MONITOR_DROP_PCT: '10', EDDY_MONITOR_MIN_SUPPORT: '20', EDDY_MONITOR_AUTO_ROLLBACK: 'false',
  EDDY_TRIGGER_MIN_LABELS: '2', EDDY_TRIGGER_COOLDOWN_MS: '0',
});
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
let seen: Awaited<ReturnType<typeof collect>>;
const redis = new Redis(config.redisUrl);
const client = 'acme';
const labels = ['Network', 'Hardware', 'Access'];
const now = Date.now();
/** The monitor handled everything sent, and what it emitted was read (it produces before it commits). */
const monitorDone = async () => (await caughtUp(streams, 'processors.monitor', MONITOR_TOPICS)) && seen.drained();

beforeAll(async () => {
  streams = await testStreams(config);
  seen = await collect(streams, ['alerts', 'retrain-requests']);
  procs = await startProcessors(config, { only: ['monitor', 'triggers'], waitForAssignment: true });
  // The retrain policy needs the client's labels to have examples before it asks for anything.
  await streams.producer.sendAll(labels.map((l) => ({ name: 'LabeledExample', value: example(client, l, { occurredAt: now - 20 * DAY }) }) as AnyEvent));
});

afterAll(async () => {
  await procs?.stop();
  await streams?.cleanup();
  await deleteRedisPrefix(redis, config.redisPrefix);
  redis.disconnect();
});

const alerts = () => seen.filter((e) => e.name === 'QualityAlert').map((e) => e.value as QualityAlert);
const retrains = () => seen.filter((e) => e.name === 'RetrainRequested').map((e) => e.value as RetrainRequested);

describe('quality monitor on the real stack', () => {
  it('raises exactly one QUALITY_DROP alert with the right figures, and the trigger requests one retrain', async () => {
    // Last week: 60 judged predictions, all right.
    await streams.producer.sendAll(judged(client, 'v1', now - 10 * DAY, 60, (i) => labels[i % 3]!, (i) => labels[i % 3]!));
    await waitFor('the monitor to catch up with last week', monitorDone, 30_000);
    expect(alerts()).toEqual([]);

    // This week: 60 more, 14 of 20 right per label; each label's errors go to the next label, so
    // every label's precision = recall = F1 = 0.7, and so are the macro averages: a 30% drop.
    const thisWeek = judged(client, 'v1', now - DAY, 60, (i) => labels[i % 3]!, (i) => (Math.floor(i / 3) < 14 ? labels[i % 3]! : labels[(i + 1) % 3]!));
    await streams.producer.sendAll(thisWeek);
    const [alert] = await waitFor('a quality alert', () => (alerts().length > 0 ? alerts() : undefined), 30_000);
    expect(alert).toMatchObject({ clientId: client, kind: 'QUALITY_DROP', metric: 'precision', label: null, modelVersion: null, support: 60, window: '7d' });
    expect(alert!.currentValue).toBeCloseTo(0.7, 6);
    expect(alert!.previousValue).toBeCloseTo(1, 6);
    expect(alert!.dropPercent).toBeCloseTo(30, 4);

    // The same drop continues (more bad judgements today) and the same events are redelivered:
    // neither opens a second alert, and redelivered judgements are not counted again.
    await streams.producer.sendAll(thisWeek);
    await streams.producer.sendAll(judged(client, 'v1', now, 30, (i) => labels[i % 3]!, (i) => (i % 2 ? labels[i % 3]! : labels[(i + 1) % 3]!)));
    await waitFor('the monitor to catch up', monitorDone, 30_000);
    expect(await redis.hget(monitorKeys.summary(config.redisPrefix, client), 'judged')).toBe('150');
    expect(alerts().filter((a) => a.kind === 'QUALITY_DROP')).toHaveLength(1);

    const request = await waitFor('the retrain request', () => retrains().find((r) => r.reason === 'QUALITY_DROP'), 30_000);
    expect(request.clientId).toBe(client);
    expect(request.detail).toContain('precision fell 30.0%');
    await waitFor('the triggers to catch up, and their requests read', async () => (await caughtUp(streams, 'processors.triggers', ['alerts'])) && seen.drained(), 30_000);
    expect(retrains().filter((r) => r.reason === 'QUALITY_DROP')).toHaveLength(1);
  });

  it('shows the same figures to operators: eddy quality <client> --json', () => {
    const r = spawnSync(process.execPath, ['bin/eddy.mjs', 'quality', client, '--json'], { encoding: 'utf8', env: { ...process.env, EDDY_REDIS_PREFIX: config.redisPrefix }, timeout: 30_000 });
    expect(r.status, r.stderr).toBe(0);
    const d = JSON.parse(r.stdout) as { quality: { support: number }; labels: Array<{ label: string }>; events: Array<{ type: string }> };
    // This week (acme): 60 + 30 judged; the 7 days before are not in the window.
    expect(d.quality.support).toBe(90);
    expect(d.labels.map((l) => l.label)).toEqual([...labels].sort());
    expect(d.events.map((e) => e.type)).toContain('QualityAlert');
  });

  it('joins feedback that arrives before its prediction, and keeps a per-version window', async () => {
    const late = judged('late-co', 'v7', now, 25, () => 'A', (i) => (i < 20 ? 'A' : 'B'));
    const predictions = late.filter((e) => e.name === 'PredictionMade');
    const feedbackFirst = late.filter((e) => e.name === 'PredictionFeedback');
    await streams.producer.sendAll(feedbackFirst);
    await waitFor('the monitor to park the feedback', monitorDone, 30_000);
    expect(await redis.hget(monitorKeys.summary(config.redisPrefix, 'late-co'), 'judged')).toBeNull();
    await streams.producer.sendAll(predictions);
    await waitFor('the monitor to join', async () => (await redis.hget(monitorKeys.summary(config.redisPrefix, 'late-co'), 'judged')) === '25', 30_000);
    const day = Math.floor(now / DAY);
    const bucket = await redis.hgetall(monitorKeys.bucket(config.redisPrefix, 'late-co', 'v7', day));
    expect(bucket).toMatchObject({ n: '25', correct: '20', 'tp:A': '20', 'fp:A': '5', 'fn:B': '5' });
  });

  it('pauses work with a retriable error (nothing committed, nothing dropped) while Redis is down', async () => {
    const down = new Redis({ port: 1, lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: () => null });
    down.on('error', () => undefined);
    const processor = new MonitorProcessor(down, monitorOptions(config));
    const [p, f] = judged(client, 'v1', now, 1, () => 'Network', () => 'Network');
    const records: EventRecord[] = [p!, f!].map((event, i) => ({ event, topic: i ? 'feedback' : 'predictions', partition: 0, offset: String(i), key: client, timestamp: now }));
    const ctx = { heartbeat: async () => undefined, isRunning: () => true, isAssigned: () => true, logger: createLogger('test', 'silent') };
    const error = await processor.handle(records, ctx).then(() => undefined, (e: unknown) => e);
    expect(error).toBeDefined();
    expect(isRetriable(error)).toBe(true);
    expect((error as { code: string }).code).toBe('REDIS_UNAVAILABLE');
    down.disconnect();
  });
});
