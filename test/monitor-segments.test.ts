import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { createClickHouse } from '../common/clickhouse.ts';
import { keyPattern } from '../common/keyspace.ts';
import { dayOf, lengthSegment, readSegmentQuality, segmentsOf } from '../models/quality.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import type { PredictionFeedback, PredictionMade, QualityAlert } from '../schemas/events.ts';
import type { AnyEvent } from '../streams/codec.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { collect, DAY } from './monitor-support.ts';
import { dropDatabase, feedback, prediction } from './processors-support.ts';

/**
 * Per-segment quality: a segment made worse on purpose raises exactly one SEGMENT_GAP, a balanced
 * client none; week-over-week drops per segment; the CLI and the documented ClickHouse query agree.
 */
const config = testConfig({
  EDDY_MONITOR_SEGMENT_FIELDS: 'channel,department', EDDY_MONITOR_LENGTH_BUCKETS: '40,160',
  EDDY_MONITOR_SEGMENT_GAP_PCT: '20', EDDY_MONITOR_SEGMENT_MIN_SUPPORT: '20', EDDY_MONITOR_MIN_SUPPORT: '1000', EDDY_ANALYTICS_BATCH_MS: '50',
});
const ch = createClickHouse(config);
const redis = new Redis();
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
let alerts: AnyEvent[];
const now = Date.now();

/** `n` judged predictions of one segment: `rightEvery` of every 10 are accepted, the rest reassigned. */
function judgedIn(clientId: string, at: number, n: number, channel: string, rightOf10: number, department = 'it'): AnyEvent[] {
  const out: AnyEvent[] = [];
  for (let i = 0; i < n; i++) {
    const requestId = randomUUID();
    const label = ['Network', 'Hardware'][i % 2]!;
    const p: PredictionMade = prediction(clientId, requestId, label, { occurredAt: at + i, text: `request number ${i} about something`, metadata: { channel, department } });
    const f: PredictionFeedback = i % 10 < rightOf10
      ? feedback(clientId, requestId, 'ACCEPTED', null, { occurredAt: at + i + 1 })
      : feedback(clientId, requestId, 'REASSIGNED', label === 'Network' ? 'Hardware' : 'Network', { occurredAt: at + i + 1 });
    out.push({ name: 'PredictionMade', value: p }, { name: 'PredictionFeedback', value: f });
  }
  return out;
}

/** Two streams of events interleaved, so no prefix of the log favours one segment. */
const interleave = (a: AnyEvent[], b: AnyEvent[]) => a.flatMap((e, i) => (b[i] ? [e, b[i]!] : [e]));

const judgedCount = async (clientId: string) => Number((await redis.hget(`${config.redisPrefix}:{${clientId}}:m:s`, 'judged')) ?? 0);

beforeAll(async () => {
  streams = await testStreams(config);
  alerts = await collect(streams, ['alerts']);
  procs = await startProcessors(config, { only: ['monitor', 'analytics'], waitForAssignment: true });
  // worse-co: last week both channels 90% right; this week chat drops to 40% while email stays at 90%.
  // balanced-co: both channels 80% right this week.
  await streams.producer.sendAll([
    ...interleave(judgedIn('worse-co', now - 10 * DAY, 30, 'email', 9), judgedIn('worse-co', now - 10 * DAY + 100, 30, 'chat', 9)),
    ...interleave(judgedIn('worse-co', now - 2 * DAY, 30, 'email', 9, 'hr'), judgedIn('worse-co', now - 2 * DAY + 100, 30, 'Chat', 4, 'hr')),
    ...interleave(judgedIn('balanced-co', now - 2 * DAY, 30, 'email', 8), judgedIn('balanced-co', now - 2 * DAY + 100, 30, 'chat', 8)),
  ]);
  await waitFor('every judgement counted', async () => (await judgedCount('worse-co')) === 120 && (await judgedCount('balanced-co')) === 60, 30_000);
  expect(await judgedCount('worse-co')).toBe(120);
}, 120_000);

afterAll(async () => {
  await procs?.stop();
  await streams?.cleanup();
  await dropDatabase(ch, config.clickhouseDatabase).catch(() => undefined);
  await ch.close();
  const keys = await redis.keys(keyPattern(config.redisPrefix));
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
});

describe('segments', () => {
  it('names a request by its configured metadata values and its length', () => {
    const rules = { fields: ['channel', 'department'], lengthBuckets: [40, 160] };
    expect(segmentsOf('short one', { channel: ' Email ', requester: 'ann' }, rules)).toEqual(['channel=email', 'length=0-39']);
    expect(segmentsOf('x'.repeat(40), { department: 'HR' }, rules)).toEqual(['department=hr', 'length=40-159']);
    expect(lengthSegment(160, [40, 160])).toBe('length=160+');
  });
});

