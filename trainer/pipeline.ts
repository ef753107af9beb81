import { randomUUID } from 'node:crypto';
import type { TrainerConfig } from '../common/config.ts';
import { EddyError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { featurizerFor } from '../featurizer/text.ts';
import { ARTIFACT_FORMAT_VERSION, type ArtifactSection, type ModelArtifact, type ModelManifest, type ModelSelection } from '../models/artifact.ts';
import { calibrate, type Calibration } from '../models/calibration.ts';
import type { FitData, FitOptions } from '../models/kinds/index.ts';
import { kindTrainer } from '../models/kinds/trainers.ts';
import { loadPredictor, type Predictor } from '../models/predictor.ts';
import type { FsModelStore, ModelVersionRef } from '../models/store.ts';
import type { ModelPublished, ModelRejected } from '../schemas/events.ts';
import { initBackend } from './backend.ts';
import { definitionText, splitOf, type DataWait, type TrainingExample, type TrainingSet } from './dataset.ts';
import { evaluate, metricsMap, type Evaluation } from './evaluate.ts';
import { charNgramIds, DEFAULT_SEARCH, defaultConfig, featurizerOf, needsSearch, nonTextIds, searchModel, selectionOf, type SearchResult, type SearchSettings } from './search.ts';
import { validateTrainingSet, type ValidationLimits } from './validate.ts';

/**
 * One retrain of one client, start to finish: training set -> validation -> deterministic split
 * -> featurize -> fit (the model kind's trainer, TensorFlow.js; warm start from the live version
 * when it is of the same kind and the labels overlap) -> artifact -> evaluate candidate AND live on the same test split with the
 * serving code (the pure-JS predictor) -> gate -> store -> the event to announce it.
 * It produces events but does not send them: the retrain consumer sends, then commits.
 */
export interface TrainerSettings extends ValidationLimits {
  gateMargin: number;
  keepVersions: number;
  backend: string;
  /** The model kind (models/kinds/) and its hyperparameters (absent ones take the kind's defaults). */
  model: { kind: string; params: Record<string, unknown> };
  /** Training epochs (passes over the training split). */
  epochs: number;
  /** Seed of the shuffles and initialisation: the same data gives the same model. */
  seed: number;
  /** Start from the live version's weights when the label sets overlap enough (default true). */
  warmStart?: boolean;
  /** The model search (trainer/search.ts); false = never search, train the configured kind and params. Absent = DEFAULT_SEARCH. */
  search?: SearchSettings | false;
  /** Held-out accuracy under which low-confidence predictions are marked unsure (models/calibration.ts). */
  unsureTargetAccuracy?: number;
  /**
   * A first model on at least this many examples defers the search (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES;
   * absent or 0: never): see fitCandidate.
   */
  quickFirstModelExamples?: number;
}

/**
 * Per kind, params of a quick first model's two fits (see fitCandidate): it serves only until the
 * searched version follows, so it stops at a looser tolerance. Measured on the 20,000-example
 * synthetic client (zeta-20k): 33.7 s -> 24.2 s for its fits, held-out macro-F1 0.7742 -> 0.7706
 * (1e-3: 14.9 s, 0.7638). Operator params (settings.model.params) still win.
 */
export const QUICK_FIRST_MODEL_FIT: Record<string, Record<string, unknown>> = { 'sparse-linear': { tolerance: 1e-4 } };

/** Predictions in the lowest-confidence slice that is right less than half the time are `unsure`. */
export const DEFAULT_UNSURE_TARGET_ACCURACY = 0.5;

export const DEFAULT_MODEL_KIND = 'sparse-linear';

export function trainerSettings(config: TrainerConfig, overrides: { epochs?: number; kind?: string; params?: Record<string, unknown> } = {}): TrainerSettings {
  return {
    gateMargin: config.gateMargin,
    keepVersions: config.keepVersions,
    backend: config.backend,
    minExamples: config.minExamples,
    minExamplesPerLabel: config.minExamplesPerLabel,
    maxTextChars: config.maxTextChars,
    maxInvalidShare: 0.05,
    maxDistributionDrift: config.maxLabelDrift,
    model: { kind: overrides.kind ?? DEFAULT_MODEL_KIND, params: overrides.params ?? {} },
    epochs: overrides.epochs ?? config.epochs,
    seed: 42,
    quickFirstModelExamples: config.quickFirstModelExamples,
  };
}

export type TrainStage = 'load' | 'validate' | 'search' | 'featurize' | 'train' | 'evaluate' | 'gate' | 'publish';
export type ProgressListener = (p: { stage: TrainStage; epoch?: number; epochs?: number; loss?: number }) => void;

export type TrainOutcome =
  /** `searchDeferred`: a quick first model; the model search is still to run (see fitCandidate). */
  | { kind: 'published'; event: ModelPublished; ref: ModelVersionRef; candidate: Evaluation; live: Evaluation | null; searchDeferred: boolean }
  | { kind: 'rejected'; event: ModelRejected; candidate: Evaluation | null; live: Evaluation | null };

export interface TrainerDeps {
  store: FsModelStore;
  /** `wait`: the request's dataAsOf; the set is read once ClickHouse has it (bounded wait). */
  loadSet(clientId: string, wait?: DataWait): Promise<TrainingSet>;
  settings: TrainerSettings;
  logger: Logger;
}

/** Top label per example with the serving code path (the model's own featurizer). */
export function predictLabels(predictor: Predictor, examples: TrainingExample[]): string[] {
  const labels = predictor.manifest.labels;
  const featurizer = featurizerFor(predictor.manifest.featurizer);
  if (!featurizer) throw new EddyError('FEATURIZER_MISMATCH', `featurizer ${predictor.manifest.featurizer.id} is not implemented by this build`);
  return examples.map((e) => {
    const z = predictor.logits(featurizer.featurize(e.text, e.metadata, e.features));
    let best = 0;
    for (let c = 1; c < z.length; c++) if (z[c]! > z[best]!) best = c;
    return labels[best]!;
  });
}

/** Scores a predictor on examples with the serving code path; labels it does not know count as wrong. */
export function evaluatePredictor(predictor: Predictor, examples: TrainingExample[]): Evaluation {
  return evaluate(examples.map((e) => e.label), predictLabels(predictor, examples));
}

/**
 * The gate: the candidate is refused when its macro-F1 is below the live one by more than the
 * margin AND the difference is not noise. On a small test set (a client with 200 examples has
 * ~20 test examples) one or two examples move macro-F1 by several points, and refusing an
 * identical-data retrain for that would freeze small clients. The noise test is McNemar's on the
 * paired predictions: b = live right & candidate wrong, c = the reverse; worse means
 * b - c > 1.96 * sqrt(b + c) (two-sided 5%).
 */
export function gateDecision(
  truth: readonly string[], candidate: readonly string[], live: readonly string[], candidateF1: number, liveF1: number, margin: number,
): { pass: boolean; b: number; c: number } {
  let b = 0;
  let c = 0;
  for (let i = 0; i < truth.length; i++) {
    const liveRight = live[i] === truth[i];
    const candidateRight = candidate[i] === truth[i];
    if (liveRight && !candidateRight) b++;
    else if (candidateRight && !liveRight) c++;
  }
  const worseByMargin = candidateF1 < liveF1 - margin;
  const significant = b - c > 1.96 * Math.sqrt(b + c);
  return { pass: !(worseByMargin && significant), b, c };
}

export interface Candidate {
  manifest: Omit<ModelManifest, 'weights'>;
  /** The artifact's sections, in the order the kind writes them (what the store keeps): the refit on all data. */
  sections: ArtifactSection[];
  artifact: ModelArtifact;
  /** The published model (refit on all data). */
  predictor: Predictor;
  /** The same configuration fitted on the train split only: what `evaluation` and the gate score. */
  heldOutPredictor: Predictor;
  /** Held-out evaluation (test split) of heldOutPredictor. */
  evaluation: Evaluation;
  calibration: Calibration;
  selection: ModelSelection;
  /** The search was due (a first model) but deferred for the size of the data: the next version runs it. */
  searchDeferred: boolean;
  test: TrainingExample[];
  trainingMs: number;
}

/** What fitCandidate decides about the model search (see trainer/search.ts). */
export interface SearchDecision {
  /** Why a full search runs, or null to reuse the live version's configuration. */
  reason: ReturnType<typeof needsSearch>;
}

/**
 * Fits and evaluates a candidate on an already validated example list (also used by the quality
 * and training benchmarks), in three fits of one configuration:
 * 1. the configuration: the live version's choice, or a fresh cross-validated search
 *    (trainer/search.ts: first model, data doubled, quality alert);
 * 2. a fit on the train split, scored on the held-out test split with the serving code (the
 *    version's metrics and the gate's figures), whose held-out predictions (validation + test
 *    splits) fit the calibration (models/calibration.ts);
 * 3. the published weights: the same configuration refit on ALL examples and label definitions,
 *    warm-started from fit 2, so no labelled example is kept from the served model.
 *
 * A bulk import's first model (settings.quickFirstModelExamples) skips step 1: the search and the
 * character n-gram configurations it usually picks cost a 20,000-example client ~75 s, the default
 * configuration (word n-grams, the reference's choice) ~15 s, and until a first model exists
 * nothing serves the client. The trainer then runs the search at once as the next version, which
 * the gate compares with the quick one (trainer/consumer.ts).
 */
export async function fitCandidate(
  set: TrainingSet,
  examples: TrainingExample[],
  settings: TrainerSettings,
  opts: {
    version: string; parent: ModelArtifact | null; labelDistribution: Record<string, number>; retrainEventId: string | null; logger?: Logger; onProgress?: ProgressListener;
    /** A quality alert asked for this retrain: search again even if the data did not double. */
    qualityAlert?: boolean;
    /**
     * False once the retrain's partition went to another trainer (streams BatchContext.isAssigned):
     * checked before each fit, and the work is abandoned (a retriable EddyError RETRAIN_MOVED, so
     * the batch stays uncommitted) instead of being done twice.
     */
    stillAssigned?: () => boolean;
  },
): Promise<Candidate> {
  const started = performance.now();
  const stillAssigned = opts.stillAssigned;
  const checkpoint = stillAssigned ? () => {
    if (!stillAssigned()) throw new EddyError('RETRAIN_MOVED', `the retrain of ${set.clientId} went to another trainer in a rebalance: abandoned here, it is trained there`, { retriable: true });
  } : undefined;
  const tfBackend = await initBackend(opts.logger, settings.backend || undefined);
  const train = examples.filter((e) => splitOf(e.exampleId) === 'train');
  let test = examples.filter((e) => splitOf(e.exampleId) === 'test');
  // Tiny clients may have no test example by hash: score on the held-out validation split then.
  if (test.length === 0) test = examples.filter((e) => splitOf(e.exampleId) !== 'train');
  const heldOut = examples.filter((e) => splitOf(e.exampleId) !== 'train');

  const parentSelection = opts.parent?.manifest.selection ?? null;
  const due = settings.search === false ? null : needsSearch(opts.parent ? opts.parent.manifest : null, examples.length, opts.qualityAlert ?? false);
  const searchDeferred = due === 'first-model' && (settings.quickFirstModelExamples ?? 0) > 0 && examples.length >= settings.quickFirstModelExamples!;
  if (searchDeferred) opts.logger?.info({ clientId: set.clientId, examples: examples.length, threshold: settings.quickFirstModelExamples }, 'first model of a large client: default configuration now, the model search in the next version');
  const reason = searchDeferred ? null : due;
  let result: SearchResult | null = null;
  if (reason && settings.search !== false) {
    opts.onProgress?.({ stage: 'search' });
    result = await searchModel(examples, set.definitions, set.labels, kindTrainer, settings.search ?? DEFAULT_SEARCH, (kind) => (kind === settings.model.kind ? settings.model.params : {}), checkpoint);
    opts.logger?.info({ clientId: set.clientId, reason, best: result.best, cvMacroF1: result.cvMacroF1, candidates: result.scores.length, ms: result.ms }, 'model search');
  }
  // A configuration the live version chose is reused only while this build can still train it.
  const carried = parentSelection && kindTrainer(parentSelection.config.kind) ? parentSelection : null;
  const selection = selectionOf(result, carried, defaultConfig(settings.model.kind, {}), examples.length);
  const config = selection.config;
  const trainer = kindTrainer(config.kind);
  if (!trainer) throw new EddyError('MODEL_KIND_UNSUPPORTED', `model kind '${config.kind}' cannot be trained by this build`);
  // Operator overrides (settings.model.params) win over the search's choice: they are how tests and operators pin a model.
  const params = {
    ...(trainer.defaults as Record<string, unknown>), ...config.params, ...(searchDeferred ? QUICK_FIRST_MODEL_FIT[config.kind] : {}),
    ...(config.kind === settings.model.kind ? settings.model.params : {}),
  };
  const featurizer = featurizerOf(config);

  opts.onProgress?.({ stage: 'featurize' });
  const labelIndex = new Map(set.labels.map((l, i) => [l, i]));
  const vectorById = new Map(examples.map((e) => [e.exampleId, featurizer.featurize(e.text, e.metadata, e.features)]));
  const definitionVectors = set.definitions.map((d) => featurizer.featurize(definitionText(d)));
  const nonText = nonTextIds(featurizer, examples);
  const charIds = charNgramIds(config, [...examples.map((e) => e.text), ...set.definitions.map(definitionText)]);
  const fitData = (subset: TrainingExample[]): FitData => ({
    vectors: [...subset.map((e) => vectorById.get(e.exampleId)!), ...definitionVectors],
    targets: Int32Array.from([...subset.map((e) => labelIndex.get(e.label)!), ...set.definitions.map((d) => labelIndex.get(d.label)!)]),
    numLabels: set.labels.length,
    nonTextIds: nonText,
    charNgramIds: charIds,
  });
  const fitOptions = (init: unknown): FitOptions => ({
    epochs: settings.epochs, seed: settings.seed, ...(init ? { init } : {}),
    onEpoch: (epoch, loss) => opts.onProgress?.({ stage: 'train', epoch, epochs: settings.epochs, loss }),
  });
  const artifactOf = (manifest: Omit<ModelManifest, 'weights'>, sections: ArtifactSection[]): ModelArtifact =>
    ({ manifest: { ...manifest, weights: { sections: [] } }, sections: Object.fromEntries(sections.map((x) => [x.name, x.data])) });

  // 2. Train split -> held-out evaluation and calibration.
  const init = settings.warmStart === false || !opts.parent ? undefined : trainer.warmStart(opts.parent, set.labels);
  checkpoint?.();
  const held = await trainer.fit(fitData(train), params, fitOptions(init));
  const base: Omit<ModelManifest, 'weights'> = {
    formatVersion: ARTIFACT_FORMAT_VERSION,
    clientId: set.clientId,
    modelVersion: opts.version,
    createdAt: new Date().toISOString(),
    labels: set.labels,
    featurizer: { ...featurizer.identity },
    model: held.model,
    metrics: {},
    trainingDataSha256: set.sha256,
    trainingExamples: train.length + set.definitions.length,
    backend: held.backend ?? tfBackend,
    parentVersion: opts.parent?.manifest.modelVersion ?? null,
    labelDistribution: opts.labelDistribution,
    retrainEventId: opts.retrainEventId,
    trainedOn: 'train-split',
    selection,
  };
  const heldSections = trainer.kind.write(held.weights);
  const heldOutArtifact = artifactOf(base, heldSections);
  // Evaluate the artifact exactly as the server will run it (quantised, pure JS).
  opts.onProgress?.({ stage: 'evaluate' });
  const heldOutPredictor = loadPredictor(heldOutArtifact);
  const evaluation = evaluatePredictor(heldOutPredictor, test);
  const calibration = calibrate(
    heldOut.map((e) => heldOutPredictor.logits(vectorById.get(e.exampleId)!)), heldOut.map((e) => labelIndex.get(e.label)!),
    settings.unsureTargetAccuracy ?? DEFAULT_UNSURE_TARGET_ACCURACY,
  );

  // 3. The published weights: everything, same configuration, warm-started from the train-split fit.
  checkpoint?.();
  const all = await trainer.fit(fitData(examples), params, fitOptions(trainer.warmStart(heldOutArtifact, set.labels)));
  const dataThroughMs = examples.reduce((m, e) => Math.max(m, e.occurredAtMs), 0);
  const manifest: Omit<ModelManifest, 'weights'> = {
    ...base, model: all.model, trainingExamples: examples.length + set.definitions.length, trainedOn: 'all', dataThroughMs, calibration,
  };
  const sections = trainer.kind.write(all.weights);
  const artifact = artifactOf(manifest, sections);
  const predictor = loadPredictor(artifact);
  const trainingMs = Math.round(performance.now() - started);
  manifest.metrics = {
    ...metricsMap(evaluation), finalLoss: all.finalLoss, warmStart: init ? 1 : 0, heldOutTrainingExamples: train.length + set.definitions.length,
    ...(held.iterations !== undefined && all.iterations !== undefined ? { heldOutIterations: held.iterations, refitIterations: all.iterations } : {}),
    temperature: calibration.temperature, unsureBelow: calibration.unsureBelow, eceBefore: calibration.eceBefore, eceAfter: calibration.eceAfter,
    searched: selection.searched ? 1 : 0, ...(selection.cvMacroF1 !== null ? { cvMacroF1: selection.cvMacroF1 } : {}),
    ...(result ? { searchMs: result.ms } : {}),
  };
  manifest.trainingMs = trainingMs;
  return { manifest, sections, artifact, predictor, heldOutPredictor, evaluation, test, trainingMs, calibration, selection, searchDeferred };
}

/**
 * The gate against a live version refit on all data (which has seen the test split): its recorded
 * held-out macro-F1 against the candidate's, two figures from different test splits (the split
 * only grows). Refused when the candidate is below by more than the margin plus sampling noise:
 * 1.96 standard errors of the difference of two independent proportions, each with the
 * Agresti-Coull adjustment (two right and two wrong added), so that a perfect score on a small
 * split still carries its uncertainty. The plain standard error sqrt(p(1-p)/n) is 0 at p = 1: a
 * live 1.0 on its ~20 test examples refused any candidate with one mistake (`npm run bench`: 5 of
 * 100 new teams never served).
 */
export function heldOutGateDecision(
  candidate: { macroF1: number; testExamples: number }, live: { macroF1: number; testExamples: number }, margin: number,
): { pass: boolean; noise: number } {
  const variance = ({ macroF1, testExamples }: { macroF1: number; testExamples: number }) => {
    const n = Math.max(0, testExamples) + 4;
    const p = (Math.min(Math.max(macroF1, 0), 1) * Math.max(0, testExamples) + 2) / n;
    return (p * (1 - p)) / n;
  };
  const noise = 1.96 * Math.sqrt(variance(candidate) + variance(live));
  return { pass: candidate.macroF1 >= live.macroF1 - margin - noise, noise };
}

/**
 * Macro-F1 over the labels of `labels` only (those present in the test split's truth or
 * predictions): the candidate's figure on the task the live version was measured on, when the
 * label set grew. A team added since is a class the live version cannot answer at all; counting it
 * would hold the candidate that can to a harder task than its baseline.
 */
export function macroF1Over(evaluation: Evaluation, labels: ReadonlySet<string>): { macroF1: number; labels: number } {
  let sum = 0;
  let n = 0;
  for (const [label, m] of Object.entries(evaluation.perLabel)) {
    if (!labels.has(label)) continue;
    sum += m.f1;
    n++;
  }
  return n > 0 ? { macroF1: sum / n, labels: n } : { macroF1: evaluation.macroF1, labels: Object.keys(evaluation.perLabel).length };
}

/**
 * The version the gate and warm start compare against. `liveVersion` is the version actually
 * live for the client (derived from the models topic by the caller: after a rollback or a pin it
 * is older than the newest in the store); null means no live version; undefined (callers without
 * the models topic, e.g. benchmarks) falls back to the newest version in the store.
 */
async function loadLive(
  store: FsModelStore, refs: ModelVersionRef[], liveVersion: string | null | undefined, clientId: string, logger: Logger,
): Promise<{ ref: ModelVersionRef; artifact: ModelArtifact; predictor: Predictor | null } | null> {
  if (liveVersion === null) return null;
  const ref = liveVersion === undefined ? refs.at(-1) : refs.find((r) => r.modelVersion === liveVersion);
  if (!ref) {
    if (liveVersion !== undefined) logger.error({ clientId, version: liveVersion }, 'live version not in the model store; training without warm start or gate baseline');
    return null;
  }
  try {
    const artifact = await store.get(ref.uri, ref.sha256);
    let predictor: Predictor | null = null;
    try {
      predictor = loadPredictor(artifact);
    } catch (err) {
      // A live model from another featurizer cannot be scored here; the gate then has nothing to compare.
      logger.warn({ clientId: ref.clientId, version: ref.modelVersion, err: errorMessage(err) }, 'live model cannot be evaluated by this build');
    }
    return { ref, artifact, predictor };
  } catch (err) {
    if (err instanceof EddyError && err.retriable) throw err;
    logger.error({ clientId: ref.clientId, version: ref.modelVersion, err: errorMessage(err) }, 'live model artifact unreadable; training without warm start or gate baseline');
    return null;
  }
}

function publishedEvent(ref: ModelVersionRef, candidate: Candidate, previousVersion: string | null, retrainEventId: string | null, dataComplete: boolean): ModelPublished {
  return {
    eventId: randomUUID(), clientId: ref.clientId, occurredAt: Date.now(), modelVersion: ref.modelVersion, previousVersion,
    artifactUri: ref.uri, artifactSha256: ref.sha256, featurizer: candidate.manifest.featurizer.id, labels: candidate.manifest.labels,
    metrics: candidate.manifest.metrics, trainingExamples: candidate.manifest.trainingExamples, trainingDataSha256: candidate.manifest.trainingDataSha256,
    backend: candidate.manifest.backend, trainingMs: candidate.trainingMs, retrainEventId, dataComplete, ...selectionFields(candidate.manifest.selection),
  };
}

/** ModelPublished's view of the model search's choice (empty for versions without one). */
function selectionFields(selection: ModelSelection | undefined): Pick<ModelPublished, 'modelConfig' | 'cvMacroF1' | 'searched'> {
  if (!selection) return { modelConfig: '', cvMacroF1: null, searched: false };
  return { modelConfig: JSON.stringify(selection.config), cvMacroF1: selection.cvMacroF1, searched: selection.searched };
}

/** Re-announces a version already in the store (a redelivered RetrainRequested after a crash between store and commit). */
export function republishedEvent(ref: ModelVersionRef): ModelPublished {
  return {
    eventId: randomUUID(), clientId: ref.clientId, occurredAt: Date.now(), modelVersion: ref.modelVersion, previousVersion: ref.parentVersion,
    artifactUri: ref.uri, artifactSha256: ref.sha256, featurizer: ref.featurizerId, labels: ref.labels, metrics: ref.metrics,
    trainingExamples: ref.trainingExamples, trainingDataSha256: ref.trainingDataSha256, backend: ref.backend, trainingMs: ref.trainingMs,
    retrainEventId: ref.retrainEventId,
    // The store does not record it; the version was complete enough to pass the gate then.
    dataComplete: true,
    ...selectionFields(ref.selection),
  };
}

function rejectedEvent(clientId: string, fields: Partial<ModelRejected> & Pick<ModelRejected, 'stage' | 'reasons'>): ModelRejected {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), candidateVersion: null, liveVersion: null, detail: '',
    candidateMetrics: {}, liveMetrics: {}, retrainEventId: null, dataComplete: true, ...fields,
  };
}

