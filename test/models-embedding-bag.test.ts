import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.ts';
import { seededRandom } from '../common/random.ts';
import { TextFeaturizer, type SparseVector } from '../featurizer/text.ts';
import { decodeArtifact, encodeArtifact, type ModelArtifact, type ModelManifest, type SectionArray } from '../models/artifact.ts';
import { modelKind } from '../models/kinds/index.ts';
import { embeddingBag, type EmbeddingBagInfo, type EmbeddingBagWeights } from '../models/kinds/embedding-bag/index.ts';
import {
  DEFAULT_EMBEDDING_BAG_PARAMS, denseGradients, embeddingBagTrainer, tfLogits, toStored, trainEmbeddingBag, type EmbeddingBagParams, type TrainedEmbeddingBag,
} from '../models/kinds/embedding-bag/fit.ts';
import { sparseLinearTrainer } from '../models/kinds/sparse-linear/fit.ts';
import { kindTrainer } from '../models/kinds/trainers.ts';
import { loadPredictor } from '../models/predictor.ts';
import { initBackend } from '../trainer/backend.ts';
import { buildTrainingSet, type ExampleRow, type LabelChangeRow } from '../trainer/dataset.ts';
import { evaluate } from '../trainer/evaluate.ts';
import { fitCandidate, trainerSettings } from '../trainer/pipeline.ts';
import { validateTrainingSet } from '../trainer/validate.ts';

/**
 * The "embedding-bag" kind: artifact round trip and corruption, the pure-JS scorer against a
 * TensorFlow.js forward pass, the written-out gradients against finite differences, learning,
 * determinism, warm start, and a fit through the trainer's fitCandidate.
 */
const featurizer = new TextFeaturizer();

/** A separable toy set: each label has its own words; every text mixes 3 of them with 4 shared words. */
function separable(clientId: string, examples: number, seed: number) {
  const random = seededRandom(seed);
  const pick = <T>(a: readonly T[]): T => a[Math.floor(random() * a.length)]!;
  const shared = ['please', 'help', 'issue', 'today', 'again', 'need', 'urgent', 'thanks', 'cannot', 'still'];
  const topics = [
    ['laptop', 'screen', 'keyboard', 'battery', 'charger', 'monitor', 'mouse', 'dock'],
    ['invoice', 'payment', 'refund', 'budget', 'expense', 'salary', 'receipt', 'tax'],
    ['wifi', 'network', 'router', 'vpn', 'firewall', 'proxy', 'dns', 'ethernet'],
    ['contract', 'lawyer', 'clause', 'compliance', 'privacy', 'policy', 'signature', 'audit'],
  ];
  const labelList = ['it-hardware', 'finance', 'networking', 'legal'];
  return {
    clientId,
    labels: labelList.map((name, i) => ({ name, description: `handles ${topics[i]!.slice(0, 3).join(', ')}`, keywords: topics[i]!.slice(0, 2) })),
    examples: Array.from({ length: examples }, (_, i) => {
      const l = Math.floor(random() * labelList.length);
      const words = [pick(topics[l]!), pick(topics[l]!), pick(topics[l]!), pick(shared), pick(shared), pick(shared), pick(shared)].sort(() => random() - 0.5);
      return { exampleId: `${clientId}-${i}`, text: words.join(' '), label: labelList[l]!, metadata: {} as Record<string, string> };
    }),
  };
}

const client = separable('bag', 600, 5);
const labels = client.labels.map((l) => l.name);
const index = new Map(labels.map((l, i) => [l, i]));
const vectors = client.examples.map((e) => featurizer.featurize(e.text, e.metadata));
const targets = Int32Array.from(client.examples, (e) => index.get(e.label)!);
// First 480 to train, last 120 to score.
const trainData = { vectors: vectors.slice(0, 480), targets: targets.slice(0, 480), numLabels: labels.length };
const small: EmbeddingBagParams = { ...DEFAULT_EMBEDDING_BAG_PARAMS, embedding: 16, hidden: 32, epochs: 8, minSteps: 0 };
let backend: string;
let trained: TrainedEmbeddingBag;

function manifestOf(t: TrainedEmbeddingBag, quantization: 'int8-row' | 'float32', labelList = labels): ModelManifest {
  const model: EmbeddingBagInfo = {
    kind: 'embedding-bag', quantization, ...(t.idf ? { tfidf: true } : {}),
    dimensions: { features: t.weights.featureIds.length, embedding: t.weights.embedding, hidden: t.weights.hidden, labels: labelList.length },
  };
  return {
    formatVersion: 1, clientId: client.clientId, modelVersion: 'v1', createdAt: new Date(0).toISOString(), labels: [...labelList],
    featurizer: { ...featurizer.identity }, model, metrics: {}, trainingDataSha256: 'x'.repeat(64), trainingExamples: 480, backend, parentVersion: null,
    weights: { sections: [] },
  };
}

