import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { ADDED_COLUMNS, ANALYTICS_TABLE_NAMES, analyticsDdl, migrateAnalytics } from '../processors/analytics/schema.ts';
import { ANALYTICS_TOPICS } from '../processors/analytics/processor.ts';
import { analyticsRow } from '../processors/analytics/rows.ts';
import type { AnyEvent } from '../streams/index.ts';
import { caughtUp, count, example, feedback, labelAdded, prediction, tableRows } from './processors-support.ts';
import { cleanupProcessorsTest, testStreamsRetrying } from './processors-support.ts';

const config = testConfig();
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
const db = config.clickhouseDatabase;
const c = 'acme';
const now = Date.now();

const events: AnyEvent[] = [
  { name: 'LabelSetChanged', value: labelAdded(c, 'Network') },
  { name: 'LabelSetChanged', value: labelAdded(c, 'Hardware') },
  { name: 'LabeledExample', value: example(c, 'Network', { exampleId: 'x1', occurredAt: now, metadata: { requester: 'ann' } }) },
  { name: 'LabeledExample', value: example(c, 'Hardware', { exampleId: 'x2', metadata: { requester: 'ann' } }) },
  { name: 'LabeledExample', value: example(c, 'Hardware', { exampleId: 'x1', occurredAt: now + 1000, source: 'REASSIGNMENT' }) },
  { name: 'PredictionRequested', value: { eventId: randomUUID(), clientId: c, occurredAt: now, requestId: 'r1', text: 'vpn down', metadata: {} } },
  { name: 'PredictionMade', value: prediction(c, 'r1', 'Network', { latencyMs: 2 }) },
  { name: 'PredictionMade', value: prediction(c, 'r2', 'Network', { latencyMs: 4, featuresDefaulted: true }) },
  { name: 'PredictionFeedback', value: feedback(c, 'r1', 'ACCEPTED') },
  { name: 'PredictionFeedback', value: feedback(c, 'r2', 'REASSIGNED', 'Hardware') },
  { name: 'RetrainRequested', value: { eventId: randomUUID(), clientId: c, occurredAt: now, reason: 'NEW_CLIENT', detail: '3 examples', requestedBy: 'trigger', dataAsOf: null } },
  {
    name: 'ModelPublished', value: {
      eventId: randomUUID(), clientId: c, occurredAt: now, modelVersion: 'v1', previousVersion: null, artifactUri: 'file:///m/v1', artifactSha256: 'ab'.repeat(32),
      featurizer: 'text@1+abc', labels: ['Hardware', 'Network'], metrics: { accuracy: 0.9 }, trainingExamples: 3, trainingDataSha256: 'cd'.repeat(32), backend: 'wasm', trainingMs: 12, retrainEventId: null, dataComplete: true, modelConfig: '', cvMacroF1: null, searched: false,
    },
  },
  {
    name: 'ModelRejected', value: {
      eventId: randomUUID(), clientId: c, occurredAt: now + 10, candidateVersion: 'v2', liveVersion: 'v1', stage: 'GATE', reasons: ['WORSE_THAN_LIVE'], detail: 'f1 0.7 < 0.8',
      candidateMetrics: { macroF1: 0.7 }, liveMetrics: { macroF1: 0.8 }, retrainEventId: null, dataComplete: true,
    },
  },
  { name: 'ModelPromoted', value: { eventId: randomUUID(), clientId: c, occurredAt: now + 20, modelVersion: 'v1', variant: 'CANARY', share: 0.1, pinned: false, actor: 'ops', reason: 'try' } },
  { name: 'ModelRolledBack', value: { eventId: randomUUID(), clientId: c, occurredAt: now + 30, fromVersion: 'v2', toVersion: 'v1', actor: 'monitor', reason: 'quality' } },
  {
    name: 'QualityAlert', value: {
      eventId: randomUUID(), clientId: c, occurredAt: now, kind: 'QUALITY_DROP', metric: 'f1', label: null, modelVersion: 'v1', currentValue: 0.6, previousValue: 0.8, dropPercent: 25, support: 120, window: '7d', segment: null,
    },
  },
  {
    name: 'DeadLetter', value: {
      eventId: randomUUID(), clientId: c, occurredAt: now, sourceTopic: 'x.examples', partition: 1, offset: 7, consumerGroup: 'g', errorCode: 'UNDECODABLE', reason: 'bad magic byte', key: Buffer.from(c), value: Buffer.from([0, 1, 2]),
    },
  },
];

