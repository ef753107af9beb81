import type { SparseVector } from '../../../featurizer/text.ts';
import { corrupt, type ArtifactSection, type ModelInfo, type ModelManifest } from '../../artifact.ts';
import type { ModelKind, Scorer } from '../kind.ts';

/**
 * "sparse-linear": a linear softmax classifier over hashed sparse features:
 * logits[c] = bias[c] + sum_i value_i * W[row(id_i)][c]. Only the rows of feature ids the
 * client's training data touched are stored (`featureIds`, ascending: the scorer finds a row by
 * binary search), so a model's size follows its client's vocabulary, not the hash space. Weights
 * are int8 with one float32 scale per row (row-wise absmax quantisation), or float32.
 *
 * TF-IDF weighting (models since the L-BFGS trainer): an optional `idf` section holds one float32
 * per row. The featurizer's text features arrive with sublinear tf, L2-normalised; the scorer
 * multiplies each text feature by its row's idf and L2-normalises the text part again (what
 * sklearn's TfidfVectorizer(sublinear_tf=True) computes, with the idf learnt from the client's
 * training data). Rows whose idf is 0 (metadata and real-time features) keep their value and stay
 * out of the norm. Doing it here, not in the featurizer, keeps the featurizer's output (shared by
 * every model and pinned by test/fixtures/) unchanged; artifacts without `idf` score as before.
 *
 * Two text blocks (models whose `textBlocks` is set): with character n-grams next to word
 * n-grams, one norm over both lets the far more numerous character n-grams (a 6-letter word gives
 * 11 of orders 3-4, and one word feature) take most of it, so every word feature is scaled down by
 * a factor that grows with the text's length and the L2 penalty then holds words back more than
 * characters. A `charRows` section (uint8 per row, 1 = character n-gram) makes each block a TF-IDF
 * vector normalised on its own, as scikit-learn's FeatureUnion of a word and a character
 * TfidfVectorizer computes: words keep the scale they have in a word-only model.
 *
 * Sections, in this order: featureIds (uint32), weights (int8 | float32, row-major
 * [features x labels]), rowScales (float32, int8 only), bias (float32), idf (float32, optional),
 * charRows (uint8, optional, only with idf).
 */
export type Quantization = 'int8-row' | 'float32';

export interface SparseLinearInfo extends ModelInfo {
  kind: 'sparse-linear';
  /** Stored feature rows x labels. */
  dimensions: { features: number; labels: number };
  quantization: Quantization;
  /** True when the artifact has an `idf` section (TF-IDF weighting in the scorer); absent on older artifacts. */
  tfidf?: boolean;
  /** True when the artifact has a `charRows` section: word and character n-grams normalised as separate TF-IDF blocks. */
  textBlocks?: boolean;
}

export interface SparseLinearWeights {
  featureIds: Uint32Array;
  /** Row-major [features x labels]. */
  weights: Int8Array | Float32Array;
  /** One scale per row, for int8-row. */
  rowScales: Float32Array | null;
  bias: Float32Array;
  /** Per-row idf for text features, 0 for features left unweighted; null = no TF-IDF weighting (older artifacts). */
  idf?: Float32Array | null;
  /** 1 for a row of a character n-gram (its own TF-IDF block), 0 otherwise; null = one block (older artifacts). */
  charRows?: Uint8Array | null;
}

/**
 * The row of a feature id in the ascending featureIds, or -1 when the model has no row for it.
 * Feature ids are hashes, spread evenly over the hash space, so the row is first guessed from the
 * id's value (interpolation), then bracketed by galloping outwards from the guess and found by
 * binary search inside the bracket: ~2 cache lines touched per lookup instead of the ~12 of a
 * binary search over a few thousand rows. On the server most models are cold in the CPU cache
 * (each request is another client's model), where the binary search was ~10 µs per prediction
 * (docs/benchmarks/server.md). Any ascending input is handled correctly; uneven ids only gallop
 * further.
 */
