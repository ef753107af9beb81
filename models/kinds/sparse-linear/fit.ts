import * as tf from '@tensorflow/tfjs-core';
import { seededRandom } from '../../../common/random.ts';
import type { SparseVector } from '../../../featurizer/text.ts';
import type { ModelArtifact } from '../../artifact.ts';
import type { KindTrainer } from '../kind.ts';
import { quantizeWeights, sparseLinear, type Quantization, type SparseLinearInfo, type SparseLinearWeights } from './index.ts';

/**
 * Training of the "sparse-linear" model (see ./index.ts) with TensorFlow.js (the backend is
 * chosen by the trainer before it fits: trainer/backend.ts).
 *
 * Why this shape: the per-client routing task is a linear problem over sparse n-gram features
 * (TF-IDF + logistic regression is the reference to beat), and the model's shape decides the
 * trainer's speed far more than the backend (ARCHITECTURE.md: 3.3k ex/s dense multi-hot vs 58k ex/s
 * embedding-bag). So the weight matrix is an embedding table with one row per feature the client's
 * data touched (compact: no 2^N hash space in memory), the forward pass is an embedding-bag
 * (gather rows, scale by feature value, scatter-add per example) and the gradient of the gather is
 * a scatter-add into the table (`tf.customGrad`) instead of the generic UnsortedSegmentSum (which
 * the wasm backend does not even implement).
 */
export interface TrainingSet {
  vectors: SparseVector[];
  /** Class index per vector. */
  targets: Int32Array;
  numLabels: number;
  /** Optional per-example weights (e.g. label definitions count more). */
  sampleWeights?: Float32Array;
}

export interface TrainOptions {
  epochs: number;
  /**
   * Smallest batch. Larger training sets use larger batches (at most `stepsPerEpoch` steps per
   * epoch): each Adam step updates the whole (compact) table, so the step count, not the example
   * count, sets the cost. Measured on eps-10k (8k train): batch 128 -> 2.8 s, 512 -> 1.4 s at the same F1.
   */
  batchSize: number;
  stepsPerEpoch: number;
  /** Features seen in fewer training vectors get no row (see vocabularyOf). */
  minFeatureCount: number;
  learningRate: number;
  /** L2 penalty per example on the weights (not the bias). */
  l2: number;
  seed: number;
  /** Warm start: rows for feature ids present in `init` start from their previous values. */
  init?: { featureIds: Uint32Array; weights: Float32Array; bias: Float32Array };
  onEpoch?: (epoch: number, loss: number) => void | Promise<void>;
}

export const DEFAULT_TRAIN_OPTIONS: TrainOptions = { epochs: 10, batchSize: 32, stepsPerEpoch: 16, minFeatureCount: 2, learningRate: 0.1, l2: 1e-5, seed: 42 };

export interface TrainedLinearModel {
  featureIds: Uint32Array;
  /** Row-major [featureIds.length x numLabels]. */
  weights: Float32Array;
  bias: Float32Array;
  finalLoss: number;
}

/**
 * The compact vocabulary: feature ids seen in at least `minCount` training vectors, ascending (the
 * artifact's featureIds). Features seen once (mostly bigrams) are most of a vocabulary and carry
 * little: dropping them shrinks models (memory per served model) at a measured cost of < 0.5 F1.
 */
export function vocabularyOf(vectors: SparseVector[], minCount = 1): Uint32Array {
  const counts = new Map<number, number>();
  for (const v of vectors) for (const id of v.ids) counts.set(id, (counts.get(id) ?? 0) + 1);
  const kept: number[] = [];
  for (const [id, c] of counts) if (c >= minCount) kept.push(id);
  return Uint32Array.from(kept).sort();
}

/** A vector in table rows: the row of each known feature and its value (unknown features dropped). */
interface RowVector { rows: Int32Array; values: Float32Array }

/** Maps every vector to table rows once, not once per epoch (the Map lookups were 20% of a training). */
function toRows(vectors: SparseVector[], rowOf: Map<number, number>): RowVector[] {
  return vectors.map((v) => {
    const rows = new Int32Array(v.ids.length);
    const values = new Float32Array(v.ids.length);
    let k = 0;
    for (let j = 0; j < v.ids.length; j++) {
      const r = rowOf.get(v.ids[j]!);
      if (r === undefined) continue;
      rows[k] = r;
      values[k] = v.values[j]!;
      k++;
    }
    return { rows: rows.subarray(0, k), values: values.subarray(0, k) };
  });
}

