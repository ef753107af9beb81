import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsModelStore } from '../models/store.ts';
import { identifier, quoteString } from '../processors/analytics/clickhouse.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import type { LabeledExample, LabelSetChanged, ModelPublished, ModelRejected } from '../schemas/events.ts';
import type { AnyEvent, ConsumerRunner } from '../streams/index.ts';
import { startTrainer } from '../trainer/consumer.ts';
import { trainerSettings, type TrainerSettings } from '../trainer/pipeline.ts';
import { testConfig, testStreams, uniqueName, waitFor } from './helpers.ts';
import { deleteRedisPrefix, dropDatabase } from './processors-support.ts';
import { generateClient } from './quality/workload.ts';

/**
 * The trainer compares against the version that is LIVE per the models topic, not the newest in
 * the store: after a ModelRolledBack v2 -> v1, the next training's gate, warm start and retention
 * use v1. Real stack: processors fill ClickHouse, the retrain consumer follows the models topic.
 */
const storeDir = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-trainer-live-'));
const config = testConfig({ EDDY_MODEL_STORE_DIR: storeDir });
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
let reader: ConsumerRunner;
const modelEvents: AnyEvent[] = [];
// keepVersions 1: retention keeps only the newest plus whatever the live view says to keep.
const good: TrainerSettings = { ...trainerSettings(config.trainer, { epochs: 6 }), keepVersions: 1 };
// Learning rate 0 and no warm start: every weight stays zero, one label for everything. 600
// examples give ~60 test examples, enough for the gate's significance test to refuse it surely.
const worse: TrainerSettings = { ...good, warmStart: false, train: { ...good.train, learningRate: 0 } };

const clientId = uniqueName('client');
const workload = generateClient({ clientId, examples: 600, labels: 4, noise: 0, seed: 7 });
const store = new FsModelStore(storeDir);

async function withTrainer<T>(settings: TrainerSettings, fn: () => Promise<T>): Promise<T> {
  const trainer = await startTrainer(streams, config, { settings });
  try {
    return await fn();
  } finally {
    await trainer.stop();
  }
}

async function retrain(): Promise<ModelPublished | ModelRejected> {
  const eventId = randomUUID();
  await streams.producer.send('RetrainRequested', { eventId, clientId, occurredAt: Date.now(), reason: 'MANUAL', detail: 'test', requestedBy: 'test', dataAsOf: null });
  const event = await waitFor(`the trainer's answer to ${eventId}`, () =>
    modelEvents.find((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && e.value.retrainEventId === eventId), 90_000);
  return event.value as ModelPublished | ModelRejected;
}

async function rowsIn(table: 'examples' | 'label_changes'): Promise<number> {
  const rs = await procs.clickhouse.query({
    query: `SELECT uniqExact(event_id) AS n FROM ${identifier(config.clickhouseDatabase)}.${table} WHERE client_id = ${quoteString(clientId)}`,
    format: 'JSONEachRow',
  });
  return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
}

beforeAll(async () => {
  streams = await testStreams(config);
  procs = await startProcessors(config, { only: ['features', 'analytics'], groupPrefix: 'processors', waitForAssignment: true });
  reader = streams.consumer({
    group: 'test-models-reader', topics: ['models'], fromBeginning: true,
    handler: { handle: async (records) => { modelEvents.push(...records.map((r) => r.event)); } },
  });
  await reader.start();
  const labels: AnyEvent[] = workload.labels.map((l) => {
    const value: LabelSetChanged = { eventId: randomUUID(), clientId, occurredAt: Date.now(), change: 'ADDED', label: l.name, previousLabel: null, description: l.description, keywords: l.keywords };
    return { name: 'LabelSetChanged', value };
  });
  const examples: AnyEvent[] = workload.examples.map((e) => {
    const value: LabeledExample = { eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId: e.exampleId, text: e.text, label: e.label, source: 'ASSIGNMENT', metadata: e.metadata, predictionId: null };
    return { name: 'LabeledExample', value };
  });
  await streams.producer.sendAll([...labels, ...examples]);
  await waitFor('examples in ClickHouse', async () => (await rowsIn('examples')) === workload.examples.length && (await rowsIn('label_changes')) === workload.labels.length, 60_000);
}, 180_000);

afterAll(async () => {
  await reader?.stop();
  if (procs) {
    await deleteRedisPrefix(procs.redis, config.redisPrefix);
    await dropDatabase(procs.clickhouse, config.clickhouseDatabase);
    await procs.stop();
  }
  await streams?.cleanup();
  await fs.rm(storeDir, { recursive: true, force: true });
});

describe('trainer compares against the live version from the models topic', () => {
  it('publishes v1 then v2, each replacing the one live before it (its own publish is seen before the next training)', async () => {
    const [first, second] = await withTrainer(good, async () => [await retrain(), await retrain()]);
    expect(first).toMatchObject({ modelVersion: 'v1', previousVersion: null });
    expect(second).toMatchObject({ modelVersion: 'v2', previousVersion: 'v1' });
    expect((await store.list(clientId)).map((r) => r.modelVersion)).toEqual(['v1', 'v2']);
  });

  it('after ModelRolledBack v2 -> v1, the gate compares against v1, warm start uses v1 and retention keeps v1', async () => {
    await streams.producer.send('ModelRolledBack', {
      eventId: randomUUID(), clientId, occurredAt: Date.now(), fromVersion: 'v2', toVersion: 'v1', actor: 'test', reason: 'v2 misroutes',
    });
    // A trainer started now catches up with the models topic (rollback included) before training.
    const rejected = await withTrainer(worse, () => retrain());
    expect(rejected).toMatchObject({ stage: 'GATE', reasons: ['WORSE_THAN_LIVE'], liveVersion: 'v1', candidateVersion: 'v3' });
    const v1 = (await store.list(clientId)).find((r) => r.modelVersion === 'v1')!;
    // The live figures are v1's, scored on the same test split it was published with.
    expect((rejected as ModelRejected).liveMetrics.macroF1).toBeCloseTo(v1.metrics.macroF1!, 10);
    expect((rejected as ModelRejected).detail).toContain('live v1');

    const published = await withTrainer(good, () => retrain());
    expect(published).toMatchObject({ modelVersion: 'v3', previousVersion: 'v1' });
    // Same data, same deterministic test split: the live figure is v1's own.
    expect((published as ModelPublished).metrics.liveMacroF1).toBeCloseTo(v1.metrics.macroF1!, 10);
    const refs = await store.list(clientId);
    expect(refs.find((r) => r.modelVersion === 'v3')!.parentVersion).toBe('v1');
    // keepVersions 1: the newest (v3) and the version live before it (v1); v2 was rolled back from.
    expect(refs.map((r) => r.modelVersion)).toEqual(['v1', 'v3']);
  });
});
