import type { SparseVector } from '../../featurizer/text.ts';
import type { ArtifactSection, ModelArtifact, ModelInfo, ModelManifest, SectionArray } from '../artifact.ts';

/**
 * A model kind: one architecture, everything about it in one folder under models/kinds/. The
 * serving half (this interface) is pure JavaScript: what the server needs to load and run a model.
 * The training half (KindTrainer, TensorFlow.js) is imported by the trainer only.
 *
 * To add a kind: a folder with both halves, one line in models/kinds/index.ts and one in
 * models/kinds/trainers.ts. Nothing else in the platform names a kind.
 */
export interface ModelKind<W = unknown> {
  /** `manifest.model.kind` of its artifacts. */
  readonly name: string;
  /** This kind's weights from an artifact's sections; throws ARTIFACT_CORRUPT when shapes or sections do not fit the manifest. */
  read(manifest: ModelManifest, sections: Readonly<Record<string, SectionArray>>): W;
  /** The sections an artifact stores, in order (the inverse of `read`). */
  write(weights: W): ArtifactSection[];
  /** Inference over a featurized input: one logit per label, pure JS (the server's and the evaluation's path). */
  scorer(manifest: ModelManifest, weights: W): Scorer;
  /** Bytes a loaded model will hold, from the manifest alone: a server can budget before it loads. */
  estimateBytes(manifest: ModelManifest): number;
}

export interface Scorer {
  /**
   * The raw scores of one vector, written into `into` when given (an array of the labels' length
   * that the caller reuses and reads at once: a prediction), else into a new array.
   */
  logits(vector: SparseVector, into?: Float64Array): Float64Array;
  /** Bytes of typed arrays this scorer holds (what a server budgets per model). */
  readonly memoryBytes: number;
}

/** The featurized training data every kind fits on. */
export interface FitData {
  vectors: SparseVector[];
  /** Class index per vector. */
  targets: Int32Array;
  numLabels: number;
  /** Optional per-example weights (e.g. label definitions count more). */
  sampleWeights?: Float32Array;
  /** Feature ids of metadata and real-time features (not text n-grams): TF-IDF weighting leaves them as they are. */
  nonTextIds?: ReadonlySet<number>;
  /** Feature ids of character n-grams (absent without them): kinds that weigh text as two TF-IDF blocks (sparse-linear's textBlocks) need to know which. */
  charNgramIds?: ReadonlySet<number>;
}

export interface FitOptions {
  /** Passes over the data for kinds that train by epochs (sparse-linear solves to convergence and ignores it). */
  epochs: number;
  seed: number;
  /** Warm start: what `warmStart` made of the live model, when there is one of this kind. */
  init?: unknown;
  /** Progress per epoch (or per solver iteration). */
  onEpoch?: (epoch: number, loss: number) => void | Promise<void>;
}

/** The training half of a kind: fit with TensorFlow.js, and warm start from a previous model. */
export interface KindTrainer<W = unknown, P = unknown> {
  readonly kind: ModelKind<W>;
  /** Hyperparameters used when the caller gives none. */
  readonly defaults: P;
  fit(data: FitData, params: P, opts: FitOptions): Promise<{
    weights: W; model: ModelInfo; finalLoss: number;
    /** Solver iterations or epochs run. */
    iterations?: number;
    /** What computed the fit when it is not the TensorFlow.js backend (e.g. 'js-lbfgs'). */
    backend?: string;
  }>;
  /** A previous model of this kind re-mapped to a new label order, or undefined when it would not help. */
  warmStart(parent: ModelArtifact, labels: readonly string[]): unknown | undefined;
}
