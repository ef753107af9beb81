import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.ts';
import { createLogger } from '../common/log.ts';
import { calibrate, confidences, expectedCalibrationError, fitTemperature, unsureThreshold } from '../models/calibration.ts';
import { loadPredictor } from '../models/predictor.ts';
import { FsModelStore } from '../models/store.ts';
import type { ModelPublished, ModelRejected } from '../schemas/events.ts';
import { buildTrainingSet, splitOf, type ExampleRow, type LabelChangeRow, type TrainingSet } from '../trainer/dataset.ts';
import { fitCandidate, trainClient, trainerSettings, type TrainerSettings } from '../trainer/pipeline.ts';
import { searchModel, searchSample, type SearchSettings } from '../trainer/search.ts';
import { kindTrainer } from '../models/kinds/trainers.ts';
import { validateTrainingSet } from '../trainer/validate.ts';
import { decodeArtifact, encodeArtifact } from '../models/artifact.ts';
import { generateClient } from './quality/workload.ts';

/**
 * The model builder's policy, end to end through trainClient with a real model store (no
 * Kafka/ClickHouse: the training set is given): refit on all data, held-out gate, calibration,
 * and the amortised model search.
 */
const logger = createLogger('test', 'silent');
// A small grid with an obviously bad candidate (C = 0.001: all weights near zero), so "the search
// picks" is a real choice, and folds enough to be stable on 600 examples.
const grid: SearchSettings = {
  folds: 3,
  grid: [
    { kind: 'sparse-linear', params: { C: 0.001 }, charNgrams: [] },
    { kind: 'sparse-linear', params: { C: 10 }, charNgrams: [] },
  ],
};
const settings: TrainerSettings = { ...trainerSettings(loadConfig().trainer), search: grid };

function setOf(clientId: string, examples: number, seed: number): TrainingSet {
  const c = generateClient({ clientId, examples, labels: 4, noise: 0.05, seed });
  const rows: ExampleRow[] = c.examples.map((e, i) => ({
    event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'ASSIGNMENT', metadata: JSON.stringify(e.metadata), features: '{}', occurred_at_ms: 1000 + i,
  }));
  const changes: LabelChangeRow[] = c.labels.map((l, i) => ({ event_id: `l${i}`, change: 'ADDED', label: l.name, previous_label: '', description: l.description, keywords: l.keywords, occurred_at_ms: 0 }));
  return buildTrainingSet(clientId, rows, changes);
}

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-builder-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('refit on all data, gate on held-out data', () => {
  it('publishes weights fitted on every example and definition; its metrics and the gate use the held-out split', async () => {
    const store = new FsModelStore(root);
    const set = setOf('refit', 600, 3);
    const deps = { store, loadSet: async () => set, settings, logger };
    const v1 = await trainClient(deps, 'refit');
    expect(v1.kind).toBe('published');
    const event = (v1 as { event: ModelPublished }).event;
    const all = set.examples.length + set.definitions.length;
    const train = set.examples.filter((e) => splitOf(e.exampleId) === 'train').length + set.definitions.length;
    const test = set.examples.filter((e) => splitOf(e.exampleId) === 'test').length;
    expect(event.trainingExamples).toBe(all);
    expect(event.metrics.heldOutTrainingExamples).toBe(train);
    expect(event.metrics.testExamples).toBe(test);
    const artifact = await store.get(event.artifactUri, event.artifactSha256);
    expect(artifact.manifest.trainedOn).toBe('all');
    expect(artifact.manifest.trainingExamples).toBe(all);
    // The published model has seen the test split: it is right on (nearly) all of it, more than
    // the held-out figure that the version reports.
    const predictor = loadPredictor(artifact);
    const testSet = set.examples.filter((e) => splitOf(e.exampleId) === 'test');
    const right = testSet.filter((e) => predictor.predict(e.text, e.metadata, {}).label === e.label).length / testSet.length;
    expect(right).toBeGreaterThan(event.metrics.accuracy!);

    // A deliberately bad candidate (no solver iteration, no warm start) is refused against v1's
    // held-out figures, not against v1 scored on examples it was fitted on.
    const worse: TrainerSettings = { ...settings, warmStart: false, model: { ...settings.model, params: { maxIterations: 0 } } };
    const rejected = await trainClient({ ...deps, settings: worse }, 'refit');
    expect(rejected.kind).toBe('rejected');
    const r = (rejected as { event: ModelRejected }).event;
    expect(r.stage).toBe('GATE');
    expect(r.detail).toContain('held-out');
    expect(r.liveMetrics.macroF1).toBe(event.metrics.macroF1);
    // The same configuration retrained on the same data passes the gate.
    const again = await trainClient(deps, 'refit');
    expect(again).toMatchObject({ kind: 'published', event: { modelVersion: 'v2', previousVersion: 'v1' } });
  }, 120_000);
});

