import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EddyError } from '../common/errors.ts';
import { DEFAULT_FEATURIZER_CONFIG, TextFeaturizer } from '../featurizer/text.ts';
import { decodeArtifact, encodeArtifact, type ModelManifest } from '../models/artifact.ts';
import { modelKind } from '../models/kinds/index.ts';
import { quantizeWeights, rowLookup, sparseLinear } from '../models/kinds/sparse-linear/index.ts';
import { loadPredictor, topScores } from '../models/predictor.ts';
import { softmaxInPlace } from '../models/calibration.ts';
import { FsModelStore } from '../models/store.ts';
import { initBackend } from '../trainer/backend.ts';
import { DEFAULT_TRAIN_OPTIONS, tfLogits, trainSparseLinear, type TrainedLinearModel } from '../models/kinds/sparse-linear/fit.ts';
import { generateClient } from './quality/workload.ts';

const featurizer = new TextFeaturizer();
const client = generateClient({ clientId: 'golden', examples: 400, labels: 4, noise: 0, seed: 11 });
const labels = client.labels.map((l) => l.name);
let root: string;
let trained: TrainedLinearModel;
let backend: string;

function manifest(version: string, quantization: 'int8-row' | 'float32', m = trained): Omit<ModelManifest, 'weights'> {
  return {
    formatVersion: 1, clientId: client.clientId, modelVersion: version, createdAt: new Date(0).toISOString(), labels,
    featurizer: { ...featurizer.identity }, model: { kind: 'sparse-linear', dimensions: { features: m.featureIds.length, labels: labels.length }, quantization },
    metrics: { accuracy: 0.9 }, trainingDataSha256: 'x'.repeat(64), trainingExamples: client.examples.length, backend, parentVersion: null,
  };
}

function weightsOf(q: 'int8-row' | 'float32', m = trained) {
  return sparseLinear.write({ featureIds: m.featureIds, bias: m.bias, ...quantizeWeights(m.weights, m.featureIds.length, labels.length, q) });
}

function softmax(z: ArrayLike<number>): number[] {
  const max = Math.max(...Array.from(z));
  const e = Array.from(z, (v) => Math.exp(v - max));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-models-'));
  backend = await initBackend();
  const vectors = client.examples.map((e) => featurizer.featurize(e.text, e.metadata));
  const index = new Map(labels.map((l, i) => [l, i]));
  trained = await trainSparseLinear(
    { vectors, targets: Int32Array.from(client.examples, (e) => index.get(e.label)!), numLabels: labels.length },
    { ...DEFAULT_TRAIN_OPTIONS, maxIterations: 50 },
  );
});

afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('model artifact, store and predictor', () => {
  it('pure-JS predictor scores equal the TensorFlow.js model scores (float32 artifact)', async () => {
    const store = new FsModelStore(root);
    const { uri, sha256 } = await store.put(manifest('v1', 'float32'), weightsOf('float32'));
    const predictor = loadPredictor(await store.get(uri, sha256));
    const inputs = client.examples.slice(0, 50);
    const tfz = tfLogits(trained, inputs.map((e) => featurizer.featurize(e.text, e.metadata)), labels.length);
    inputs.forEach((e, i) => {
      const expected = softmax(tfz.subarray(i * labels.length, (i + 1) * labels.length));
      const got = predictor.predict(e.text, e.metadata, {});
      expect(got.scores).toHaveLength(labels.length);
      for (const s of got.scores) expect(s.score).toBeCloseTo(expected[labels.indexOf(s.label)]!, 5);
      expect(got.label).toBe(labels[expected.indexOf(Math.max(...expected))]);
    });
  });

  it('int8-quantised weights keep the decisions and scores within 0.02', async () => {
    const store = new FsModelStore(root);
    const f32 = await store.put(manifest('v2', 'float32'), weightsOf('float32'));
    const i8 = await store.put(manifest('v3', 'int8-row'), weightsOf('int8-row'));
    const a = loadPredictor(await store.get(f32.uri, f32.sha256));
    const b = loadPredictor(await store.get(i8.uri, i8.sha256));
    expect(b.memoryBytes).toBeLessThan(a.memoryBytes);
    let same = 0;
    for (const e of client.examples) {
      const pa = a.predict(e.text, e.metadata, {});
      const pb = b.predict(e.text, e.metadata, {});
      if (pa.label === pb.label) same++;
      expect(Math.abs(pa.scores[0]!.score - pb.scores.find((s) => s.label === pa.label)!.score)).toBeLessThan(0.02);
    }
    expect(same / client.examples.length).toBeGreaterThan(0.99);
  });

  it('the same input gives the same feature vector every time (trainer and server share one featurizer)', () => {
    const text = 'Mon ＬＡＰＴＯＰ ne démarre plus — réseau  down!!';
    const a = featurizer.featurize(text, { channel: 'Email' }, { 'requester.share:Network': 0.6 });
    const b = new TextFeaturizer({ ...DEFAULT_FEATURIZER_CONFIG }).featurize(text, { channel: 'Email' }, { 'requester.share:Network': 0.6 });
    expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
    expect(Array.from(a.values)).toEqual(Array.from(b.values));
    expect(featurizer.textFeatureNames(text)).toContain('w:laptop');
    expect(featurizer.textFeatureNames(text)).toContain('w:reseau');
  });

  it('refuses an artifact whose bytes do not match the expected hash', async () => {
    const store = new FsModelStore(root);
    const { uri, sha256 } = await store.put(manifest('v4', 'int8-row'), weightsOf('int8-row'));
    const file = path.join(root, 'blobs', sha256.slice(0, 2), `${sha256}.eddymodel`);
    const bytes = await fs.readFile(file);
    bytes[bytes.length - 3] = (bytes[bytes.length - 3] ?? 0) ^ 0xff;
    await fs.writeFile(file, bytes);
    await expect(store.get(uri, sha256)).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT' });
    await expect(store.get(uri, 'f'.repeat(64))).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT' });
  });

  it('refuses a model trained with a featurizer this build does not implement', async () => {
    const store = new FsModelStore(root);
    const m = manifest('v5', 'float32');
    m.featurizer = { ...m.featurizer, config: { ...m.featurizer.config, hashBits: 18 } }; // id no longer matches config
    const { uri, sha256 } = await store.put(m, weightsOf('float32'));
    const artifact = await store.get(uri, sha256);
    expect(() => loadPredictor(artifact)).toThrow(EddyError);
    expect(() => loadPredictor(artifact)).toThrow(/FEATURIZER|featurizer/);
    try {
      loadPredictor(artifact);
    } catch (err) {
      expect((err as EddyError).code).toBe('FEATURIZER_MISMATCH');
    }
  });

  it('lists versions in order, refuses to overwrite a version, and prunes by policy', async () => {
    const store = new FsModelStore(root);
    const refs = await store.list(client.clientId);
    expect(refs.map((r) => r.modelVersion)).toEqual(['v1', 'v2', 'v3', 'v4', 'v5']);
    expect(await store.nextVersion(client.clientId)).toBe('v6');
    // Same content again: idempotent. Other content under the same version: refused.
    await store.put(manifest('v1', 'float32'), weightsOf('float32'));
    await expect(store.put(manifest('v1', 'int8-row'), weightsOf('int8-row'))).rejects.toMatchObject({ code: 'VERSION_EXISTS' });
    const removed = await store.prune({ clientId: client.clientId, keepLast: 2, keepVersions: ['v1'] });
    expect(removed).toEqual(['v2', 'v3']);
    expect((await store.list(client.clientId)).map((r) => r.modelVersion)).toEqual(['v1', 'v4', 'v5']);
    const v2 = refs.find((r) => r.modelVersion === 'v2')!;
    await expect(store.get(v2.uri, v2.sha256)).rejects.toMatchObject({ code: 'ARTIFACT_NOT_FOUND' });
  });
});

