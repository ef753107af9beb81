import { describe, expect, it } from 'vitest';
import { hashString, type SparseVector } from '../featurizer/text.ts';
import type { ModelManifest } from '../models/artifact.ts';
import { trainSparseLinear, weightedCsr, type TrainedLinearModel } from '../models/kinds/sparse-linear/fit.ts';
import { quantizeWeights, sparseLinear } from '../models/kinds/sparse-linear/index.ts';
import { charNgramIds, featurizerOf } from '../trainer/search.ts';

/**
 * The sparse-linear solver's objectives, checked by their optimality conditions computed here
 * independently: at the optimum of f(W, b) = sum_i w_i loss_i + ||W||^2 / (2C) the gradient is zero.
 * A fit that minimised another objective (multinomial instead of one-vs-rest, unweighted instead
 * of balanced) leaves a large gradient of this one.
 */

// A small, imbalanced, overlapping 3-label problem over 6 features (no TF-IDF, every feature kept).
function dataset(): { vectors: SparseVector[]; targets: Int32Array } {
  let seed = 3;
  const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const vectors: SparseVector[] = [];
  const targets: number[] = [];
  const sizes = [60, 25, 10];
  sizes.forEach((n, label) => {
    for (let i = 0; i < n; i++) {
      const ids = [label, 3 + Math.floor(rnd() * 3)].sort((a, b) => a - b);
      // The label's own feature is on only 70 % of the time: the classes overlap, the optimum is finite.
      const on = rnd() < 0.7;
      vectors.push({ ids: Uint32Array.from(on ? ids : [ids[1]!]), values: Float32Array.from(on ? [1, 0.5] : [0.5]) });
      targets.push(label);
    }
  });
  return { vectors, targets: Int32Array.from(targets) };
}

const C = 3;
const K = 3;

/** Largest |gradient| of the objective (one-vs-rest or multinomial, weighted) at the fitted float weights. */
function gradientNorm(m: TrainedLinearModel, d: ReturnType<typeof dataset>, objective: 'ovr' | 'multinomial', weights: Float64Array): number {
  const row = new Map(Array.from(m.featureIds, (id, r) => [id, r]));
  const gW = new Float64Array(m.featureIds.length * K);
  const gb = new Float64Array(K);
  d.vectors.forEach((v, i) => {
    const z = Array.from(m.bias, Number);
    v.ids.forEach((id, j) => {
      for (let c = 0; c < K; c++) z[c]! += v.values[j]! * m.weights[row.get(id)! * K + c]!;
    });
    const max = Math.max(...z);
    const sum = z.reduce((a, x) => a + Math.exp(x - max), 0);
    for (let c = 0; c < K; c++) {
      const y = d.targets[i] === c ? 1 : 0;
      const p = objective === 'ovr' ? 1 / (1 + Math.exp(-z[c]!)) : Math.exp(z[c]! - max) / sum;
      const dz = weights[i]! * C * (p - y);
      gb[c]! += dz;
      v.ids.forEach((id, j) => (gW[row.get(id)! * K + c]! += dz * v.values[j]!));
    }
  });
  for (let p = 0; p < gW.length; p++) gW[p]! += m.weights[p]!;
  return Math.max(...gW.map(Math.abs), ...gb.map(Math.abs));
}

const fit = (d: ReturnType<typeof dataset>, over: { multiClass?: 'ovr' | 'multinomial'; balanced?: boolean | number }) =>
  trainSparseLinear({ ...d, numLabels: K }, { C, minFeatureCount: 1, tfidf: false, maxIterations: 2000, tolerance: 1e-13, ...over });

describe('sparse-linear objectives', () => {
  const d = dataset();
  const ones = new Float64Array(d.targets.length).fill(1);
  const counts = [60, 25, 10];
  const balanced = Float64Array.from(d.targets, (t) => d.targets.length / (K * counts[t]!));

  it('multinomial (the default) reaches the softmax optimum', async () => {
    const m = await fit(d, {});
    expect(gradientNorm(m, d, 'multinomial', ones)).toBeLessThan(2e-3);
    expect(gradientNorm(m, d, 'ovr', ones)).toBeGreaterThan(0.1);
  });

  it('one-vs-rest reaches the optimum of K binary logistic problems, as liblinear solves them', async () => {
    const m = await fit(d, { multiClass: 'ovr' });
    expect(gradientNorm(m, d, 'ovr', ones)).toBeLessThan(2e-3);
    expect(gradientNorm(m, d, 'multinomial', ones)).toBeGreaterThan(0.1);
  });

  it('balanced weighs each example by n / (labels x its label count), as class_weight="balanced"', async () => {
    const m = await fit(d, { multiClass: 'ovr', balanced: true });
    expect(gradientNorm(m, d, 'ovr', balanced)).toBeLessThan(2e-3);
    expect(gradientNorm(m, d, 'ovr', ones)).toBeGreaterThan(0.1);
    // The rare label gains: its bias moves up against the unweighted fit's.
    const plain = await fit(d, { multiClass: 'ovr' });
    expect(m.bias[2]!).toBeGreaterThan(plain.bias[2]! + 0.1);
  });

  it('a balanced share b in (0, 1) weighs each example by 1 + b (n / (labels x its label count) - 1)', async () => {
    const partly = Float64Array.from(balanced, (w) => 1 + (2 / 3) * (w - 1));
    const m = await fit(d, { balanced: 2 / 3 });
    expect(gradientNorm(m, d, 'multinomial', partly)).toBeLessThan(2e-3);
    // Neither end: the unweighted and the balanced objectives are both off their optimum here.
    expect(gradientNorm(m, d, 'multinomial', ones)).toBeGreaterThan(0.1);
    expect(gradientNorm(m, d, 'multinomial', balanced)).toBeGreaterThan(0.1);
  });
});