describe('amortised model search', () => {
  it('searches for the first model, records the choice, reuses it until the data doubles or a quality alert', async () => {
    const store = new FsModelStore(root);
    let set = setOf('search', 300, 9);
    const deps = { store, loadSet: async () => set, settings, logger };
    const first = (await trainClient(deps, 'search')) as { kind: string; event: ModelPublished };
    expect(first.kind).toBe('published');
    expect(first.event.searched).toBe(true);
    expect(JSON.parse(first.event.modelConfig)).toEqual({ kind: 'sparse-linear', params: { C: 10 }, charNgrams: [] });
    expect(first.event.cvMacroF1).toBeGreaterThan(0.5);
    const m1 = (await store.get(first.event.artifactUri, first.event.artifactSha256)).manifest;
    expect(m1.selection).toMatchObject({ searched: true, candidates: 2, searchedAtExamples: set.examples.length });

    // Same data: no search, the configuration and its score carried over.
    const second = (await trainClient(deps, 'search')) as { event: ModelPublished };
    expect(second.event.searched).toBe(false);
    expect(second.event.modelConfig).toBe(first.event.modelConfig);
    expect(second.event.cvMacroF1).toBe(first.event.cvMacroF1);
    expect(second.event.metrics.searchMs).toBeUndefined();

    // A quality alert searches again.
    const alerted = (await trainClient(deps, 'search', { qualityAlert: true })) as { event: ModelPublished };
    expect(alerted.event.searched).toBe(true);

    // Twice the data: searched again.
    set = setOf('search', 600, 9);
    const grown = (await trainClient(deps, 'search')) as { event: ModelPublished };
    expect(grown.event.searched).toBe(true);
    const m4 = (await store.get(grown.event.artifactUri, grown.event.artifactSha256)).manifest;
    expect(m4.selection!.searchedAtExamples).toBe(set.examples.length);
  }, 180_000);
});

