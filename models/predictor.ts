import { EddyError } from '../common/errors.ts';
import { featurizerFor, type SparseVector, type TextFeaturizer } from '../featurizer/text.ts';
import type { ModelArtifact, ModelManifest } from './artifact.ts';

/** Same shape as `RealtimeFeatures` in featurizer/realtime.ts (contract 2); structural, so no import of Redis code here. */
export type RealtimeFeatures = Record<string, number>;

export interface Prediction {
  label: string;
  /** Softmax probabilities, highest first (topK of them). */
  scores: Array<{ label: string; score: number }>;
}

export interface Predictor {
  readonly manifest: ModelManifest;
  predict(text: string, metadata: Record<string, string>, realtime: RealtimeFeatures, topK?: number): Prediction;
  /** Logits for an already featurized input (the trainer's evaluation uses this: same code path as serving). */
  logits(vector: SparseVector): Float64Array;
  /** Bytes of typed arrays this predictor holds (what a server budgets per model). */
  readonly memoryBytes: number;
}

/**
 * Pure-JavaScript inference over the artifact's typed arrays: no TensorFlow in the server, no
 * dequantised copy (int8 rows are scaled on the fly), a binary search per feature over the
 * stored feature ids. Refuses a model trained with a featurizer this build does not implement.
 */
export function loadPredictor(artifact: ModelArtifact): Predictor {
  const { manifest, weights } = artifact;
  const featurizer: TextFeaturizer | undefined = featurizerFor(manifest.featurizer);
  if (!featurizer) {
    throw new EddyError('FEATURIZER_MISMATCH', `model ${manifest.clientId} ${manifest.modelVersion} was trained with featurizer ${manifest.featurizer.id}, which this build does not implement`);
  }
  const { featureIds, bias, rowScales } = weights;
  const w = weights.weights;
  const labels = manifest.labels;
  const nLabels = labels.length;
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

  const logits = (vector: SparseVector): Float64Array => {
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
  };

  const memoryBytes = featureIds.byteLength + w.byteLength + (rowScales?.byteLength ?? 0) + bias.byteLength;

  return {
    manifest,
    memoryBytes,
    logits,
    predict(text, metadata, realtime, topK = nLabels) {
      const z = logits(featurizer.featurize(text, metadata, realtime));
      let max = -Infinity;
      for (let c = 0; c < nLabels; c++) max = Math.max(max, z[c]!);
      let sum = 0;
      for (let c = 0; c < nLabels; c++) {
        z[c] = Math.exp(z[c]! - max);
        sum += z[c]!;
      }
      const order = Array.from({ length: nLabels }, (_, c) => c).sort((a, b) => z[b]! - z[a]! || a - b);
      const k = Math.max(1, Math.min(topK, nLabels));
      const scores = order.slice(0, k).map((c) => ({ label: labels[c]!, score: z[c]! / sum }));
      return { label: scores[0]!.label, scores };
    },
  };
}