export async function trainClient(
  deps: TrainerDeps, clientId: string,
  ctx: {
    retrainEventId?: string | null;
    onProgress?: ProgressListener;
    /**
     * The client's live version per the models topic (see LiveVersions): null = none; undefined =
     * not known, use the newest version in the store.
     */
    liveVersion?: string | null;
    /** Versions retention must keep besides the newest and the live one (rollback history, canary, shadow). */
    keepVersions?: readonly string[];
    /** The request came from a quality alert: run the model search again. */
    qualityAlert?: boolean;
    /** False once the request's partition went to another trainer: see fitCandidate. */
    stillAssigned?: () => boolean;
  } = {},
): Promise<TrainOutcome> {
  const { store, settings, logger } = deps;
  const retrainEventId = ctx.retrainEventId ?? null;
  ctx.onProgress?.({ stage: 'load' });
  const [set, refs] = await Promise.all([deps.loadSet(clientId), store.list(clientId)]);
  const dataComplete = set.dataComplete ?? true;
  const live = await loadLive(store, refs, ctx.liveVersion, clientId, logger);
  // The version reported as live/previous is the real live one, even when its artifact is unusable.
  const liveVersion = ctx.liveVersion === undefined ? live?.ref.modelVersion ?? null : ctx.liveVersion;
  ctx.onProgress?.({ stage: 'validate' });
  const validation = validateTrainingSet(set, settings, live ? { labelDistribution: live.artifact.manifest.labelDistribution, trainingExamples: live.artifact.manifest.trainingExamples } : undefined);
  if (!validation.ok) {
    logger.info({ clientId, reasons: validation.reasons, detail: validation.detail }, 'training data refused');
    return {
      kind: 'rejected', candidate: null, live: null,
      event: rejectedEvent(clientId, { stage: 'VALIDATION', reasons: validation.reasons, detail: validation.detail, liveVersion, retrainEventId, dataComplete }),
    };
  }
  const version = `v${Math.max(0, ...refs.map((r) => Number(r.modelVersion.slice(1)))) + 1}`;
  let candidate: Candidate;
  try {
    candidate = await fitCandidate(set, validation.examples, settings, {
      version, parent: live?.artifact ?? null, labelDistribution: validation.labelDistribution, retrainEventId, logger, qualityAlert: ctx.qualityAlert ?? false,
      ...(ctx.stillAssigned ? { stillAssigned: ctx.stillAssigned } : {}),
      ...(ctx.onProgress ? { onProgress: ctx.onProgress } : {}),
    });
  } catch (err) {
    if (err instanceof EddyError && err.retriable) throw err;
    logger.error({ clientId, err: errorMessage(err) }, 'training failed');
    return {
      kind: 'rejected', candidate: null, live: null,
      event: rejectedEvent(clientId, { stage: 'TRAINING', reasons: ['TRAINING_FAILED'], detail: errorMessage(err), candidateVersion: version, liveVersion, retrainEventId, dataComplete }),
    };
  }
  if (validation.dropped.emptyText || validation.dropped.oversizedText) {
    candidate.manifest.metrics.droppedEmptyText = validation.dropped.emptyText;
    candidate.manifest.metrics.droppedOversizedText = validation.dropped.oversizedText;
  }
  ctx.onProgress?.({ stage: 'gate' });
  const truth = candidate.test.map((e) => e.label);
  const candidatePredicted = predictLabels(candidate.heldOutPredictor, candidate.test);
  let liveEval: Evaluation | null = null;
  let liveMetrics: Record<string, number> = {};
  let gate: { pass: boolean; detail: string } | null = null;
  const liveManifest = live?.artifact.manifest;
  if (live?.predictor && liveManifest?.trainedOn === 'all') {
    // The live version was refit on all data, the test split included: scoring it there would
    // flatter it. Its own held-out figures (the same configuration fitted on the train split and
    // scored on the test split, which only grows) are the fair comparison.
    liveMetrics = { ...liveManifest.metrics };
    const liveF1 = liveManifest.metrics.macroF1 ?? 0;
    const liveTest = liveManifest.metrics.testExamples ?? candidate.test.length;
    liveEval = { accuracy: liveManifest.metrics.accuracy ?? 0, macroF1: liveF1, support: liveTest, perLabel: {} };
    // Added teams do not count against the candidate: the live figure knows only its own labels.
    const liveLabels = new Set(liveManifest.labels);
    const added = candidate.manifest.labels.filter((l) => !liveLabels.has(l));
    const common = added.length > 0 ? macroF1Over(candidate.evaluation, liveLabels) : { macroF1: candidate.evaluation.macroF1, labels: 0 };
    const g = heldOutGateDecision({ macroF1: common.macroF1, testExamples: candidate.test.length }, { macroF1: liveF1, testExamples: liveTest }, settings.gateMargin);
    const on = added.length > 0 ? ` on the ${common.labels} labels both know (the candidate adds ${added.join(', ')})` : '';
    gate = { pass: g.pass, detail: `candidate held-out macro-F1 ${common.macroF1.toFixed(4)}${on} < live ${liveVersion} held-out ${liveF1.toFixed(4)} - margin ${settings.gateMargin} - noise ${g.noise.toFixed(4)} (${candidate.test.length} and ${liveTest} test examples)` };
  } else if (live?.predictor) {
    const livePredicted = predictLabels(live.predictor, candidate.test);
    liveEval = evaluate(truth, livePredicted);
    liveMetrics = metricsMap(liveEval);
    const g = gateDecision(truth, candidatePredicted, livePredicted, candidate.evaluation.macroF1, liveEval.macroF1, settings.gateMargin);
    gate = { pass: g.pass, detail: `candidate macro-F1 ${candidate.evaluation.macroF1.toFixed(4)} < live ${liveVersion} ${liveEval.macroF1.toFixed(4)} - margin ${settings.gateMargin} on the same ${candidate.test.length} test examples, and significantly (live alone right on ${g.b}, candidate alone on ${g.c})` };
  }
  if (liveEval && gate && !gate.pass) {
    const detail = gate.detail;
    logger.info({ clientId, detail }, 'candidate rejected by the gate');
    return {
      kind: 'rejected', candidate: candidate.evaluation, live: liveEval,
      event: rejectedEvent(clientId, {
        stage: 'GATE', reasons: ['WORSE_THAN_LIVE'], detail, candidateVersion: version, liveVersion,
        candidateMetrics: candidate.manifest.metrics, liveMetrics, retrainEventId, dataComplete,
      }),
    };
  }
  ctx.onProgress?.({ stage: 'publish' });
  if (liveEval) candidate.manifest.metrics.liveMacroF1 = liveEval.macroF1;
  const stored = await store.put(candidate.manifest, candidate.sections);
  const ref = (await store.list(clientId)).find((r) => r.modelVersion === version && r.sha256 === stored.sha256);
  if (!ref) throw new EddyError('MODEL_STORE_UNAVAILABLE', `stored ${clientId} ${version} but cannot list it back`, { retriable: true });
  // Retention: keep the newest versions, the live one and the rollback history (an operator can
  // roll back to any of them; the server must still find their artifacts).
  const keep = [...(liveVersion ? [liveVersion] : []), ...(ctx.keepVersions ?? [])];
  const pruned = await store.prune({ clientId, keepLast: settings.keepVersions, keepVersions: keep });
  if (pruned.length) logger.info({ clientId, pruned }, 'pruned old model versions');
  logger.info({ clientId, version, macroF1: candidate.evaluation.macroF1, liveMacroF1: liveEval?.macroF1, ms: candidate.trainingMs, backend: candidate.manifest.backend }, 'model published');
  return {
    kind: 'published', event: publishedEvent(ref, candidate, liveVersion, retrainEventId, dataComplete), ref, candidate: candidate.evaluation, live: liveEval,
    searchDeferred: candidate.searchDeferred,
  };
}