/** A batch as flat (row index, value, example index) triples: no padding, no wasted gathers. */
function packBatch(vectors: RowVector[], order: Int32Array, start: number, end: number) {
  let nnz = 0;
  for (let i = start; i < end; i++) nnz += vectors[order[i]!]!.rows.length;
  const rows = new Int32Array(nnz);
  const vals = new Float32Array(nnz);
  const segs = new Int32Array(nnz);
  let k = 0;
  for (let i = start; i < end; i++) {
    const v = vectors[order[i]!]!;
    rows.set(v.rows, k);
    vals.set(v.values, k);
    segs.fill(i - start, k, k + v.rows.length);
    k += v.rows.length;
  }
  return { rows, vals, segs };
}

/** logits = bias + segmentSum(gather(W, rows) * vals, segs): the embedding-bag forward pass. */
function bagLogits(W: tf.Tensor2D, b: tf.Tensor1D, rows2d: tf.Tensor2D, vals: tf.Tensor2D, segs2d: tf.Tensor2D, batch: number, numLabels: number): tf.Tensor2D {
  // gatherND, not gather: on the wasm backend GatherV2 is ~20x slower for this shape (measured:
  // 22 ms vs 1.4 ms for 30k rows x 20 labels).
  const gathered = tf.mul(tf.gatherND(W, rows2d), vals);
  // scatterND accumulates duplicate indices: a segment sum the wasm backend implements natively
  // (it has no UnsortedSegmentSum kernel).
  return tf.add(tf.scatterND(segs2d, gathered, [batch, numLabels]), b) as tf.Tensor2D;
}

/**
 * One optimisation step with the gradient written out for the sparse case instead of taped.
 * The update is TF.js's dense Adam over the compact table: a "lazy" Adam that touches only the
 * batch's rows was measured too (half the CPU per step) but lost 2-4 macro-F1 points, because
 * dense Adam's L2 step also shrinks every untouched rare feature each step (strong regularisation
 * that a lazy update does not reproduce); larger batches recover the speed instead.
 * Gradient:
 * softmax cross-entropy gives dlogits = (softmax - onehot) * weight / sum(weight); each example's
 * dlogits is scattered back into exactly the rows it touched (a scatter-add, not the generic
 * UnsortedSegmentSum gather gradient), plus the L2 term. tfjs-core's autodiff would also need the
 * gradient registry that only the umbrella @tensorflow/tfjs package installs.
 */
function step(
  W: tf.Variable<tf.Rank.R2>, b: tf.Variable<tf.Rank.R1>, optimizer: tf.Optimizer, l2: number,
  packed: { rows: Int32Array; vals: Float32Array; segs: Int32Array }, y: Int32Array, sw: Float32Array, numLabels: number,
): tf.Scalar {
  return tf.tidy(() => {
    const batch = y.length;
    const rows2d = tf.tensor2d(packed.rows, [packed.rows.length, 1], 'int32');
    const vals = tf.tensor2d(packed.vals, [packed.vals.length, 1]);
    const segs2d = tf.tensor2d(packed.segs, [packed.segs.length, 1], 'int32');
    const onehot = tf.oneHot(tf.tensor1d(y, 'int32'), numLabels);
    const weights = tf.tensor2d(sw, [batch, 1]);
    const wsum = sw.reduce((a, v) => a + v, 0) || 1;
    const logits = bagLogits(W, b, rows2d, vals, segs2d, batch, numLabels);
    const logp = tf.logSoftmax(logits);
    const loss = tf.div(tf.neg(tf.sum(tf.mul(tf.mul(onehot, logp), weights))), wsum) as tf.Scalar;
    const dlogits = tf.div(tf.mul(tf.sub(tf.exp(logp), onehot), weights), wsum) as tf.Tensor2D;
    const perEntry = tf.mul(tf.gatherND(dlogits, segs2d), vals);
    let dW = tf.scatterND(rows2d, perEntry, W.shape) as tf.Tensor2D;
    if (l2 > 0) dW = tf.add(dW, tf.mul(W, 2 * l2));
    const db = tf.sum(dlogits, 0) as tf.Tensor1D;
    optimizer.applyGradients({ [W.name]: dW, [b.name]: db });
    return loss;
  });
}

let variableCounter = 0;

