import { describe, expect, it } from 'vitest';
import type { SparseVector } from '../featurizer/text.ts';
import { trainSparseLinear, type TrainedLinearModel } from '../models/kinds/sparse-linear/fit.ts';

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

const fit = (d: ReturnType<typeof dataset>, over: { multiClass?: 'ovr' | 'multinomial'; balanced?: boolean }) =>
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