describe('the L-BFGS stopping rule', () => {
  it('does not stop on a step that barely moved the loss: the fit is close to the optimum at any tolerance', async () => {
    const { lbfgs } = await import('../models/kinds/sparse-linear/fit.ts');
    // An ill-conditioned quadratic far from its minimum (0 at x = b). The first iteration is steepest
    // descent with a step of 1/|g|: it lowers the loss by a small fraction of it, which is what
    // large logistic regressions see at their start too. A rule that stops on one small decrease
    // stops there.
    const n = 2000;
    const a = Float64Array.from({ length: n }, (_, i) => 0.01 + (0.99 * i) / (n - 1));
    const f = (x: Float64Array, g: Float64Array) => {
      let loss = 0;
      for (let i = 0; i < n; i++) {
        const d = x[i]! - 100;
        loss += 0.5 * a[i]! * d * d;
        g[i] = a[i]! * d;
      }
      return loss;
    };
    const f0 = f(new Float64Array(n), new Float64Array(n));
    for (const tolerance of [1e-2, 1e-3, 1e-4]) {
      const x = new Float64Array(n);
      const r = await lbfgs(f, x, { maxIterations: 500, tolerance });
      expect(r.iterations).toBeGreaterThan(1);
      // Within 1 % of the way from the start to the optimum, whatever the tolerance.
      expect(r.loss).toBeLessThan(0.01 * f0);
    }
  });
});

/**
 * Text blocks (TrainOptions.textBlocks): word and character n-grams weighted as two TF-IDF vectors,
 * each normalised on its own. The reference here is written from scikit-learn's definitions
 * (TfidfVectorizer(sublinear_tf=True, smooth_idf=True, norm='l2') per block, concatenated as
 * FeatureUnion does) over the featurizer's named features, independently of the trainer's code.
 */