export async function trainSparseLinear(data: TrainingSet, opts: TrainOptions): Promise<TrainedLinearModel> {
  const { vectors, targets, numLabels } = data;
  const featureIds = vocabularyOf(vectors, opts.minFeatureCount);
  const V = featureIds.length;
  const rowOf = new Map<number, number>();
  featureIds.forEach((id, r) => rowOf.set(id, r));

  const initW = new Float32Array(Math.max(1, V) * numLabels);
  const initB = new Float32Array(numLabels);
  if (opts.init && opts.init.bias.length === numLabels) {
    initB.set(opts.init.bias);
    const prev = opts.init;
    for (let pr = 0; pr < prev.featureIds.length; pr++) {
      const r = rowOf.get(prev.featureIds[pr]!);
      if (r !== undefined) initW.set(prev.weights.subarray(pr * numLabels, (pr + 1) * numLabels), r * numLabels);
    }
  }
  const W = tf.variable(tf.tensor2d(initW, [Math.max(1, V), numLabels]), true, `W${++variableCounter}`);
  const b = tf.variable(tf.tensor1d(initB), true, `b${variableCounter}`);
  const optimizer = tf.train.adam(opts.learningRate);
  const random = seededRandom(opts.seed);
  const n = vectors.length;
  const batchSize = Math.max(opts.batchSize, Math.ceil(n / Math.max(1, opts.stepsPerEpoch)));
  const rowVectors = toRows(vectors, rowOf);
  const order = Int32Array.from({ length: n }, (_, i) => i);
  let finalLoss = NaN;
  try {
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      for (let i = n - 1; i > 0; i--) {
        const j = Math.floor(random() * (i + 1));
        const t = order[i]!;
        order[i] = order[j]!;
        order[j] = t;
      }
      let lossSum = 0;
      const losses: tf.Scalar[] = [];
      for (let start = 0; start < n; start += batchSize) {
        const end = Math.min(n, start + batchSize);
        const size = end - start;
        const packed = packBatch(rowVectors, order, start, end);
        const y = new Int32Array(size);
        const sw = new Float32Array(size);
        for (let i = 0; i < size; i++) {
          y[i] = targets[order[start + i]!]!;
          sw[i] = data.sampleWeights ? data.sampleWeights[order[start + i]!]! : 1;
        }
        const loss = step(W, b, optimizer, opts.l2, packed, y, sw, numLabels);
        if (loss) losses.push(loss);
      }
      // One device->host read per epoch, not per batch (a read synchronises the backend).
      if (losses.length) {
        const total = tf.tidy(() => tf.addN(losses));
        lossSum = (await total.data())[0]! / losses.length;
        total.dispose();
        tf.dispose(losses);
      }
      finalLoss = lossSum;
      await opts.onEpoch?.(epoch + 1, lossSum);
    }
    const weights = V > 0 ? (await W.data()) as Float32Array : new Float32Array(0);
    const bias = (await b.data()) as Float32Array;
    return { featureIds, weights: Float32Array.from(weights.subarray(0, V * numLabels)), bias: Float32Array.from(bias), finalLoss };
  } finally {
    W.dispose();
    b.dispose();
    optimizer.dispose();
  }
}

/** Logits of a trained model computed by TensorFlow.js (the golden reference the pure-JS predictor must match). */
export function tfLogits(model: TrainedLinearModel, vectors: SparseVector[], numLabels: number): Float32Array {
  return tf.tidy(() => {
    const rowOf = new Map<number, number>();
    model.featureIds.forEach((id, r) => rowOf.set(id, r));
    const order = Int32Array.from({ length: vectors.length }, (_, i) => i);
    const packed = packBatch(toRows(vectors, rowOf), order, 0, vectors.length);
    const W = tf.tensor2d(model.weights.length ? model.weights : new Float32Array(numLabels), [Math.max(1, model.featureIds.length), numLabels]);
    const segs2d = tf.tensor2d(packed.segs, [packed.segs.length, 1], 'int32');
    const logits = bagLogits(W, tf.tensor1d(model.bias), tf.tensor2d(packed.rows, [packed.rows.length, 1], 'int32'), tf.tensor2d(packed.vals, [packed.vals.length, 1]), segs2d, vectors.length, numLabels);
    return logits.dataSync() as Float32Array;
  });
}

/** The hyperparameters of a sparse-linear fit (the model search varies them). */
export type SparseLinearParams = Omit<TrainOptions, 'epochs' | 'seed' | 'init' | 'onEpoch'> & { quantization: Quantization };

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
  defaults: (({ epochs: _e, seed: _s, ...rest }) => ({ ...rest, quantization: 'int8-row' as Quantization }))(DEFAULT_TRAIN_OPTIONS),
  async fit(data, params, opts) {
    const { quantization, ...train } = params;
    const init = opts.init as TrainOptions['init'] | undefined;
    const fitted = await trainSparseLinear(data, {
      ...train, epochs: opts.epochs, seed: opts.seed, ...(init ? { init } : {}), ...(opts.onEpoch ? { onEpoch: opts.onEpoch } : {}),
    });
    const features = fitted.featureIds.length;
    const model: SparseLinearInfo = { kind: 'sparse-linear', dimensions: { features, labels: data.numLabels }, quantization };
    const weights: SparseLinearWeights = { featureIds: fitted.featureIds, bias: fitted.bias, ...quantizeWeights(fitted.weights, features, data.numLabels, quantization) };
    return { weights, model, finalLoss: fitted.finalLoss };
  },
  warmStart,
};