describe('sparse-linear with TF-IDF weighting (idf section)', () => {
  it('scores idf-weighted, L2-renormalised text features; metadata features pass through unweighted', async () => {
    const examples = client.examples.slice(0, 200);
    const vectors = examples.map((e) => featurizer.featurize(e.text, e.metadata));
    const index = new Map(labels.map((l, i) => [l, i]));
    const nonTextIds = new Set<number>();
    for (const e of examples) for (const id of featurizer.featurize('', e.metadata).ids) nonTextIds.add(id);
    const m = await trainSparseLinear(
      { vectors, targets: Int32Array.from(examples, (e) => index.get(e.label)!), numLabels: labels.length, nonTextIds },
      { ...DEFAULT_TRAIN_OPTIONS, maxIterations: 30 },
    );
    expect(m.idf).not.toBeNull();
    const rowOf = new Map(Array.from(m.featureIds, (id, r) => [id, r]));
    // Metadata rows carry idf 0 (pass through); text rows ln((1+n)/(1+df))+1 >= 1.
    for (const id of nonTextIds) if (rowOf.has(id)) expect(m.idf![rowOf.get(id)!]).toBe(0);
    const textRow = rowOf.get(vectors[0]!.ids.find((id) => !nonTextIds.has(id) && rowOf.has(id))!)!;
    expect(m.idf![textRow]).toBeGreaterThanOrEqual(1);
    const mf: ModelManifest = { ...manifest('t1', 'float32', m), weights: { sections: [] } } as ModelManifest;
    mf.model = { ...mf.model, tfidf: true };
    const weights = { featureIds: m.featureIds, bias: m.bias, idf: m.idf, ...quantizeWeights(m.weights, m.featureIds.length, labels.length, 'float32') };
    const bytes = encodeArtifact(mf, sparseLinear.write(weights));
    const predictor = loadPredictor(decodeArtifact(bytes));
    expect(predictor.memoryBytes).toBe(sparseLinear.estimateBytes(mf));
    // Reference: the transform written out (idf x value on text rows, L2 over them, unknown ids dropped).
    for (const v of vectors.slice(0, 20)) {
      const entries = Array.from(v.ids, (id, j) => ({ r: rowOf.get(id), v: v.values[j]! })).filter((e) => e.r !== undefined) as Array<{ r: number; v: number }>;
      const text = entries.filter((e) => m.idf![e.r]! > 0).map((e) => ({ r: e.r, v: e.v * m.idf![e.r]! }));
      const norm = Math.sqrt(text.reduce((a, e) => a + e.v * e.v, 0));
      const all = [...text.map((e) => ({ r: e.r, v: e.v / norm })), ...entries.filter((e) => m.idf![e.r] === 0)];
      const expected = Array.from(m.bias, (b, c) => all.reduce((a, e) => a + e.v * m.weights[e.r * labels.length + c]!, b));
      Array.from(predictor.logits(v)).forEach((z, c) => expect(z).toBeCloseTo(expected[c]!, 5));
    }
    // The manifest flag and the section go together.
    const { tfidf: _t, ...plain } = mf.model;
    expect(() => loadPredictor(decodeArtifact(encodeArtifact({ ...mf, model: plain }, sparseLinear.write(weights))))).toThrow(expect.objectContaining({ code: 'ARTIFACT_CORRUPT' }));
  });
});

