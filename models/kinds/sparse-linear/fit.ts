import * as tf from '@tensorflow/tfjs-core';
import type { SparseVector } from '../../../featurizer/text.ts';
import type { ModelArtifact } from '../../artifact.ts';
import type { KindTrainer } from '../kind.ts';
import { quantizeWeights, rowLookup, sparseLinear, weighVector, type Quantization, type SparseLinearInfo, type SparseLinearWeights } from './index.ts';

/**
 * Training of the "sparse-linear" model (see ./index.ts): multinomial logistic regression over
 * TF-IDF-weighted sparse n-gram features, fitted to convergence by full-batch L-BFGS in plain
 * JavaScript (Float64) over a compact sparse matrix (CSR, one column per feature the client's data
 * touched).
 *
 * Why this solver: the objective is convex, so a quasi-Newton method reaches the optimum that
 * sklearn's LogisticRegression(solver='lbfgs') reaches (the reference to beat), while the former
 * minibatch Adam stopped after a fixed number of epochs at a point that depended on the learning
 * rate and batch size (measured 2-4 macro-F1 points below the reference on real text). At these
 * sizes (a client's 1k-30k short texts, ~10-50 non-zeros each, 5-30 labels) one loss+gradient pass
 * is a few million multiply-adds: plain JS beats a TensorFlow.js round trip per step, and needs no
 * backend. Why hand-written: no maintained npm package offers L-BFGS over typed arrays with a
 * caller-supplied gradient (the candidates are unmaintained ports or dense-matrix toolkits), and
 * the two-loop recursion with a backtracking line search is ~60 lines.
 *
 * Objective (sklearn's, divided by C times the total sample weight S so gradients are O(1)):
 *   f(W, b) = (1/S) * sum_i w_i * CE(softmax(b + x_i W), y_i) + ||W||^2 / (2 C S)
 * (the bias is not penalised, as in sklearn).
 */
export interface TrainingSet {
  vectors: SparseVector[];
  /** Class index per vector. */
  targets: Int32Array;
  numLabels: number;
  /** Optional per-example weights (e.g. label definitions count more). */
  sampleWeights?: Float32Array;
  /** Feature ids of metadata and real-time features: TF-IDF weighting leaves them as they are. */
  nonTextIds?: ReadonlySet<number>;
  /** Feature ids of character n-grams: with `textBlocks`, TF-IDF normalises them as a block of their own. */
  charNgramIds?: ReadonlySet<number>;
}

export interface TrainOptions {
  /** Inverse L2 strength, as sklearn's C. */
  C: number;
  /**
   * 'multinomial' (softmax cross-entropy, one problem) or 'ovr' (one binary logistic problem per
   * label, as liblinear solves it: on the WordNet clients of the real-text check it scored 0.2-0.7
   * points above multinomial in scikit-learn). Absent = multinomial.
   */
  multiClass?: 'multinomial' | 'ovr';
  /**
   * Weigh each example by n / (labels x its label's count), as sklearn's class_weight='balanced':
   * macro-F1 counts every label alike. A number b in [0, 1] goes part of the way, weight
   * 1 + b (balanced - 1): 0 is unweighted, 1 (or true) balanced (see DEFAULT_SEARCH).
   */
  balanced?: boolean | number;
  /** Features seen in fewer training vectors get no row (see vocabularyOf). */
  minFeatureCount: number;
  /** TF-IDF weighting of the text features (an `idf` section in the artifact). */
  tfidf: boolean;
  /**
   * With TF-IDF and character n-grams: word and character n-grams as two TF-IDF blocks, each
   * normalised on its own (a `charRows` section; see ./index.ts). In scikit-learn on the WordNet
   * verb glosses, word 1-2-grams + character 3-4-grams scored 0.6848 macro-F1 as two blocks
   * (FeatureUnion) and 0.6598 as one (C=10; word n-grams alone 0.6383, 0.6655 at C=100).
   */
  textBlocks?: boolean;
  /** L-BFGS iterations at most (0 leaves the initial weights: used by tests to make a deliberately bad model). */
  maxIterations: number;
  /** Stop when the relative decrease of the objective over an iteration falls below this. */
  tolerance: number;
  /** Warm start: rows for feature ids present in `init` start from their previous values. */
  init?: { featureIds: Uint32Array; weights: Float32Array; bias: Float32Array };
  onIteration?: (iteration: number, loss: number) => void | Promise<void>;
}

