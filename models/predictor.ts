import { EddyError } from '../common/errors.ts';
import { featurizerFor, type SparseVector, type TextFeaturizer } from '../featurizer/text.ts';
import type { ModelArtifact, ModelManifest } from './artifact.ts';
import { softmaxInPlace } from './calibration.ts';
import { modelKind } from './kinds/index.ts';

/** Same shape as `RealtimeFeatures` in featurizer/realtime.ts (contract 2); structural, so no import of Redis code here. */
export type RealtimeFeatures = Record<string, number>;

export interface Prediction {
  label: string;
  /** Softmax probabilities (calibrated when the version carries a temperature), highest first (topK of them). */
  scores: Array<{ label: string; score: number }>;
  /** The top score is below the version's calibrated `unsureBelow` threshold; null when the version has no calibration. */
  unsure: boolean | null;
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
 * Pure-JavaScript inference over an artifact, whatever its kind (models/kinds/): no TensorFlow
 * in the server. Refuses a model trained with a featurizer this build does not implement
 * (FEATURIZER_MISMATCH), of a kind it does not implement (MODEL_KIND_UNSUPPORTED), or whose
 * sections do not fit its kind (ARTIFACT_CORRUPT).
 */
export function loadPredictor(artifact: ModelArtifact): Predictor {
  const { manifest } = artifact;
  const featurizer: TextFeaturizer | undefined = featurizerFor(manifest.featurizer);
  if (!featurizer) {
    throw new EddyError('FEATURIZER_MISMATCH', `model ${manifest.clientId} ${manifest.modelVersion} was trained with featurizer ${manifest.featurizer.id}, which this build does not implement`);
  }
  const kind = modelKind(manifest.model.kind);
  if (!kind) {
    throw new EddyError('MODEL_KIND_UNSUPPORTED', `model ${manifest.clientId} ${manifest.modelVersion} is of kind '${manifest.model.kind}', which this build does not implement`);
  }
  const scorer = kind.scorer(manifest, kind.read(manifest, artifact.sections));
  const labels = manifest.labels;
  const nLabels = labels.length;
  const temperature = manifest.calibration?.temperature ?? 1;
  const unsureBelow = manifest.calibration ? manifest.calibration.unsureBelow : null;
  const scratch = new Float64Array(nLabels);

  return {
    manifest,
    memoryBytes: scorer.memoryBytes,
    logits: scorer.logits,
    predict(text, metadata, realtime, topK = nLabels) {
      // Scored at once, in reused arrays: the featurizer's vector (featurizeScratch) and this
      // predictor's logits (`scratch`). A typed array over 64 bytes (more than 8 labels) would get
      // a backing store outside V8's heap per prediction (docs/benchmarks/server.md, "Scratch vectors").
      const z = softmaxInPlace(scorer.logits(featurizer.featurizeScratch(text, metadata, realtime), scratch), temperature);
      const k = Math.max(1, Math.min(topK, nLabels));
      const scores = topScores(z, labels, k);
      return { label: scores[0]!.label, scores, unsure: unsureBelow === null ? null : scores[0]!.score < unsureBelow };
    },
  };
}

/**
 * The k highest scores, highest first, ties by label order: k passes of a max search, which for
 * the few labels and small k of a prediction allocates only the answer (sorting an index array
 * with a comparator cost ~1 KB and a closure per prediction); large k over many labels sorts.
 */
export function topScores(z: Float64Array, labels: readonly string[], k: number): Array<{ label: string; score: number }> {
  const n = z.length;
  const out: Array<{ label: string; score: number }> = new Array(k);
  if (k * n > 4096) {
    const order = Array.from({ length: n }, (_, c) => c).sort((a, b) => z[b]! - z[a]! || a - b);
    for (let i = 0; i < k; i++) out[i] = { label: labels[order[i]!]!, score: z[order[i]!]! };
    return out;
  }
  // Previous pick (score, index): the next is the best strictly after it in (score desc, index asc).
  let lastScore = Infinity;
  let lastIndex = -1;
  for (let i = 0; i < k; i++) {
    let best = -1;
    for (let c = 0; c < n; c++) {
      const v = z[c]!;
      if (v > lastScore || (v === lastScore && c <= lastIndex)) continue;
      if (best === -1 || v > z[best]!) best = c;
    }
    out[i] = { label: labels[best]!, score: z[best]! };
    lastScore = z[best]!;
    lastIndex = best;
  }
  return out;
}
