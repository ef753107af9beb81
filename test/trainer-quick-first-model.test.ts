import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.ts';
import { FsModelStore } from '../models/store.ts';
import type { ModelPublished, ModelRejected } from '../schemas/events.ts';
import { loadTrainingSet } from '../trainer/dataset.ts';
import { trainClient, trainerSettings, type TrainerSettings } from '../trainer/pipeline.ts';
import type { SearchSettings } from '../trainer/search.ts';
import { uniqueName, waitFor } from './helpers.ts';
import { generateClient } from './quality/workload.ts';
import { TrainerTestStack } from './trainer-support.ts';

/**
 * A bulk import's first model (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES): published at once with
 * the default configuration, then the model search runs as the next version, answering the same
 * request and gated against the quick one. Real stack: processors fill ClickHouse, the retrain
 * consumer answers on the models topic.
 */
const stack = await TrainerTestStack.create('trainer-quick');
const { config, store } = stack;
// One configuration, not the default's (character n-grams): the searched version is recognisable
// by its configuration and its cross-validated score, and scores close enough to pass the gate.
const grid: SearchSettings = { folds: 3, grid: [{ kind: 'sparse-linear', params: { C: 10 }, charNgrams: [3] }] };
const settings: TrainerSettings = { ...trainerSettings(config.trainer), search: grid, quickFirstModelExamples: 500 };

const big = generateClient({ clientId: uniqueName('import'), examples: 600, labels: 4, noise: 0, seed: 5 });
const restarted = generateClient({ clientId: uniqueName('restarted'), examples: 600, labels: 4, noise: 0, seed: 6 });

beforeAll(async () => {
  await stack.start(big);
  await stack.start(restarted);
}, 180_000);

afterAll(() => stack.cleanup());

const answersTo = (retrainEventId: string) => stack.modelEvents
  .filter((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && e.value.retrainEventId === retrainEventId)
  .map((e) => e.value as ModelPublished | ModelRejected);

const request = async (clientId: string, eventId = randomUUID()) => {
  await stack.streams.producer.send('RetrainRequested', { eventId, clientId, occurredAt: Date.now(), reason: 'NEW_CLIENT', detail: 'test', requestedBy: 'test', dataAsOf: null });
  return eventId;
};

describe('the first model of a large client', () => {
  it('is published without the search, and the searched version follows for the same request', async () => {
    const answers = await stack.withTrainer(settings, async () => {
      const id = await request(big.clientId);
      return waitFor('two answers to one request', () => (answersTo(id).length >= 2 ? answersTo(id) : null), 90_000);
    });
    const [quick, searched] = answers as [ModelPublished, ModelPublished];
    expect(quick).toMatchObject({ modelVersion: 'v1', previousVersion: null, searched: false, cvMacroF1: null });
    expect(JSON.parse(quick.modelConfig)).toMatchObject({ kind: 'sparse-linear', charNgrams: [] });
    expect(quick.trainingExamples).toBeGreaterThanOrEqual(600);
    expect(searched).toMatchObject({ modelVersion: 'v2', previousVersion: 'v1', searched: true });
    expect(searched.cvMacroF1).toBeGreaterThan(0.5);
    expect(JSON.parse(searched.modelConfig)).toMatchObject({ charNgrams: [3] });
    expect((await store.list(big.clientId)).map((r) => r.modelVersion)).toEqual(['v1', 'v2']);
  }, 120_000);

  it('runs the search after a restart that came between the quick model and its search', async () => {
    // The state a trainer killed right after storing the quick model leaves: v1 in the store for
    // the request, the request not committed. The redelivered request re-announces v1, then searches.
    const id = randomUUID();
    const set = await loadTrainingSet(stack.clickhouse, config.clickhouseDatabase, restarted.clientId);
    const logger = createLogger('test', 'silent');
    const quick = await trainClient({ store, loadSet: async () => set, settings, logger }, restarted.clientId, { retrainEventId: id, liveVersion: null });
    expect(quick).toMatchObject({ kind: 'published', searchDeferred: true });
    const answers = await stack.withTrainer(settings, async () => {
      await request(restarted.clientId, id);
      return waitFor('the re-announced quick model and the searched version', () => (answersTo(id).length >= 2 ? answersTo(id) : null), 90_000);
    });
    expect(answers.map((a) => (a as ModelPublished).modelVersion)).toEqual(['v1', 'v2']);
    expect(answers[1]).toMatchObject({ searched: true, previousVersion: 'v1' });
  }, 120_000);

  it('below the threshold, the first model is searched at once', async () => {
    const set = await loadTrainingSet(stack.clickhouse, config.clickhouseDatabase, big.clientId);
    const logger = createLogger('test', 'silent');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-quick-small-'));
    try {
      const deps = { store: new FsModelStore(dir), loadSet: async () => set, logger };
      // The threshold counts the examples the trainer validated: one more than the set has, then exactly as many.
      const below = await trainClient({ ...deps, settings: { ...settings, quickFirstModelExamples: set.examples.length + 1 } }, big.clientId, { liveVersion: null });
      expect(below).toMatchObject({ kind: 'published', searchDeferred: false, event: { modelVersion: 'v1', searched: true } });
      const atStore = new FsModelStore(path.join(dir, 'at'));
      const at = await trainClient({ ...deps, store: atStore, settings: { ...settings, quickFirstModelExamples: set.examples.length } }, big.clientId, { liveVersion: null });
      expect(at).toMatchObject({ kind: 'published', searchDeferred: true, event: { modelVersion: 'v1', searched: false } });
      // The quick model stops at a looser tolerance (QUICK_FIRST_MODEL_FIT) than the same default
      // configuration trained as an ordinary model (no search): fewer solver iterations, same data.
      const plainStore = new FsModelStore(path.join(dir, 'plain'));
      const plain = await trainClient({ ...deps, store: plainStore, settings: { ...settings, search: false } }, big.clientId, { liveVersion: null });
      const iterations = async (store: FsModelStore, r: typeof at) => {
        if (r.kind !== 'published') throw new Error(`not published: ${r.kind}`);
        const m = (await store.get(r.ref.uri, r.ref.sha256)).manifest.metrics;
        return m.heldOutIterations! + m.refitIterations!;
      };
      const quick = await iterations(atStore, at);
      const ordinary = await iterations(plainStore, plain);
      expect(quick).toBeGreaterThan(0);
      expect(quick).toBeLessThan(ordinary);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