describe('segment quality in the monitor', () => {
  it('raises exactly one SEGMENT_GAP for the segment made worse, and none for a balanced client', async () => {
    const gap = await waitFor('the gap alert', () => alerts.find((a) => a.name === 'QualityAlert' && a.value.kind === 'SEGMENT_GAP'), 20_000);
    // More of the same: the monitor evaluates the client again, the episode is open, no second alert.
    await streams.producer.sendAll(judgedIn('worse-co', now - 2 * DAY + 500, 10, 'chat', 4, 'hr'));
    await waitFor('the further judgements counted', async () => (await judgedCount('worse-co')) === 130);
    // And a marker through the same consumer, so that anything the monitor sent is in by now.
    await streams.producer.sendAll(judgedIn('marker-co', now, 1, 'email', 10));
    await waitFor('the marker judged', async () => (await judgedCount('marker-co')) === 1);
    const gaps = alerts.filter((a) => a.name === 'QualityAlert' && a.value.kind === 'SEGMENT_GAP').map((a) => a.value as QualityAlert);
    expect(gaps).toHaveLength(1);
    expect(gap.value).toMatchObject({ clientId: 'worse-co', segment: 'channel=chat', metric: 'accuracy', support: 30, window: '7d' });
    const g = gap.value as QualityAlert;
    expect(g.currentValue).toBeCloseTo(0.4, 9);
    expect(g.previousValue).toBeCloseTo(0.65, 9);
    expect(g.dropPercent).toBeCloseTo((100 * 0.25) / 0.65, 6);
    expect(await redis.hget(`${config.redisPrefix}:{worse-co}:m:s`, 'segaps')).toContain('channel=chat');
  });

  it('reports P/R/F1 and accuracy per segment, the gap to the overall figure, and week-over-week drops', async () => {
    const { overall, segments } = await readSegmentQuality(redis, config.redisPrefix, 'worse-co', dayOf(now));
    // This week: email 27 of 30 kept, chat 16 of 40.
    expect(overall.accuracy).toBeCloseTo(43 / 70, 9);
    const bySegment = Object.fromEntries(segments.map((s) => [s.segment, s]));
    expect(Object.keys(bySegment).sort()).toEqual(['channel=chat', 'channel=email', 'department=hr', 'length=0-39']);
    expect(segments[0]!.segment).toBe('channel=chat');
    expect(bySegment['channel=chat']).toMatchObject({ field: 'channel', value: 'chat', support: 40, previousSupport: 30 });
    expect(bySegment['channel=chat']!.gapPercent).toBeCloseTo((100 * (43 / 70 - 0.4)) / (43 / 70), 6);
    expect(bySegment['channel=chat']!.accuracy).toBeCloseTo(0.4, 9);
    expect(bySegment['channel=chat']!.previousAccuracy).toBeCloseTo(0.9, 9);
    expect(bySegment['channel=chat']!.dropPercent).toBeCloseTo((100 * 0.5) / 0.9, 6);
    expect(bySegment['channel=email']!.dropPercent).toBeCloseTo(0, 9);
    expect(bySegment['channel=email']!.gapPercent).toBeLessThan(0);
    // A department seen only this week has no previous figure (not a 100% drop).
    expect(bySegment['department=hr']).toMatchObject({ previousAccuracy: null, dropPercent: null });
    for (const s of segments) for (const m of ['precision', 'recall', 'f1'] as const) expect(s[m]).toBeGreaterThan(0);
  });

  it('shows the segments in the CLI', async () => {
    const env = { ...process.env, EDDY_TOPIC_PREFIX: config.topicPrefix, EDDY_REDIS_PREFIX: config.redisPrefix, EDDY_LOG_LEVEL: 'warn' };
    const out = await new Promise<string>((resolve, reject) => execFile(process.execPath, ['bin/eddy.mjs', 'quality', 'worse-co'], { env, encoding: 'utf8' },
      (err, stdout, stderr) => (err ? reject(new Error(stderr || String(err))) : resolve(stdout))));
    expect(out).toMatch(/SEGMENT \(7 DAYS\)/);
    expect(out).toMatch(/channel=chat\s+0\.\d{3}\s+0\.\d{3}\s+0\.\d{3}\s+0\.400\s+40\s+-34\.9%\s+-55\.6%/);
    expect(out).toMatch(/open segment gaps: channel=chat/);
    expect(out).toMatch(/department=hr\s.*\s—\s*$/m);
  });

  it('answers the same figures from ClickHouse with the documented query', async () => {
    const doc = fs.readFileSync('docs/monitoring.md', 'utf8');
    const query = /<!-- segment-query -->\s*```sql\n([\s\S]*?)```/.exec(doc)![1]!
      .replaceAll('eddy.', `${config.clickhouseDatabase}.`).replaceAll("'acme'", "'worse-co'");
    type Row = { segment: string; judged: string; accuracy: number };
    const rows = await waitFor('every judgement in ClickHouse', async () => {
      const r = await (await ch.query({ query, format: 'JSONEachRow' })).json<Row>();
      return r.find((x) => x.segment === 'channel=chat' && Number(x.judged) === 40) && r.length === 3 ? r : undefined;
    }, 30_000);
    const { segments } = await readSegmentQuality(redis, config.redisPrefix, 'worse-co', dayOf(now));
    for (const row of rows) {
      const s = segments.find((x) => x.segment === row.segment)!;
      expect(Number(row.judged), row.segment).toBe(s.support);
      expect(row.accuracy, row.segment).toBeCloseTo(s.accuracy, 9);
    }
    expect(rows.map((r) => r.segment)).toEqual(['channel=chat', 'length=0-39', 'channel=email']);
  });
});