export const DEFAULT_TRAIN_OPTIONS: TrainOptions = { C: 10, minFeatureCount: 2, tfidf: true, maxIterations: 200, tolerance: 1e-5 };

export interface TrainedLinearModel {
  featureIds: Uint32Array;
  /** Row-major [featureIds.length x numLabels]. */
  weights: Float32Array;
  bias: Float32Array;
  /** Per-row idf (0 for non-text rows), or null without TF-IDF weighting. */
  idf: Float32Array | null;
  /** 1 per character n-gram row, with `textBlocks` (null: one block). */
  charRows: Uint8Array | null;
  finalLoss: number;
  iterations: number;
  /** Loss+gradient passes (iterations plus line-search retries). */
  evaluations: number;
}

/**
 * The compact vocabulary: feature ids seen in at least `minCount` training vectors, ascending (the
 * artifact's featureIds). Features seen once (mostly bigrams) are most of a vocabulary and carry
 * little: dropping them (the default minFeatureCount 2) made models 4x smaller and fits faster; on
 * the fortunes client of the real-text check it scored 0.439 vs 0.429 macro-F1 (C=10), but short
 * texts (WordNet verb glosses) may lose by it: an open question for the model search.
 */
export function vocabularyOf(vectors: SparseVector[], minCount = 1): Uint32Array {
  const counts = new Map<number, number>();
  for (const v of vectors) for (const id of v.ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  const kept: number[] = [];
  for (const [id, c] of counts) if (c >= minCount) kept.push(id);
  return Uint32Array.from(kept).sort();
}

/** Smoothed idf as sklearn's TfidfVectorizer: ln((1 + n) / (1 + df)) + 1, rounded to float32 (what the artifact stores). */
export function idfOf(vectors: SparseVector[], featureIds: Uint32Array, nonTextIds: ReadonlySet<number> | undefined): Float32Array {
  const rowOf = rowLookup(featureIds);
  const df = new Float64Array(featureIds.length);
  for (const v of vectors) for (const id of v.ids) {
    const r = rowOf(id);
    if (r >= 0) df[r]! += 1;
  }
  const n = vectors.length;
  const idf = new Float32Array(featureIds.length);
  for (let r = 0; r < featureIds.length; r++) idf[r] = nonTextIds?.has(featureIds[r]!) ? 0 : Math.log((1 + n) / (1 + df[r]!)) + 1;
  return idf;
}

/** 1 for each row whose feature id is a character n-gram, 0 for the rest (see TrainOptions.textBlocks). */
export function charRowsOf(featureIds: Uint32Array, charNgramIds: ReadonlySet<number>): Uint8Array {
  const out = new Uint8Array(featureIds.length);
  for (let r = 0; r < featureIds.length; r++) if (charNgramIds.has(featureIds[r]!)) out[r] = 1;
  return out;
}

/**
 * A training matrix in compressed sparse rows: `cols` are model rows (featureIds positions),
 * values weighted exactly as the scorer weighs them (weighVector). Float64 values for this solver;
 * the embedding-bag kind keeps Float32 (its embedding tables dominate memory already).
 */
export interface Csr<V extends Float32Array | Float64Array = Float64Array> { ptr: Int32Array; cols: Int32Array; vals: V }

export function weightedCsr<V extends Float32Array | Float64Array>(
  vectors: SparseVector[], featureIds: Uint32Array, idf: Float32Array | null, Values: new (length: number) => V, charRows: Uint8Array | null = null,
): Csr<V> {
  const rowOf = rowLookup(featureIds);
  let nnz = 0;
  for (const v of vectors) nnz += v.ids.length;
  const ptr = new Int32Array(vectors.length + 1);
  const cols = new Int32Array(nnz);
  const vals = new Values(nnz);
  let k = 0;
  let rows = new Int32Array(64);
  let out = new Float64Array(64);
  vectors.forEach((v, i) => {
    if (rows.length < v.ids.length) {
      rows = new Int32Array(v.ids.length);
      out = new Float64Array(v.ids.length);
    }
    const m = weighVector(v, rowOf, idf, rows, out, charRows);
    cols.set(rows.subarray(0, m), k);
    for (let j = 0; j < m; j++) vals[k + j] = out[j]!;
    k += m;
    ptr[i + 1] = k;
  });
  return { ptr, cols: cols.slice(0, k), vals: vals.slice(0, k) as V };
}

/**
 * Objective and gradient at theta = [W row-major (V x K), b (K)]. One pass over the non-zeros
 * for the logits and one to scatter the gradient back into the rows each example touched.
 */
function lossAndGradient(theta: Float64Array, grad: Float64Array, X: Csr, y: Int32Array, sw: Float64Array, S: number, V: number, K: number, C: number, ovr: boolean): number {
  grad.fill(0);
  // Locals, not X.cols etc.: V8 cannot prove the typed arrays do not alias `grad` and would reload them per access.
  const { ptr, cols, vals } = X;
  const bOff = V * K;
  const z = new Float64Array(K);
  let loss = 0;
  const n = y.length;
  for (let i = 0; i < n; i++) {
    for (let c = 0; c < K; c++) z[c] = theta[bOff + c]!;
    const start = ptr[i]!;
    const end = ptr[i + 1]!;
    for (let j = start; j < end; j++) {
      const base = cols[j]! * K;
      const v = vals[j]!;
      for (let c = 0; c < K; c++) z[c]! += v * theta[base + c]!;
    }
    const w = sw[i]! / S;
    const t = y[i]!;
    if (ovr) {
      // K binary problems: log(1 + e^z) - [c = t] z each; z becomes w (sigmoid(z) - [c = t]).
      for (let c = 0; c < K; c++) {
        const zc = z[c]!;
        const yc = c === t ? 1 : 0;
        // Stable log(1 + e^z) and sigmoid for large |z|.
        loss += w * ((zc > 0 ? zc + Math.log1p(Math.exp(-zc)) : Math.log1p(Math.exp(zc))) - yc * zc);
        const p = zc >= 0 ? 1 / (1 + Math.exp(-zc)) : Math.exp(zc) / (1 + Math.exp(zc));
        z[c] = w * (p - yc);
      }
    } else {
      let max = -Infinity;
      for (let c = 0; c < K; c++) if (z[c]! > max) max = z[c]!;
      let sum = 0;
      for (let c = 0; c < K; c++) {
        z[c] = Math.exp(z[c]! - max);
        sum += z[c]!;
      }
      loss -= w * (Math.log(z[t]! / sum));
      // z becomes dloss/dlogits for this example.
      for (let c = 0; c < K; c++) z[c] = w * (z[c]! / sum - (c === t ? 1 : 0));
    }
    for (let c = 0; c < K; c++) grad[bOff + c]! += z[c]!;
    for (let j = start; j < end; j++) {
      const base = cols[j]! * K;
      const v = vals[j]!;
      for (let c = 0; c < K; c++) grad[base + c]! += v * z[c]!;
    }
  }
  const lambda = 1 / (C * S);
  let reg = 0;
  for (let p = 0; p < bOff; p++) {
    const t = theta[p]!;
    reg += t * t;
    grad[p]! += lambda * t;
  }
  return loss + 0.5 * lambda * reg;
}

// Small monomorphic vector kernels: V8 optimises these far better than the same loops inlined in
// one long async function.
function dot(a: Float64Array, b: Float64Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

/** y += a * x */
function axpy(a: number, x: Float64Array, y: Float64Array): void {
  for (let i = 0; i < y.length; i++) y[i]! += a * x[i]!;
}

function scale(a: number, x: Float64Array): void {
  for (let i = 0; i < x.length; i++) x[i]! *= a;
}

function maxAbs(x: Float64Array): number {
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    const v = Math.abs(x[i]!);
    if (v > m) m = v;
  }
  return m;
}

/** out = x + a * d */
function stepTo(out: Float64Array, x: Float64Array, a: number, d: Float64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = x[i]! + a * d[i]!;
}

/** out = a - b */
function diff(out: Float64Array, a: Float64Array, b: Float64Array): void {
  for (let i = 0; i < out.length; i++) out[i] = a[i]! - b[i]!;
}

/**
 * L-BFGS (Nocedal & Wright, algorithm 7.4: two-loop recursion, memory m) with a backtracking
 * Armijo line search; a pair whose curvature s.y is not positive is skipped, which keeps the
 * inverse-Hessian estimate positive definite without a Wolfe search. Minimises in place.
 */
/** Iterations over which the relative decrease is averaged before a fit counts as converged. */
const STALL_WINDOW = 5;

export async function lbfgs(
  f: (x: Float64Array, g: Float64Array) => number, x: Float64Array,
  opts: { maxIterations: number; tolerance: number; memory?: number; onIteration?: (it: number, loss: number) => void | Promise<void> },
): Promise<{ loss: number; iterations: number; evaluations: number }> {
  // Memory 5, not the textbook 10: the two-loop recursion costs 4m passes over all V x K weights per
  // iteration, which with every feature kept (minFeatureCount 1) outweighs the gradient itself;
  // measured on two real-text clients, m = 5 took as many iterations as m = 10 at 0.5-0.7x the time.
  const m = opts.memory ?? 5;
  const n = x.length;
  const g = new Float64Array(n);
  let evaluations = 1;
  let fx = f(x, g);
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  const d = new Float64Array(n);
  const xNew = new Float64Array(n);
  const gNew = new Float64Array(n);
  const alpha = new Float64Array(m);
  let it = 0;
  // The loss after each of the last STALL_WINDOW + 1 iterations (slot 0: the initial loss).
  const history = new Float64Array(STALL_WINDOW + 1);
  history[0] = fx;
  let yieldedAt = performance.now();
  for (; it < opts.maxIterations; it++) {
    if (maxAbs(g) < 1e-10) break;
    // Two-loop recursion: d = -H g.
    d.fill(0);
    axpy(-1, g, d);
    for (let k = S.length - 1; k >= 0; k--) {
      alpha[k] = rho[k]! * dot(S[k]!, d);
      axpy(-alpha[k]!, Y[k]!, d);
    }
    if (S.length) {
      const last = S.length - 1;
      scale(dot(S[last]!, Y[last]!) / dot(Y[last]!, Y[last]!), d);
    }
    for (let k = 0; k < S.length; k++) axpy(alpha[k]! - rho[k]! * dot(Y[k]!, d), S[k]!, d);
    let slope = dot(g, d);
    if (slope >= 0) {
      // Not a descent direction (numerical trouble): restart from steepest descent.
      S.length = 0; Y.length = 0; rho.length = 0;
      d.fill(0);
      axpy(-1, g, d);
      slope = dot(g, d);
    }
    let step = S.length ? 1 : Math.min(1, 1 / Math.sqrt(-slope));
    let fNew = NaN;
    let accepted = false;
    for (let tries = 0; tries < 30; tries++) {
      stepTo(xNew, x, step, d);
      fNew = f(xNew, gNew);
      evaluations++;
      if (Number.isFinite(fNew) && fNew <= fx + 1e-4 * step * slope) {
        accepted = true;
        break;
      }
      step *= 0.5;
    }
    if (!accepted) break;
    // Reuse the oldest pair's buffers once the memory is full (no 2 x n allocation per iteration).
    const recycled = S.length === m;
    const s = recycled ? S.shift()! : new Float64Array(n);
    const yv = recycled ? Y.shift()! : new Float64Array(n);
    if (recycled) rho.shift();
    diff(s, xNew, x);
    diff(yv, gNew, g);
    const sy = dot(s, yv);
    if (sy > 1e-12) {
      S.push(s); Y.push(yv); rho.push(1 / sy);
    }
    x.set(xNew);
    g.set(gNew);
    fx = fNew;
    await opts.onIteration?.(it + 1, fx);
    // A fit runs for seconds on the trainer's only thread: give the event loop a turn every ~20 ms
    // so the Kafka client's heartbeats and timers keep running (an awaited callback alone runs
    // as a microtask and lets no I/O through).
    if (performance.now() - yieldedAt > 20) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      yieldedAt = performance.now();
    }
    // Converged when the loss fell by less than `tolerance` (relative) per iteration on average
    // over the last STALL_WINDOW iterations. One iteration's decrease is no test: the first steps
    // (steepest descent before curvature pairs exist) and line-search backtracks often move the
    // loss very little, and stopping there left a cold fit after 1 iteration at tolerance 1e-3
    // (macro-F1 0.62 where the converged fit scores 0.88 on a real-text client) and the search's
    // fits after 3 to 42 (docs/trainer.md).
    // After k = it + 1 iterations: the loss k iterations in lives in slot k % (W + 1), the loss
    // W iterations earlier in slot (k + 1) % (W + 1).
    history[(it + 1) % (STALL_WINDOW + 1)] = fx;
    if (it + 1 >= STALL_WINDOW && history[(it + 2) % (STALL_WINDOW + 1)]! - fx <= STALL_WINDOW * opts.tolerance * Math.max(Math.abs(fx), 1)) {
      it++;
      break;
    }
  }
  return { loss: fx, iterations: it, evaluations };
}

