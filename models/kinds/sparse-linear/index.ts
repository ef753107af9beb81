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
 * Sections, in this order: featureIds (uint32), weights (int8 | float32, row-major
 * [features x labels]), rowScales (float32, int8 only), bias (float32).
 */
export type Quantization = 'int8-row' | 'float32';

export interface SparseLinearInfo extends ModelInfo {
  kind: 'sparse-linear';
  /** Stored feature rows x labels. */
  dimensions: { features: number; labels: number };
  quantization: Quantization;
}

export interface SparseLinearWeights {
  featureIds: Uint32Array;
  /** Row-major [features x labels]. */
  weights: Int8Array | Float32Array;
  /** One scale per row, for int8-row. */
  rowScales: Float32Array | null;
  bias: Float32Array;
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
    const { dimensions: { features, labels } } = info(manifest);
    const { featureIds, weights, rowScales, bias } = sections;
    if (!(featureIds instanceof Uint32Array) || featureIds.length !== features) throw corrupt('featureIds missing or wrong length');
    if (!(weights instanceof Int8Array || weights instanceof Float32Array) || weights.length !== features * labels) throw corrupt('weights missing or wrong length');
    if (!(bias instanceof Float32Array) || bias.length !== labels || manifest.labels.length !== labels) throw corrupt('bias/labels mismatch');
    if (weights instanceof Int8Array && !(rowScales instanceof Float32Array && rowScales.length === features)) throw corrupt('rowScales missing');
    for (let i = 1; i < featureIds.length; i++) if (featureIds[i]! <= featureIds[i - 1]!) throw corrupt('featureIds not ascending');
    return { featureIds, weights, rowScales: rowScales instanceof Float32Array ? rowScales : null, bias };
  },

  write(w): ArtifactSection[] {
    return [
      { name: 'featureIds', data: w.featureIds },
      { name: 'weights', data: w.weights },
      ...(w.rowScales ? [{ name: 'rowScales', data: w.rowScales }] : []),
      { name: 'bias', data: w.bias },
    ];
  },

  scorer(manifest, { featureIds, weights: w, rowScales, bias }): Scorer {
    const nLabels = manifest.labels.length;
    const nRows = featureIds.length;
    const rowOf = (id: number): number => {
      let lo = 0;
      let hi = nRows - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const v = featureIds[mid]!;
        if (v === id) return mid;
        if (v < id) lo = mid + 1;
        else hi = mid - 1;
      }
      return -1;
    };
    return {
      memoryBytes: featureIds.byteLength + w.byteLength + (rowScales?.byteLength ?? 0) + bias.byteLength,
      logits(vector: SparseVector): Float64Array {
        const out = Float64Array.from(bias);
        const { ids, values } = vector;
        for (let i = 0; i < ids.length; i++) {
          const r = rowOf(ids[i]!);
          if (r < 0) continue;
          const v = values[i]! * (rowScales ? rowScales[r]! : 1);
          const base = r * nLabels;
          for (let c = 0; c < nLabels; c++) out[c]! += v * w[base + c]!;
        }
        return out;
      },
    };
  },

  estimateBytes(manifest) {
    const { dimensions: { features, labels }, quantization } = info(manifest);
    return features * 4 + features * labels * (quantization === 'int8-row' ? 1 : 4) + (quantization === 'int8-row' ? features * 4 : 0) + labels * 4;
  },
};