describe('model kinds: existing artifacts stay readable', () => {
  // Written by the code before the ModelKind seam existed (test/fixtures/models/): int8 and float32.
  const fixtures = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'models');

  it('loads artifacts written before the seam, scores them identically, and re-encodes them byte for byte', async () => {
    const expected = JSON.parse(await fs.readFile(path.join(fixtures, 'expected-logits.json'), 'utf8')) as Record<string, unknown> & { texts: string[]; metadata: Record<string, string> };
    for (const quantization of ['int8-row', 'float32'] as const) {
      const bytes = await fs.readFile(path.join(fixtures, `sparse-linear-${quantization}.eddymodel`));
      const artifact = decodeArtifact(bytes);
      expect(artifact.manifest.model).toEqual({ kind: 'sparse-linear', dimensions: { features: 55, labels: 4 }, quantization });
      const predictor = loadPredictor(artifact);
      const logits = expected.texts.map((t) => Array.from(predictor.logits(featurizer.featurize(t, expected.metadata))));
      expect(logits).toEqual(expected[quantization]);
      // predict() on the same inputs: the softmax of those logits, every label, highest first.
      expected.texts.forEach((t, i) => {
        const z = softmaxInPlace(Float64Array.from((expected[quantization] as number[][])[i]!), 1);
        const want = Array.from(z, (score, c) => ({ label: artifact.manifest.labels[c]!, score, c }))
          .sort((a, b) => b.score - a.score || a.c - b.c).map(({ label, score }) => ({ label, score }));
        expect(predictor.predict(t, expected.metadata, {}).scores).toEqual(want);
      });
      // The kind writes the same sections in the same order: the same bytes, so the same sha256.
      const kind = modelKind('sparse-linear')!;
      const { weights: _sections, ...manifest } = artifact.manifest;
      const again = encodeArtifact(manifest, kind.write(kind.read(artifact.manifest, artifact.sections)));
      expect(again.equals(bytes)).toBe(true);
      expect(kind.estimateBytes(artifact.manifest)).toBe(predictor.memoryBytes);
    }
  });

  it('rowLookup finds every stored feature id and nothing else, whether ids are spread evenly or bunched', () => {
    let seed = 5;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let t = 0; t < 300; t++) {
      const n = t % 10 === 0 ? Math.floor(rnd() * 3) : Math.floor(rnd() * 5000);
      const ids = new Set<number>();
      // Even (hashes over 2^22), bunched at both ends, or runs of consecutive ids.
      const shape = t % 3;
      while (ids.size < n) {
        const r = rnd();
        ids.add(shape === 0 ? Math.floor(r * 2 ** 22) : shape === 1 ? Math.floor(r ** 6 * 2 ** 22) ^ (rnd() < 0.5 ? 0 : 0x3fffff) : 1000 + Math.floor(r * n * 1.2));
      }
      const sorted = Uint32Array.from(ids).sort();
      const rowOf = rowLookup(sorted);
      sorted.forEach((id, row) => {
        if (rowOf(id) !== row) expect.fail(`id ${id} (row ${row} of ${n}, shape ${shape}) found at ${rowOf(id)}`);
      });
      for (let q = 0; q < 200; q++) {
        const probe = Math.floor(rnd() * 2 ** 22);
        expect(rowOf(probe)).toBe(sorted.indexOf(probe));
      }
    }
  });

  it('topScores ranks like a full sort (score descending, ties by label order) for every k', () => {
    let seed = 3;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let t = 0; t < 500; t++) {
      const n = 1 + Math.floor(rnd() * (t % 50 === 0 ? 300 : 12));
      // Few distinct values: many ties.
      const z = Float64Array.from({ length: n }, () => Math.floor(rnd() * 4) / 4);
      const labels = Array.from({ length: n }, (_, c) => `L${c}`);
      const order = Array.from({ length: n }, (_, c) => c).sort((a, b) => z[b]! - z[a]! || a - b);
      for (const k of [1, Math.ceil(n / 2), n]) {
        expect(topScores(z, labels, k)).toEqual(order.slice(0, k).map((c) => ({ label: labels[c]!, score: z[c]! })));
      }
    }
  });

  it('refuses an artifact of a kind this build does not implement, naming the kind', async () => {
    const bytes = await fs.readFile(path.join(fixtures, 'sparse-linear-float32.eddymodel'));
    const artifact = decodeArtifact(bytes);
    const foreign = { ...artifact, manifest: { ...artifact.manifest, model: { ...artifact.manifest.model, kind: 'transformer-xl' } } };
    expect(() => loadPredictor(foreign)).toThrow(expect.objectContaining({ code: 'MODEL_KIND_UNSUPPORTED', message: expect.stringContaining('transformer-xl') }));
    const missing = { ...artifact, sections: { ...artifact.sections, bias: undefined as never } };
    expect(() => loadPredictor(missing)).toThrow(expect.objectContaining({ code: 'ARTIFACT_CORRUPT' }));
  });
});