export async function trainSparseLinear(data: TrainingSet, opts: TrainOptions): Promise<TrainedLinearModel> {
  const { vectors, targets, numLabels: K } = data;
  const featureIds = vocabularyOf(vectors, opts.minFeatureCount);
  const V = featureIds.length;
  const idf = opts.tfidf ? idfOf(vectors, featureIds, data.nonTextIds) : null;
  const charRows = idf && opts.textBlocks && data.charNgramIds?.size ? charRowsOf(featureIds, data.charNgramIds) : null;
  const X = weightedCsr(vectors, featureIds, idf, Float64Array, charRows);
  const theta = new Float64Array(V * K + K);
  if (opts.init && opts.init.bias.length === K) {
    const prev = opts.init;
    for (let c = 0; c < K; c++) theta[V * K + c] = prev.bias[c]!;
    const rowOf = rowLookup(featureIds);
    for (let pr = 0; pr < prev.featureIds.length; pr++) {
      const r = rowOf(prev.featureIds[pr]!);
      if (r >= 0) for (let c = 0; c < K; c++) theta[r * K + c] = prev.weights[pr * K + c]!;
    }
  }
  const sw = new Float64Array(vectors.length);
  let S = 0;
  const perLabel = new Float64Array(K);
  const share = opts.balanced === true ? 1 : Math.min(1, Math.max(0, Number(opts.balanced ?? 0)));
  if (opts.balanced) {
    for (let i = 0; i < vectors.length; i++) perLabel[targets[i]!]! += data.sampleWeights ? data.sampleWeights[i]! : 1;
  }
  let present = 0;
  for (let c = 0; c < K; c++) if (perLabel[c]! > 0) present++;
  let total = 0;
  for (let c = 0; c < K; c++) total += perLabel[c]!;
  for (let i = 0; i < vectors.length; i++) {
    sw[i] = data.sampleWeights ? data.sampleWeights[i]! : 1;
    if (opts.balanced) {
      const balancedWeight = total / (present * perLabel[targets[i]!]!);
      sw[i]! *= share === 1 ? balancedWeight : 1 + share * (balancedWeight - 1);
    }
    S += sw[i]!;
  }
  S = S || 1;
  const result = await lbfgs(
    (x, g) => lossAndGradient(x, g, X, targets, sw, S, V, K, opts.C, opts.multiClass === 'ovr'), theta,
    { maxIterations: opts.maxIterations, tolerance: opts.tolerance, ...(opts.onIteration ? { onIteration: opts.onIteration } : {}) },
  );
  return {
    featureIds, idf, charRows, weights: Float32Array.from(theta.subarray(0, V * K)), bias: Float32Array.from(theta.subarray(V * K)),
    finalLoss: result.loss, iterations: result.iterations, evaluations: result.evaluations,
  };
}

