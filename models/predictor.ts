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

  return {
    manifest,
    memoryBytes: scorer.memoryBytes,
    logits: scorer.logits,
    predict(text, metadata, realtime, topK = nLabels) {
      const z = softmaxInPlace(scorer.logits(featurizer.featurize(text, metadata, realtime)), temperature);
      const order = Array.from({ length: nLabels }, (_, c) => c).sort((a, b) => z[b]! - z[a]! || a - b);
      const k = Math.max(1, Math.min(topK, nLabels));
      const scores = order.slice(0, k).map((c) => ({ label: labels[c]!, score: z[c]! }));
      return { label: scores[0]!.label, scores, unsure: unsureBelow === null ? null : scores[0]!.score < unsureBelow };
    },
  };
}