const expected: Record<string, number> = {
  examples: 3, label_changes: 2, predictions: 2, prediction_requests: 1, feedback: 2, retrain_requests: 1, model_events: 4, alerts: 1, dead_letters: 1,
};

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
  procs = await startProcessors(config, { only: ['features', 'analytics'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  await cleanupProcessorsTest(config, streams);
});

describe('analytics processor', () => {
  it('migrations are idempotent and every statement is IF NOT EXISTS', async () => {
    await migrateAnalytics(procs.clickhouse, db);
    await migrateAnalytics(procs.clickhouse, db);
    expect(analyticsDdl(db).every((s) => /IF NOT EXISTS/.test(s))).toBe(true);
    expect(() => analyticsDdl('eddy; DROP TABLE x')).toThrow(/not a valid ClickHouse identifier/);
  });

  it('adds the columns a table made by an older build lacks, also when two processes migrate at once', async () => {
    const old = `${db}_old`;
    const q = (query: string) => procs.clickhouse.command({ query });
    const columns = async () => (await procs.clickhouse.query({ query: `DESCRIBE TABLE ${old}.alerts`, format: 'JSONEachRow' }).then((r) => r.json<{ name: string }>())).map((c) => c.name);
    try {
      // The alerts table as it was before ADDED_COLUMNS named `segment`.
      await q(`CREATE DATABASE IF NOT EXISTS ${old}`);
      const before = analyticsDdl(old).find((s) => s.includes(`${old}.alerts (`))!.replace(/\n\s*segment String,/, '');
      await q(before);
      expect(await columns()).not.toContain('segment');
      await Promise.all([migrateAnalytics(procs.clickhouse, old), migrateAnalytics(procs.clickhouse, old)]);
      expect(await columns()).toContain('segment');
      for (const { table, column } of ADDED_COLUMNS) {
        expect((await procs.clickhouse.query({ query: `DESCRIBE TABLE ${old}.${table}`, format: 'JSONEachRow' }).then((r) => r.json<{ name: string }>())).map((c) => c.name)).toContain(column);
      }
    } finally {
      await q(`DROP DATABASE IF EXISTS ${old}`);
    }
  });

  it('turns an event into its row: where it came from, then its columns, with defaults for the columns its type lacks', () => {
    const at = (event: AnyEvent) => analyticsRow({ event, topic: 'predictions', partition: 2, offset: '41', key: c, timestamp: now });
    const made = prediction(c, 'r9', 'Network', { latencyMs: 3, featuresDefaulted: true });
    const from = { event_id: made.eventId, client_id: c, occurred_at: Math.floor(made.occurredAt / 1000), occurred_at_ms: made.occurredAt, kafka_partition: 2, kafka_offset: 41 };
    const row = at({ name: 'PredictionMade', value: made });
    expect(row).toEqual({
      table: 'predictions',
      row: {
        ...from, request_id: 'r9', text: made.text, metadata: JSON.stringify(made.metadata), label: 'Network', score: made.scores[0]!.score,
        scores: JSON.stringify(made.scores), model_version: made.modelVersion ?? '', variant: made.variant, latency_ms: 3, channel: made.channel, features_defaulted: 1,
      },
    });
    expect(Object.keys(row!.row).slice(0, 6)).toEqual(Object.keys(from));
    const promoted = { eventId: 'p1', clientId: c, occurredAt: now, modelVersion: 'v3', variant: 'CANARY' as const, share: 0.2, pinned: true, actor: 'ops', reason: 'try' };
    expect(at({ name: 'ModelPromoted', value: promoted })).toEqual({
      table: 'model_events',
      row: {
        event_id: 'p1', client_id: c, occurred_at: Math.floor(now / 1000), occurred_at_ms: now, kafka_partition: 2, kafka_offset: 41,
        event_type: 'PROMOTED', model_version: 'v3', previous_version: '', variant: 'CANARY', share: 0.2, pinned: 1, stage: '', reasons: [], detail: 'try', actor: 'ops',
        artifact_uri: '', artifact_sha256: '', featurizer: '', labels: [], metrics: '{}', training_examples: 0, retrain_event_id: '',
      },
    });
  });

  it('writes every event of every topic into its table, and redelivery leaves no visible duplicate', async () => {
    await streams.producer.sendAll(events);
    for (const [table, n] of Object.entries(expected)) {
      await waitFor(`${n} rows in ${table}`, async () => (await count(procs.clickhouse, db, table)) === n);
    }
    expect(Object.keys(expected).sort()).toEqual([...ANALYTICS_TABLE_NAMES].sort());

    const models = await tableRows(procs.clickhouse, db, 'model_events');
    const byType = Object.fromEntries(models.map((m) => [m.event_type, m]));
    expect(byType.PUBLISHED).toMatchObject({ model_version: 'v1', labels: ['Hardware', 'Network'], training_examples: '3' });
    expect(JSON.parse(byType.PUBLISHED!.metrics as string)).toEqual({ accuracy: 0.9 });
    expect(byType.REJECTED).toMatchObject({ model_version: 'v2', stage: 'GATE', reasons: ['WORSE_THAN_LIVE'] });
    expect(byType.PROMOTED).toMatchObject({ variant: 'CANARY', share: 0.1 });
    expect(byType.ROLLED_BACK).toMatchObject({ model_version: 'v1', previous_version: 'v2' });
    const [dl] = await tableRows(procs.clickhouse, db, 'dead_letters');
    expect(dl).toMatchObject({ source_topic: 'x.examples', error_code: 'UNDECODABLE', message_key: c, message_value_base64: 'AAEC' });
    const [lc] = (await tableRows(procs.clickhouse, db, 'label_changes')).filter((r) => r.label === 'Network');
    expect(lc).toMatchObject({ change: 'ADDED', previous_label: '', keywords: ['network'] });

    // Redeliver everything (same eventIds): raw rows grow, deduplicated reads do not.
    const rawBefore = await count(procs.clickhouse, db, 'model_events', false);
    await streams.producer.sendAll(events);
    await waitFor('the duplicates were consumed', async () =>
      (await caughtUp(streams, 'processors.analytics', ANALYTICS_TOPICS)) && (await caughtUp(streams, 'processors.features', ['examples'])), 30_000, 200);
    expect(await count(procs.clickhouse, db, 'model_events', false)).toBe(rawBefore + 4);
    for (const [table, n] of Object.entries(expected)) expect(await count(procs.clickhouse, db, table)).toBe(n);
  });

  it('runs every example query of docs/analytics.md and the views answer correctly', async () => {
    const doc = fs.readFileSync(new URL('../docs/analytics.md', import.meta.url), 'utf8');
    const queries = [...doc.matchAll(/```sql\n([\s\S]*?)```/g)].map((m) => m[1]!.replace(/\beddy\./g, `${db}.`));
    expect(queries.length).toBeGreaterThanOrEqual(5);
    const results: Array<Array<Record<string, unknown>>> = [];
    for (const query of queries) {
      const rs = await procs.clickhouse.query({ query, format: 'JSONEachRow' });
      const rows = await rs.json<Record<string, unknown>>();
      expect(rows.length, query).toBeGreaterThan(0);
      results.push(rows);
    }
    const [volume, labels, history, confusions, latency, dead, training] = results;
    expect(volume).toEqual([expect.objectContaining({ examples: '3', predictions: '2', feedback: '2', accepted: '1', accuracy: 0.5 })]);
    expect(labels!.map((r) => [r.label, r.examples])).toEqual([['Hardware', '2'], ['Network', '1']]);
    expect(history!.map((r) => r.event_type)).toEqual(['PUBLISHED', 'REJECTED', 'PROMOTED', 'ROLLED_BACK']);
    expect(confusions).toEqual([{ predicted: 'Network', corrected_to: 'Hardware', n: '1' }]);
    expect(latency).toEqual([expect.objectContaining({ client_id: c, predictions: '2', defaulted_share: 0.5 })]);
    expect(dead).toEqual([{ source_topic: 'x.examples', error_code: 'UNDECODABLE', n: '1' }]);
    // x1 was reassigned to Hardware later: the latest label wins
    expect(training!.map((r) => [r.example_id, r.label])).toEqual([['x1', 'Hardware'], ['x2', 'Hardware']]);
  });
});