export function rowLookup(featureIds: Uint32Array): (id: number) => number {
  const n = featureIds.length;
  if (n === 0) return () => -1;
  const first = featureIds[0]!;
  const last = featureIds[n - 1]!;
  const perId = n > 1 ? (n - 1) / (last - first) : 0;
  return (id: number): number => {
    if (id < first || id > last) return -1;
    const g = Math.floor((id - first) * perId);
    const v = featureIds[g]!;
    if (v === id) return g;
    let lo: number;
    let hi: number;
    if (v < id) {
      lo = g + 1;
      hi = g + 1;
      for (let step = 1; hi < n && featureIds[hi]! < id; step *= 2) {
        lo = hi + 1;
        hi = g + 2 * step;
      }
      if (hi >= n) hi = n - 1;
    } else {
      hi = g - 1;
      lo = g - 1;
      for (let step = 1; lo >= 0 && featureIds[lo]! > id; step *= 2) {
        hi = lo - 1;
        lo = g - 2 * step;
      }
      if (lo < 0) lo = 0;
    }
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const m = featureIds[mid]!;
      if (m === id) return mid;
      if (m < id) lo = mid + 1;
      else hi = mid - 1;
    }
    return -1;
  };
}

/**
 * A vector in model rows with TF-IDF weighting applied (see the header): writes the row of each
 * known feature and its weighted value into `rows`/`out` and returns how many. Features without a
 * row are dropped before the norm, as a TF-IDF vocabulary drops unseen words. With `charRows`,
 * word and character n-grams are normalised separately (each block to unit length). The trainer
 * uses this same function on its training vectors, so training and serving see identical inputs.
 */
export function weighVector(
  vector: SparseVector, rowOf: (id: number) => number, idf: Float32Array | null, rows: Int32Array, out: Float64Array,
  charRows: Uint8Array | null = null,
): number {
  const { ids, values } = vector;
  let k = 0;
  let norm = 0;
  let charNorm = 0;
  for (let i = 0; i < ids.length; i++) {
    const r = rowOf(ids[i]!);
    if (r < 0) continue;
    const f = idf ? idf[r]! : 0;
    const v = f > 0 ? values[i]! * f : values[i]!;
    if (f > 0) {
      if (charRows !== null && charRows[r] === 1) charNorm += v * v;
      else norm += v * v;
    }
    rows[k] = r;
    out[k] = v;
    k++;
  }
  if (!idf) return k;
  if (charRows === null) {
    // One block: exactly the arithmetic of artifacts written before text blocks.
    if (norm > 0) {
      const scale = 1 / Math.sqrt(norm);
      for (let j = 0; j < k; j++) if (idf[rows[j]!]! > 0) out[j]! *= scale;
    }
    return k;
  }
  const wordScale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  const charScale = charNorm > 0 ? 1 / Math.sqrt(charNorm) : 0;
  for (let j = 0; j < k; j++) {
    const r = rows[j]!;
    if (idf[r]! > 0) out[j]! *= charRows[r] === 1 ? charScale : wordScale;
  }
  return k;
}

/** Float32 weights -> stored form. int8-row keeps each row's largest magnitude exact and rounds the rest to 1/127 of it. */
export function quantizeWeights(
  dense: Float32Array, features: number, labels: number, quantization: Quantization,
): { weights: Int8Array | Float32Array; rowScales: Float32Array | null } {
  if (quantization === 'float32') return { weights: Float32Array.from(dense), rowScales: null };
  const q = new Int8Array(features * labels);
  const scales = new Float32Array(features);
  for (let r = 0; r < features; r++) {
    let max = 0;
    const base = r * labels;
    for (let c = 0; c < labels; c++) max = Math.max(max, Math.abs(dense[base + c]!));
    const scale = max / 127;
    scales[r] = scale;
    if (scale === 0) continue;
    for (let c = 0; c < labels; c++) q[base + c] = Math.round(dense[base + c]! / scale);
  }
  return { weights: q, rowScales: scales };
}

function info(manifest: ModelManifest): SparseLinearInfo {
  const m = manifest.model as Partial<SparseLinearInfo>;
  const d = m.dimensions;
  if (!d || !Number.isInteger(d.features) || !Number.isInteger(d.labels) || d.features < 0 || d.labels < 1) throw corrupt('sparse-linear dimensions missing or invalid');
  if (m.quantization !== 'int8-row' && m.quantization !== 'float32') throw corrupt(`unknown quantization ${String(m.quantization)}`);
  return m as SparseLinearInfo;
}

