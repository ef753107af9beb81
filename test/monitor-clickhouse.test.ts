import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClickHouse } from '../common/clickhouse.ts';
import { migrateQualityViews } from '../processors/monitor/clickhouse.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { dropDatabase, feedback, prediction } from './processors-support.ts';
import { judged } from './monitor-support.ts';

const config = testConfig({ EDDY_ANALYTICS_BATCH_MS: '50' });
const ch = createClickHouse(config);
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;

beforeAll(async () => {
  streams = await testStreams(config);
  procs = await startProcessors(config, { only: ['analytics'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  await streams?.cleanup();
  await dropDatabase(ch, config.clickhouseDatabase);
  await ch.close();
});

type Row = { model_version: string; label: string; tp: string; fp: string; fn: string; precision: number; recall: number; f1: number };

describe('quality views in ClickHouse', () => {
  it('join predictions with their feedback into per-label daily precision, recall and F1 per version', async () => {
    // startProcessors created the views with the analytics tables; creating them again is harmless.
    await migrateQualityViews(ch, config.clickhouseDatabase);
    const now = Date.UTC(2026, 10, 20, 12);
    // v1: 10 predictions of A, 8 accepted, 2 reassigned to B; v2: 5 of B, all accepted.
    const events = [
      ...judged('views-co', 'v1', now, 10, () => 'A', (i) => (i < 8 ? 'A' : 'B')),
      ...judged('views-co', 'v2', now + 60_000, 5, () => 'B', () => 'B'),
    ];
    // A rejected prediction (wrong, right label unknown), a shadow answer and a second feedback on the same request.
    const p = prediction('views-co', 'rq-rejected', 'B', { occurredAt: now + 120_000, modelVersion: 'v2' });
    const shadow = prediction('views-co', 'rq-rejected', 'A', { occurredAt: now + 120_000, modelVersion: 'v3', variant: 'SHADOW' });
    const f = feedback('views-co', 'rq-rejected', 'REJECTED', null, { occurredAt: now + 130_000 });
    const later = feedback('views-co', 'rq-rejected', 'ACCEPTED', null, { occurredAt: now + 140_000 });
    await streams.producer.sendAll([...events, { name: 'PredictionMade', value: p }, { name: 'PredictionMade', value: shadow }, { name: 'PredictionFeedback', value: f }, { name: 'PredictionFeedback', value: later }]);
    const rows = await waitFor('the quality rows', async () => {
      const rs = await ch.query({ query: `SELECT model_version, label, tp, fp, fn, precision, recall, f1 FROM ${config.clickhouseDatabase}.quality_daily WHERE client_id = 'views-co' ORDER BY model_version, label`, format: 'JSONEachRow' });
      const r = await rs.json<Row>();
      const total = r.reduce((s, x) => s + Number(x.tp) + Number(x.fp), 0);
      return total === 16 ? r : undefined;
    }, 30_000);
    const at = (v: string, l: string) => rows.find((r) => r.model_version === v && r.label === l)!;
    expect(at('v1', 'A')).toMatchObject({ tp: '8', fp: '2', fn: '0' });
    expect(at('v1', 'A').precision).toBeCloseTo(0.8);
    expect(at('v1', 'B')).toMatchObject({ tp: '0', fp: '0', fn: '2' });
    expect(at('v2', 'B')).toMatchObject({ tp: '5', fp: '1', fn: '0' });
    expect(at('v2', 'B').precision).toBeCloseTo(5 / 6);
    expect(at('v2', 'B').f1).toBeCloseTo((2 * (5 / 6) * 1) / (5 / 6 + 1));
    expect(rows.some((r) => r.model_version === 'v3')).toBe(false);
  });
});