/**
 * Logits of an unweighted (no idf) model computed by TensorFlow.js: an independent reference the
 * pure-JS scorer must match (test/models-artifact.test.ts).
 */
export function tfLogits(model: TrainedLinearModel, vectors: SparseVector[], numLabels: number): Float32Array {
  return tf.tidy(() => {
    const rowOf = rowLookup(model.featureIds);
    const rows: number[] = [];
    const vals: number[] = [];
    const segs: number[] = [];
    vectors.forEach((v, i) => v.ids.forEach((id, j) => {
      const r = rowOf(id);
      if (r < 0) return;
      rows.push(r);
      vals.push(v.values[j]!);
      segs.push(i);
    }));
    const W = tf.tensor2d(model.weights.length ? model.weights : new Float32Array(numLabels), [Math.max(1, model.featureIds.length), numLabels]);
    const gathered = tf.mul(tf.gatherND(W, tf.tensor2d(rows, [rows.length, 1], 'int32')), tf.tensor2d(vals, [vals.length, 1]));
    const logits = tf.add(tf.scatterND(tf.tensor2d(segs, [segs.length, 1], 'int32'), gathered, [vectors.length, numLabels]), tf.tensor1d(model.bias));
    return logits.dataSync() as Float32Array;
  });
}

/** The hyperparameters of a sparse-linear fit (the model search varies C and tfidf). */
export type SparseLinearParams = Omit<TrainOptions, 'init' | 'onIteration'> & { quantization: Quantization };