describe('sparse-linear text blocks', () => {
  const config = { charNgrams: [3, 4] };
  const featurizer = featurizerOf(config);
  const texts = [
    'the printer on floor two is jammed again', 'printer jammed, paper stuck', 'reset my password please',
    'password expired and the reset link is broken', 'laptop will not boot after the update', 'the update broke my laptop again and again',
  ];
  const targets = Int32Array.from([0, 0, 1, 1, 2, 2]);
  const idOf = (name: string) => (hashString(name) & ((1 << featurizer.config.hashBits) - 1)) >>> 0;

  /** Per text, feature id -> its value in the concatenation of the two unit-length TF-IDF blocks. */
  function reference(): Array<Map<number, number>> {
    const counts = texts.map((t) => {
      const m = new Map<string, number>();
      for (const n of featurizer.textFeatureNames(t)) m.set(n, (m.get(n) ?? 0) + 1);
      return m;
    });
    const df = new Map<string, number>();
    for (const m of counts) for (const n of m.keys()) df.set(n, (df.get(n) ?? 0) + 1);
    return counts.map((m) => {
      const out = new Map<number, number>();
      for (const block of ['w', 'c']) {
        const entries = [...m].filter(([n]) => n.startsWith(block));
        const tfidf = entries.map(([n, c]) => (1 + Math.log(c)) * (Math.log((1 + texts.length) / (1 + df.get(n)!)) + 1));
        const norm = Math.sqrt(tfidf.reduce((a, v) => a + v * v, 0));
        entries.forEach(([n], i) => out.set(idOf(n), tfidf[i]! / norm));
      }
      return out;
    });
  }

  const fitBlocks = async (textBlocks: boolean, maxIterations = 0) => {
    const vectors = texts.map((t) => featurizer.featurize(t));
    const charIds = charNgramIds(config, texts);
    const m = await trainSparseLinear(
      { vectors, targets, numLabels: 3, charNgramIds: charIds },
      { C: 10, minFeatureCount: 1, tfidf: true, textBlocks, maxIterations, tolerance: 1e-9 },
    );
    return { m, vectors, charIds };
  };

  it('marks exactly the character n-grams (the names c3:/c4:) as their own block', async () => {
    const { m, charIds } = await fitBlocks(true);
    const charNames = new Set(texts.flatMap((t) => featurizer.textFeatureNames(t)).filter((n) => n.startsWith('c')).map(idOf));
    expect([...charIds].sort()).toEqual([...charNames].sort());
    m.featureIds.forEach((id, r) => expect(m.charRows![r]).toBe(charNames.has(id) ? 1 : 0));
  });

  it('weighs each block as its own TF-IDF vector (sublinear tf, smooth idf, unit L2 norm), as FeatureUnion does', async () => {
    const { m, vectors } = await fitBlocks(true);
    const X = weightedCsr(vectors, m.featureIds, m.idf, Float64Array, m.charRows);
    const ref = reference();
    ref.forEach((want, i) => {
      const got = new Map<number, number>();
      for (let j = X.ptr[i]!; j < X.ptr[i + 1]!; j++) got.set(m.featureIds[X.cols[j]!]!, X.vals[j]!);
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      // The artifact stores idf as float32: agreement to float32 precision.
      for (const [id, v] of want) expect(got.get(id)!).toBeCloseTo(v, 6);
    });
    // One norm over both blocks (the former weighting) gives words far less than a block's unit length.
    const joint = weightedCsr(vectors, m.featureIds, m.idf, Float64Array, null);
    let words = 0;
    for (let j = joint.ptr[0]!; j < joint.ptr[1]!; j++) if (m.charRows![joint.cols[j]!] === 0) words += joint.vals[j]! ** 2;
    expect(Math.sqrt(words)).toBeLessThan(0.6);
  });

  it('the served model weighs inputs as the fit did: the artifact round trip gives the trainer\'s logits', async () => {
    const { m, vectors } = await fitBlocks(true, 200);
    const weights = { featureIds: m.featureIds, bias: m.bias, idf: m.idf, charRows: m.charRows, ...quantizeWeights(m.weights, m.featureIds.length, 3, 'float32') };
    const manifest = { labels: ['a', 'b', 'c'], model: { kind: 'sparse-linear', dimensions: { features: m.featureIds.length, labels: 3 }, quantization: 'float32', tfidf: true, textBlocks: true } } as unknown as ModelManifest;
    const sections = Object.fromEntries(sparseLinear.write(weights).map((s) => [s.name, s.data]));
    expect(Object.keys(sections)).toContain('charRows');
    const scorer = sparseLinear.scorer(manifest, sparseLinear.read(manifest, sections));
    const X = weightedCsr(vectors, m.featureIds, m.idf, Float64Array, m.charRows);
    vectors.forEach((v, i) => {
      const z = Array.from(m.bias, Number);
      for (let j = X.ptr[i]!; j < X.ptr[i + 1]!; j++) for (let c = 0; c < 3; c++) z[c]! += X.vals[j]! * m.weights[X.cols[j]! * 3 + c]!;
      const got = scorer.logits(v);
      z.forEach((want, c) => expect(got[c]!).toBeCloseTo(want, 5));
      expect(got.indexOf(Math.max(...got))).toBe(targets[i]);
    });
    // A charRows section must come with model.textBlocks, and the other way round.
    const { textBlocks: _, ...oneBlock } = manifest.model as unknown as Record<string, unknown>;
    expect(() => sparseLinear.read({ ...manifest, model: oneBlock } as unknown as ModelManifest, sections)).toThrow(/charRows/);
    const { charRows: __, ...noRows } = sections;
    expect(() => sparseLinear.read(manifest, noRows)).toThrow(/charRows/);
  });

  it('without textBlocks, or without character n-grams, the fit is the one-block fit, bit for bit', async () => {
    const oneBlock = await fitBlocks(false, 50);
    expect(oneBlock.m.charRows).toBeNull();
    const vectors = texts.map((t) => featurizerOf({ charNgrams: [] }).featurize(t));
    const words = charNgramIds({ charNgrams: [] }, texts);
    expect(words.size).toBe(0);
    const a = await trainSparseLinear({ vectors, targets, numLabels: 3, charNgramIds: words }, { C: 10, minFeatureCount: 1, tfidf: true, textBlocks: true, maxIterations: 50, tolerance: 1e-9 });
    const b = await trainSparseLinear({ vectors, targets, numLabels: 3 }, { C: 10, minFeatureCount: 1, tfidf: true, maxIterations: 50, tolerance: 1e-9 });
    expect(a.charRows).toBeNull();
    expect(Array.from(a.weights)).toEqual(Array.from(b.weights));
  });
});