function artifactOf(t: TrainedEmbeddingBag, quantization: 'int8-row' | 'float32', labelList = labels): { bytes: Buffer; artifact: ModelArtifact } {
  const { weights: _w, ...manifest } = manifestOf(t, quantization, labelList);
  const bytes = encodeArtifact(manifest, embeddingBag.write(toStored(t.weights, t.idf, quantization)));
  return { bytes, artifact: decodeArtifact(bytes) };
}

function argmax(z: ArrayLike<number>): number {
  let best = 0;
  for (let c = 1; c < z.length; c++) if (z[c]! > z[best]!) best = c;
  return best;
}

function macroF1(scorer: { logits(v: SparseVector): Float64Array }, from: number, to: number): number {
  const truth = client.examples.slice(from, to).map((e) => e.label);
  const predicted = vectors.slice(from, to).map((v) => labels[argmax(scorer.logits(v))]!);
  return evaluate(truth, predicted).macroF1;
}

beforeAll(async () => {
  backend = await initBackend();
  trained = await trainEmbeddingBag(trainData, small, { seed: 7 });
});

describe('embedding-bag artifact', () => {
  it('round-trips: written, read back and scored, the logits are identical; re-encoding gives the same bytes', () => {
    for (const quantization of ['float32', 'int8-row'] as const) {
      const { bytes, artifact } = artifactOf(trained, quantization);
      const direct = embeddingBag.scorer(artifact.manifest, toStored(trained.weights, trained.idf, quantization));
      const predictor = loadPredictor(artifact);
      for (const v of vectors.slice(480, 530)) expect(Array.from(predictor.logits(v))).toEqual(Array.from(direct.logits(v)));
      expect(predictor.memoryBytes).toBe(embeddingBag.estimateBytes(artifact.manifest));
      const kind = modelKind('embedding-bag')!;
      const { weights: _s, ...manifest } = artifact.manifest;
      expect(encodeArtifact(manifest, kind.write(kind.read(artifact.manifest, artifact.sections))).equals(bytes)).toBe(true);
    }
    // int8 rows are a quarter of the float32 embeddings and keep the decisions.
    const f32 = loadPredictor(artifactOf(trained, 'float32').artifact);
    const i8 = loadPredictor(artifactOf(trained, 'int8-row').artifact);
    expect(i8.memoryBytes).toBeLessThan(f32.memoryBytes * 0.5);
    let same = 0;
    for (const v of vectors.slice(480)) if (argmax(f32.logits(v)) === argmax(i8.logits(v))) same++;
    expect(same / 120).toBeGreaterThan(0.97);
  });

  it('refuses missing, mis-sized, mis-typed or inconsistent sections with ARTIFACT_CORRUPT', () => {
    const { artifact } = artifactOf(trained, 'int8-row');
    const V = trained.weights.featureIds.length;
    const load = (sections: Record<string, SectionArray | undefined>, model: Partial<EmbeddingBagInfo> = {}, labelList = labels) =>
      () => loadPredictor({ manifest: { ...artifact.manifest, labels: labelList, model: { ...artifact.manifest.model, ...model } }, sections: sections as Record<string, SectionArray> });
    const corrupt = expect.objectContaining({ code: 'ARTIFACT_CORRUPT' });
    const s = artifact.sections;
    expect(load(s)).not.toThrow();
    for (const name of ['featureIds', 'embeddings', 'rowScales', 'idf', 'hiddenWeights', 'hiddenBias', 'outputWeights', 'outputBias']) {
      expect(load({ ...s, [name]: undefined })).toThrow(corrupt);
    }
    expect(load({ ...s, hiddenBias: new Float32Array(small.hidden + 1) })).toThrow(corrupt);
    expect(load({ ...s, outputWeights: new Float32Array(small.hidden * labels.length - 1) })).toThrow(corrupt);
    expect(load({ ...s, embeddings: new Float32Array(V * small.embedding) })).toThrow(corrupt); // float32 under int8-row
    expect(load({ ...s, featureIds: Uint32Array.from(s.featureIds!).reverse() })).toThrow(corrupt);
    expect(load({ ...s, featureIds: Int32Array.from(s.featureIds!) })).toThrow(corrupt);
    expect(load(s, { tfidf: false })).toThrow(corrupt);
    expect(load(s, { dimensions: { features: V, embedding: small.embedding, hidden: 0, labels: labels.length } })).toThrow(corrupt);
    expect(load(s, {}, labels.slice(1))).toThrow(corrupt);
    expect(load(s, { quantization: 'int4' as never })).toThrow(corrupt);
  });
});