/** The previous model's float weights with columns moved to the new label order (new labels start at 0). */
function warmStart(parent: ModelArtifact, labels: readonly string[]): TrainOptions['init'] | undefined {
  if (parent.manifest.model.kind !== sparseLinear.name) return undefined;
  const old = parent.manifest.labels;
  const map = labels.map((l) => old.indexOf(l));
  const shared = map.filter((i) => i >= 0).length;
  // Warm start helps when most outputs carry over; with few shared labels it is a cold start.
  if (shared < 2 || shared < labels.length / 2) return undefined;
  const { featureIds, weights, rowScales, bias } = sparseLinear.read(parent.manifest, parent.sections);
  const C = labels.length;
  const O = old.length;
  const w = new Float32Array(featureIds.length * C);
  for (let r = 0; r < featureIds.length; r++) {
    const s = rowScales ? rowScales[r]! : 1;
    for (let c = 0; c < C; c++) {
      const oc = map[c]!;
      if (oc >= 0) w[r * C + c] = weights[r * O + oc]! * s;
    }
  }
  const b = new Float32Array(C);
  for (let c = 0; c < C; c++) if (map[c]! >= 0) b[c] = bias[map[c]!]!;
  return { featureIds, weights: w, bias: b };
}

export const sparseLinearTrainer: KindTrainer<SparseLinearWeights, SparseLinearParams> = {
  kind: sparseLinear,
  defaults: { ...DEFAULT_TRAIN_OPTIONS, quantization: 'int8-row' },
  async fit(data, params, opts) {
    const { quantization, ...train } = params;
    const init = opts.init as TrainOptions['init'] | undefined;
    const fitted = await trainSparseLinear(data, {
      ...train, ...(init ? { init } : {}), ...(opts.onEpoch ? { onIteration: opts.onEpoch } : {}),
    });
    const features = fitted.featureIds.length;
    const model: SparseLinearInfo = {
      kind: 'sparse-linear', dimensions: { features, labels: data.numLabels }, quantization, ...(fitted.idf ? { tfidf: true } : {}),
      ...(fitted.charRows ? { textBlocks: true } : {}),
    };
    const weights: SparseLinearWeights = {
      featureIds: fitted.featureIds, bias: fitted.bias, idf: fitted.idf, charRows: fitted.charRows, ...quantizeWeights(fitted.weights, features, data.numLabels, quantization),
    };
    return { weights, model, finalLoss: fitted.finalLoss, iterations: fitted.iterations, backend: 'js-lbfgs' };
  },
  warmStart,
};