export const sparseLinear: ModelKind<SparseLinearWeights> = {
  name: 'sparse-linear',

  read(manifest, sections) {
    const { dimensions: { features, labels }, tfidf, textBlocks } = info(manifest);
    const { featureIds, weights, rowScales, bias, idf, charRows } = sections;
    if ((tfidf === true) !== (idf !== undefined)) throw corrupt(tfidf ? 'idf section missing' : 'idf section without model.tfidf');
    if ((textBlocks === true) !== (charRows !== undefined)) throw corrupt(textBlocks ? 'charRows section missing' : 'charRows section without model.textBlocks');
    if (textBlocks && !tfidf) throw corrupt('model.textBlocks without model.tfidf');
    if (charRows !== undefined && !(charRows instanceof Uint8Array && charRows.length === features)) throw corrupt('charRows wrong length');
    if (!(featureIds instanceof Uint32Array) || featureIds.length !== features) throw corrupt('featureIds missing or wrong length');
    if (!(weights instanceof Int8Array || weights instanceof Float32Array) || weights.length !== features * labels) throw corrupt('weights missing or wrong length');
    if (!(bias instanceof Float32Array) || bias.length !== labels || manifest.labels.length !== labels) throw corrupt('bias/labels mismatch');
    if (weights instanceof Int8Array && !(rowScales instanceof Float32Array && rowScales.length === features)) throw corrupt('rowScales missing');
    if (idf !== undefined && !(idf instanceof Float32Array && idf.length === features)) throw corrupt('idf wrong length');
    for (let i = 1; i < featureIds.length; i++) if (featureIds[i]! <= featureIds[i - 1]!) throw corrupt('featureIds not ascending');
    return {
      featureIds, weights, rowScales: rowScales instanceof Float32Array ? rowScales : null, bias, idf: idf instanceof Float32Array ? idf : null,
      charRows: charRows instanceof Uint8Array ? charRows : null,
    };
  },

  write(w): ArtifactSection[] {
    return [
      { name: 'featureIds', data: w.featureIds },
      { name: 'weights', data: w.weights },
      ...(w.rowScales ? [{ name: 'rowScales', data: w.rowScales }] : []),
      { name: 'bias', data: w.bias },
      ...(w.idf ? [{ name: 'idf', data: w.idf }] : []),
      ...(w.idf && w.charRows ? [{ name: 'charRows', data: w.charRows }] : []),
    ];
  },

  scorer(manifest, { featureIds, weights: w, rowScales, bias, idf = null, charRows = null }): Scorer {
    const nLabels = manifest.labels.length;
    const rowOf = rowLookup(featureIds);
    // Scratch buffers reused across calls (a scorer runs on one thread), grown on demand.
    let rows = new Int32Array(64);
    let vals = new Float64Array(64);
    return {
      memoryBytes: featureIds.byteLength + w.byteLength + (rowScales?.byteLength ?? 0) + bias.byteLength + (idf?.byteLength ?? 0) + (charRows?.byteLength ?? 0),
      logits(vector: SparseVector, into?: Float64Array): Float64Array {
        const out = into ?? new Float64Array(bias.length);
        out.set(bias);
        if (!idf) {
          // Unweighted path, exactly the arithmetic of artifacts written before TF-IDF weighting.
          const { ids, values } = vector;
          for (let i = 0; i < ids.length; i++) {
            const r = rowOf(ids[i]!);
            if (r < 0) continue;
            const v = values[i]! * (rowScales ? rowScales[r]! : 1);
            const base = r * nLabels;
            for (let c = 0; c < nLabels; c++) out[c]! += v * w[base + c]!;
          }
          return out;
        }
        if (rows.length < vector.ids.length) {
          rows = new Int32Array(vector.ids.length);
          vals = new Float64Array(vector.ids.length);
        }
        const k = weighVector(vector, rowOf, idf, rows, vals, charRows);
        for (let j = 0; j < k; j++) {
          const r = rows[j]!;
          const v = vals[j]! * (rowScales ? rowScales[r]! : 1);
          const base = r * nLabels;
          for (let c = 0; c < nLabels; c++) out[c]! += v * w[base + c]!;
        }
        return out;
      },
    };
  },

  estimateBytes(manifest) {
    const { dimensions: { features, labels }, quantization, tfidf, textBlocks } = info(manifest);
    return features * 4 + features * labels * (quantization === 'int8-row' ? 1 : 4) + (quantization === 'int8-row' ? features * 4 : 0) + labels * 4 + (tfidf ? features * 4 : 0) + (textBlocks ? features : 0);
  },
};