describe('embedding-bag fit', () => {
  it('the pure-JS scorer matches a TensorFlow.js forward pass on the trained weights', () => {
    const { artifact } = artifactOf(trained, 'float32');
    const predictor = loadPredictor(artifact);
    const inputs = vectors.slice(480, 540);
    const tfz = tfLogits(trained.weights, trained.idf, inputs, labels.length);
    inputs.forEach((v, i) => {
      const js = predictor.logits(v);
      for (let c = 0; c < labels.length; c++) expect(js[c]).toBeCloseTo(tfz[i * labels.length + c]!, 4);
    });
  });

  it('its written-out gradients match finite differences of its loss', () => {
    const [B, D, H, K] = [5, 4, 6, 3];
    let s = 1;
    const r = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
    const arr = (n: number) => Float32Array.from({ length: n }, r);
    const P = arr(B * D); const W1 = arr(D * H); const b1 = arr(H); const W2 = arr(H * K); const b2 = arr(K);
    const Y = new Float32Array(B * K);
    for (let b = 0; b < B; b++) Y[b * K + (b % K)] = 1;
    const sw = Float32Array.from([1, 2, 1, 0.5, 1]);
    const mask = Float32Array.from({ length: B * H }, (_, i) => (i % 5 === 0 ? 0 : 1.25));
    const run = (p: Float32Array, w1: Float32Array, w2: Float32Array) => tf.tidy(() => {
      const g = denseGradients(tf.tensor2d(p, [B, D]), tf.tensor2d(Y, [B, K]), tf.tensor1d(sw), tf.tensor2d(mask, [B, H]),
        tf.tensor2d(w1, [D, H]), tf.tensor1d(b1), tf.tensor2d(w2, [H, K]), tf.tensor1d(b2), 0.01);
      return { loss: g.loss.dataSync()[0]!, P: Float32Array.from(g.P.dataSync()), W1: Float32Array.from(g.W1.dataSync()), W2: Float32Array.from(g.W2.dataSync()) };
    });
    const g = run(P, W1, W2);
    const h = 1e-2;
    const check = (x: Float32Array, grad: Float32Array, which: 'P' | 'W1' | 'W2') => {
      for (const i of [0, 3, x.length - 1]) {
        const plus = x.slice(); plus[i]! += h;
        const minus = x.slice(); minus[i]! -= h;
        const f = (v: Float32Array) => run(which === 'P' ? v : P, which === 'W1' ? v : W1, which === 'W2' ? v : W2).loss;
        expect(grad[i]!).toBeCloseTo((f(plus) - f(minus)) / (2 * h), 2);
      }
    };
    check(P, g.P, 'P');
    check(W1, g.W1, 'W1');
    check(W2, g.W2, 'W2');
  });

  it('learns a separable set (held-out macro-F1 > 0.95), deterministically for a seed, and lets timers run while it trains', async () => {
    const { artifact } = artifactOf(trained, 'int8-row');
    expect(macroF1(loadPredictor(artifact), 480, 600)).toBeGreaterThan(0.95);
    let ticks = 0;
    const timer = setInterval(() => ticks++, 5);
    const again = await trainEmbeddingBag(trainData, small, { seed: 7 });
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    expect(Array.from(again.weights.embeddings)).toEqual(Array.from(trained.weights.embeddings));
    expect(Array.from(again.weights.outputWeights)).toEqual(Array.from(trained.weights.outputWeights));
    const other = await trainEmbeddingBag(trainData, { ...small, epochs: 1, minSteps: 0 }, { seed: 8 });
    expect(Array.from(other.weights.hiddenWeights)).not.toEqual(Array.from(trained.weights.hiddenWeights));
  });

  it('with a validation share, stops once the held-out accuracy stops improving and keeps the best epoch', async () => {
    const epochs: number[] = [];
    const stopped = await trainEmbeddingBag(trainData, { ...small, epochs: 40, validationShare: 0.2, patience: 2 }, { seed: 7, onEpoch: (e) => { epochs.push(e); } });
    expect(stopped.epochs).toBeLessThan(40);
    expect(epochs).toHaveLength(stopped.epochs);
    expect(stopped.validationAccuracy).toBeGreaterThan(0.95);
    const { artifact } = artifactOf(stopped, 'int8-row');
    expect(macroF1(loadPredictor(artifact), 480, 600)).toBeGreaterThan(0.95);
  });

  it('warm-starts from its previous model with labels reordered and one added, keeping what it learnt', async () => {
    const { artifact } = artifactOf(trained, 'int8-row');
    // New label order: reversed, plus a label the previous model never had (no examples: its column starts fresh).
    const next = [...labels].reverse().concat('team-new');
    const init = embeddingBagTrainer.warmStart(artifact, next);
    expect(init).toBeDefined();
    expect(embeddingBagTrainer.warmStart(artifact, ['a', 'b', 'c', labels[0]!])).toBeUndefined(); // too few shared labels
    const remap = Int32Array.from(trainData.targets, (t) => next.indexOf(labels[t]!));
    const data = { ...trainData, targets: remap, numLabels: next.length };
    // A learning rate too small to learn anything in one epoch: what it scores is what it started from.
    const frozen = { ...small, epochs: 1, minSteps: 0, learningRate: 1e-6 };
    const heldOut = (fitted: Awaited<ReturnType<typeof embeddingBagTrainer.fit>>) => {
      const scorer = embeddingBag.scorer({ ...manifestOf(trained, 'int8-row', next), model: fitted.model }, fitted.weights);
      const predicted = vectors.slice(480).map((v) => next[argmax(scorer.logits(v))]!);
      return evaluate(client.examples.slice(480).map((e) => e.label), predicted).macroF1;
    };
    const epochs: number[] = [];
    const warm = await embeddingBagTrainer.fit(data, frozen, { epochs: 1, seed: 9, init, onEpoch: (e) => { epochs.push(e); } });
    expect(epochs).toEqual([1]);
    expect(heldOut(warm)).toBeGreaterThan(0.95);
    expect(heldOut(await embeddingBagTrainer.fit(data, frozen, { epochs: 1, seed: 9 }))).toBeLessThan(0.8);
    // And a real warm-started fit of two epochs keeps the accuracy.
    expect(heldOut(await embeddingBagTrainer.fit(data, { ...small, epochs: 2, minSteps: 0 }, { epochs: 2, seed: 9, init }))).toBeGreaterThan(0.95);
    const manifest = { ...manifestOf(trained, 'int8-row', next), model: warm.model };
    // Another kind's artifact is no warm start.
    const linear = await sparseLinearTrainer.fit(trainData, { ...sparseLinearTrainer.defaults, maxIterations: 5 }, { epochs: 1, seed: 1 });
    const linearArtifact = { manifest: { ...manifest, labels, model: linear.model }, sections: Object.fromEntries(sparseLinearTrainer.kind.write(linear.weights).map((x) => [x.name, x.data])) };
    expect(embeddingBagTrainer.warmStart(linearArtifact, labels)).toBeUndefined();
  });

  it('is trained by fitCandidate when the settings pin the kind, into a loadable predictor', async () => {
    expect(kindTrainer('embedding-bag')).toBe(embeddingBagTrainer);
    const c = separable('bag-pipeline', 400, 6);
    const rows: ExampleRow[] = c.examples.map((e, i) => ({
      event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'ASSIGNMENT', metadata: JSON.stringify(e.metadata), features: '{}', occurred_at_ms: 1000 + i,
    }));
    const changes: LabelChangeRow[] = c.labels.map((l, i) => ({ event_id: `l${i}`, change: 'ADDED', label: l.name, previous_label: '', description: l.description, keywords: l.keywords, occurred_at_ms: 0 }));
    const set = buildTrainingSet(c.clientId, rows, changes);
    const settings = { ...trainerSettings(loadConfig().trainer, { kind: 'embedding-bag', params: { embedding: 16, hidden: 32, minSteps: 200 } }), search: false as const };
    const validation = validateTrainingSet(set, settings);
    const candidate = await fitCandidate(set, validation.examples, settings, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
    expect(candidate.manifest.model).toMatchObject({ kind: 'embedding-bag', dimensions: { embedding: 16, hidden: 32, labels: 4 }, quantization: 'int8-row', tfidf: true });
    expect(candidate.manifest.backend).toBe(backend);
    expect(candidate.manifest.selection?.config.kind).toBe('embedding-bag');
    const predictor = loadPredictor(decodeArtifact(encodeArtifact(candidate.manifest, candidate.sections)));
    const p = predictor.predict(c.examples[0]!.text, c.examples[0]!.metadata, {});
    expect(c.labels.map((l) => l.name)).toContain(p.label);
    expect(candidate.evaluation.macroF1).toBeGreaterThan(0.9);
  });
});