describe('calibration', () => {
  // A fixed data set: 1000 three-class predictions whose true probabilities are softmax(z), with
  // logits reported 3x too large (an over-confident model). Deterministic pseudo-random draws.
  let state = 12345;
  const rand = () => ((state = (Math.imul(state, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const logits: Float64Array[] = [];
  const targets: number[] = [];
  for (let i = 0; i < 1000; i++) {
    const z = Float64Array.from([rand() * 2, rand() * 2, rand() * 2]);
    const e = Array.from(z, Math.exp);
    const s = e.reduce((a, b) => a + b, 0);
    const u = rand();
    targets.push(u < e[0]! / s ? 0 : u < (e[0]! + e[1]!) / s ? 1 : 2);
    logits.push(z.map((v) => v * 3));
  }

  it('temperature scaling recovers the over-confidence factor and lowers the expected calibration error', () => {
    const t = fitTemperature(logits, targets);
    expect(t).toBeGreaterThan(2.4);
    expect(t).toBeLessThan(3.6);
    const c = calibrate(logits, targets, 0.5);
    expect(c.temperature).toBe(t);
    expect(c.eceAfter).toBeLessThan(c.eceBefore / 2);
    expect(c.eceAfter).toBeCloseTo(expectedCalibrationError(confidences(logits, targets, t)), 12);
    expect(c.examples).toBe(1000);
  });

  it('the unsure threshold is where the low-confidence slice falls under the target accuracy', () => {
    const preds = [
      { confidence: 0.2, correct: false }, { confidence: 0.3, correct: true }, { confidence: 0.35, correct: false },
      { confidence: 0.5, correct: true }, { confidence: 0.6, correct: true }, { confidence: 0.9, correct: true },
    ];
    // Bottom 3 are right 1/3 < 0.5; bottom 4: 2/4 not < 0.5; so the cut is after 0.35: halfway to 0.5.
    expect(unsureThreshold(preds, 0.5)).toBeCloseTo(0.425, 12);
    expect(unsureThreshold(preds.map((p) => ({ ...p, correct: true })), 0.5)).toBe(0);
  });

  it('a published version carries its calibration; its predictions are marked unsure below the threshold', async () => {
    const store = new FsModelStore(root);
    const set = setOf('calibrated', 400, 21);
    const published = (await trainClient({ store, loadSet: async () => set, settings: { ...settings, search: false }, logger }, 'calibrated')) as { event: ModelPublished };
    const artifact = await store.get(published.event.artifactUri, published.event.artifactSha256);
    const cal = artifact.manifest.calibration!;
    expect(cal.examples).toBe(set.examples.filter((e) => splitOf(e.exampleId) !== 'train').length);
    expect(published.event.metrics.eceBefore).toBe(cal.eceBefore);
    expect(published.event.metrics.eceAfter).toBe(cal.eceAfter);
    // Temperature scaling minimises the log loss, not the ECE: on ~80 held-out predictions the binned
    // ECE may go either way (the unit test above shows it falling on a large sample), so only its range here.
    for (const ece of [cal.eceBefore, cal.eceAfter]) {
      expect(ece).toBeGreaterThanOrEqual(0);
      expect(ece).toBeLessThanOrEqual(1);
    }
    expect(cal.temperature).toBeGreaterThan(0);
    const predictor = loadPredictor({ ...artifact, manifest: { ...artifact.manifest, calibration: { ...cal, unsureBelow: 0.999 } } });
    const p = predictor.predict('something entirely unrelated', {}, {});
    expect(p.unsure).toBe(true);
    const never = loadPredictor({ ...artifact, manifest: { ...artifact.manifest, calibration: { ...cal, unsureBelow: 0 } } });
    expect(never.predict('something entirely unrelated', {}, {}).unsure).toBe(false);
    // Temperature changes scores, never the decision.
    const raw = loadPredictor({ ...artifact, manifest: { ...artifact.manifest, calibration: undefined } });
    for (const e of set.examples.slice(0, 30)) expect(predictor.predict(e.text, e.metadata, {}).label).toBe(raw.predict(e.text, e.metadata, {}).label);
    expect(raw.predict('x', {}, {}).unsure).toBeNull();
  }, 60_000);
});

describe('two text blocks through the pipeline', () => {
  it('a textBlocks candidate reaches its fits with the character ids: the published model has them, served as trained', async () => {
    const set = setOf('blocks', 300, 5);
    const blocks: SearchSettings = { folds: 3, grid: [{ kind: 'sparse-linear', params: { C: 10, textBlocks: true }, charNgrams: [3, 4] }] };
    const validation = validateTrainingSet(set, settings);
    const candidate = await fitCandidate(set, validation.examples, { ...settings, search: blocks }, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
    expect(candidate.manifest.model).toMatchObject({ kind: 'sparse-linear', tfidf: true, textBlocks: true });
    const charRows = candidate.sections.find((s) => s.name === 'charRows')!.data;
    // Both blocks present: some rows are character n-grams, some are words.
    expect(charRows.some((b) => b === 1) && charRows.some((b) => b === 0)).toBe(true);
    expect(candidate.evaluation.macroF1).toBeGreaterThan(0.5);
    // The stored artifact, loaded as a server loads it, predicts what the trainer's predictor does.
    const served = loadPredictor(decodeArtifact(encodeArtifact(candidate.manifest, candidate.sections)));
    for (const e of candidate.test) expect(served.predict(e.text, e.metadata, {}, 1).label).toBe(candidate.predictor.predict(e.text, e.metadata, {}, 1).label);
  }, 120_000);
});

describe('search candidates', () => {
  it('a candidate is fitted cold and scores the same whatever precedes it in the grid', async () => {
    // A warm start from the previous candidate let the search's loosely-toleranced fit stop after
    // its first short step (L-BFGS has no curvature yet), so a candidate could score as its
    // predecessor did: measured on fortune-small's sample, C=3 warm-started from C=10 stopped
    // after 1 iteration at loss 0.612; cold it took 12 to 0.473 (the optimum: 0.472).
    const set = setOf('order', 400, 3);
    const strong: SearchSettings['grid'][number] = { kind: 'sparse-linear', params: { C: 3, balanced: true, textBlocks: true }, charNgrams: [3, 4] };
    const other: SearchSettings['grid'][number] = { kind: 'sparse-linear', params: { C: 10, textBlocks: true }, charNgrams: [3, 4] };
    const inits: boolean[] = [];
    const recording = (kind: string) => {
      const t = kindTrainer(kind)!;
      return { ...t, fit: (data: Parameters<typeof t.fit>[0], params: Parameters<typeof t.fit>[1], opts: Parameters<typeof t.fit>[2]) => (inits.push(opts.init !== undefined), t.fit(data, params, opts)) };
    };
    const run = (grid: SearchSettings['grid']) => searchModel(set.examples, set.definitions, set.labels, recording, { folds: 3, grid, fitOverrides: { 'sparse-linear': { tolerance: 1e-3 } } }, () => ({}));
    const alone = (await run([strong])).scores[0]!.cvMacroF1;
    const after = (await run([other, strong])).scores[1]!.cvMacroF1;
    expect(inits).toHaveLength(9);
    expect(inits.some((x) => x)).toBe(false);
    expect(after).toBe(alone);
    expect(alone).toBeGreaterThan(0.5);
  }, 120_000);
});

describe('search sample', () => {
  const examples = Array.from({ length: 10_000 }, (_, i) => ({ exampleId: `e${i}`, label: i % 100 === 0 ? 'rare' : i % 3 === 0 ? 'a' : 'b' }));

  it('bounds the search to about maxExamples, stratified, every label kept, the same sample every time', () => {
    const sample = searchSample(examples, 2_000);
    expect(sample.length).toBeGreaterThan(1_900);
    expect(sample.length).toBeLessThanOrEqual(2_010);
    const count = (xs: typeof examples, l: string) => xs.filter((e) => e.label === l).length;
    // Each label keeps its share (rare: 100 of 10,000 -> 20 of 2,000).
    for (const l of ['a', 'b', 'rare']) expect(count(sample, l) / sample.length).toBeCloseTo(count(examples, l) / examples.length, 2);
    expect(searchSample([...examples].reverse(), 2_000).map((e) => e.exampleId).sort()).toEqual(sample.map((e) => e.exampleId).sort());
  });

  it('keeps at least ten of a rare label and everything when the data is small', () => {
    const skewed = [...examples.slice(0, 5_000).map((e) => ({ ...e, label: 'big' })), ...Array.from({ length: 12 }, (_, i) => ({ exampleId: `r${i}`, label: 'tiny' }))];
    expect(searchSample(skewed, 500).filter((e) => e.label === 'tiny')).toHaveLength(10);
    expect(searchSample(examples.slice(0, 300), 2_000)).toHaveLength(300);
  });
});
