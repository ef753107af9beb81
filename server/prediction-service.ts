import { derivedId, randomId } from '../common/ids.ts';
import type { ServerConfig } from '../common/config.ts';
import { apiError } from './http/plumbing.ts';
import type { Logger } from '../common/log.ts';
import type { CounterCell } from '../common/metrics.ts';
import type { PredictionMade } from '../schemas/events.ts';
import { hashString } from '../featurizer/text.ts';
import { baselinePredict } from './baseline.ts';
import { explainBaseline } from './baseline-explain.ts';
import { DEFAULT_EXPLAIN_TERMS, explainPrediction, type Explanation } from '../models/explain.ts';
import { hotMetrics, serverMetrics } from './metrics.ts';
import type { ModelHandle, ModelManager, ServablePredictor } from './model-manager.ts';
import type { Predictor } from '../models/predictor.ts';
import type { ClientModels, ModelRegistry, VersionInfo } from '../models/lifecycle.ts';
import type { ExampleCountReader, LabelDefinition, LabelDirectory } from './labels.ts';

/**
 * The one prediction path, shared by HTTP and Kafka: pick the version (rollout), borrow the model
 * (lazy load, availability-preserving swap), read real-time features with a deadline, predict,
 * and describe what happened as PredictionMade events (the answer, plus a SHADOW one when a shadow
 * version scored the request too). Channels differ only in how they deliver those events.
 */

export type Variant = 'LIVE' | 'CANARY' | 'BASELINE';
export type Channel = 'HTTP' | 'KAFKA';

export interface PredictRequest {
  clientId: string;
  text: string;
  metadata: Record<string, string>;
  /** Given by the caller (Kafka) or generated (HTTP). */
  requestId?: string;
  /** Deterministic event ids for redelivered Kafka requests (see eventIdOf). */
  sourceEventId?: string;
  topK?: number;
  /** Also say which input terms pushed each returned label's score (models/explain.ts). */
  explain?: boolean;
}

/**
 * The eventId of a prediction's PredictionMade: the same for every delivery of one request, so a
 * request answered twice logs one event that readers dedupe. A Kafka request is identified by its
 * eventId; an HTTP request by the requestId its caller chose: the typed client picks it before the
 * first attempt and repeats it when it retries on another replica (a server killed after spooling
 * its answer but before the answer arrived replays that event; the replica that answered the retry
 * logs the same eventId). An HTTP request without a requestId cannot be repeated as one: random.
 */
function eventIdOf(req: PredictRequest, what: 'made' | 'shadow'): string {
  if (req.sourceEventId) return derivedId(`${req.sourceEventId}:${what}`);
  if (req.requestId) return derivedId(`eddy:predict:${req.clientId}:${req.requestId}:${what}`);
  return randomId();
}

export interface PredictResult {
  requestId: string;
  clientId: string;
  label: string;
  scores: Array<{ label: string; score: number }>;
  modelVersion: string | null;
  variant: Variant;
  featuresDefaulted: boolean;
  /** The calibrated top score is below the model version's `unsure` threshold; null without calibration (the baseline, older versions). */
  unsure: boolean | null;
  latencyMs: number;
  /** Present when the request asked for it: per returned label, the terms that pushed its score most. */
  explanation?: Explanation;
}

/** Real-time features for a request, or for several of one client in one go; must never throw (featurizer/realtime.ts RealtimeFeatureReader). */
export interface FeatureReader {
  (clientId: string, metadata: Record<string, string>): Promise<{ features: Record<string, number>; defaulted: boolean }>;
  many(clientId: string, metadatas: ReadonlyArray<Record<string, string>>): Promise<Array<{ features: Record<string, number>; defaulted: boolean }>>;
}

/**
 * The input limits of every channel (HTTP answers 413 with these codes; Kafka dead-letters the
 * request with the same message): text length, metadata entries and metadata bytes.
 */
export function checkInputLimits(limits: Pick<ServerConfig, 'maxTextChars' | 'maxMetadataEntries' | 'maxMetadataBytes'>, text: string, metadata: Record<string, string> | undefined): void {
  if (text.length > limits.maxTextChars) {
    throw apiError('TEXT_TOO_LONG', `text has ${text.length} characters; the limit is ${limits.maxTextChars}`);
  }
  if (!metadata) return;
  let entries = 0;
  let bytes = 0;
  for (const k in metadata) {
    entries++;
    bytes += Buffer.byteLength(k) + Buffer.byteLength(metadata[k]!);
  }
  if (entries > limits.maxMetadataEntries) throw apiError('METADATA_TOO_LARGE', `metadata has ${entries} entries; the limit is ${limits.maxMetadataEntries}`);
  if (bytes > limits.maxMetadataBytes) throw apiError('METADATA_TOO_LARGE', `metadata has ${bytes} bytes; the limit is ${limits.maxMetadataBytes}`);
}

/** Stable share in [0, 1) for a key (the featurizer's hash): one requester, one bucket. */
export function stableShare(key: string): number {
  return hashString(key) / 0x1_0000_0000;
}

/** The metadata of an item answered without a model: names no entity, so nothing is read for it. */
const NO_METADATA: Record<string, string> = Object.freeze({}) as Record<string, string>;

/** The features of a request answered without a model (the baseline reads none). */
const NO_FEATURES: { features: Record<string, number>; defaulted: boolean } = Object.freeze({ features: Object.freeze({}), defaulted: false });

/** Loaded models are models/predictor.ts Predictors (their scorer is what explanations occlude); the manager's type is narrower. */
function isExplainable(p: ServablePredictor): p is ServablePredictor & Predictor {
  return typeof (p as Partial<Predictor>).logits === 'function' && (p as Partial<Predictor>).manifest !== undefined;
}

/** Per-variant prediction counters of one channel (looked up once: see server/metrics.ts hotMetrics). */
function variantCells(channel: Channel): Record<Variant | 'SHADOW', CounterCell> {
  const c = hotMetrics.predictions();
  return {
    LIVE: c.cell({ channel, variant: 'LIVE' }), CANARY: c.cell({ channel, variant: 'CANARY' }),
    BASELINE: c.cell({ channel, variant: 'BASELINE' }), SHADOW: c.cell({ channel, variant: 'SHADOW' }),
  };
}

export class PredictionService {
  private readonly predicted = { HTTP: variantCells('HTTP'), KAFKA: variantCells('KAFKA') };
  private readonly defaulted = hotMetrics.featuresDefaulted().cell();
  private readonly predictSeconds = { HTTP: serverMetrics.predictSeconds().cell({ channel: 'HTTP' }), KAFKA: serverMetrics.predictSeconds().cell({ channel: 'KAFKA' }) };

  constructor(
    private readonly registry: ModelRegistry,
    private readonly labels: LabelDirectory,
    private readonly manager: ModelManager,
    private readonly readFeatures: FeatureReader,
    private readonly readExampleCounts: ExampleCountReader,
    private readonly config: ServerConfig,
    private readonly logger: Logger,
  ) {
    // Availability-preserving swap: when a client that is being served gets a new live (or
    // canary/shadow) version, load it in the background; requests keep the old one meanwhile.
    registry.onChange((change) => {
      if (change.kind === 'ignored' || change.version === undefined) return;
      if (change.kind === 'published' && !change.becameLive) return;
      const c = registry.get(change.clientId);
      const info = c?.versions.get(change.version);
      if (!c || !info || !this.isHot(c)) return;
      manager.preload(c.clientId, info);
    });
  }

  /** A client is known once it has a published model or label definitions. */
  isKnown(clientId: string): boolean {
    return (this.registry.get(clientId)?.versions.size ?? 0) > 0 || this.labels.has(clientId);
  }

  private isHot(c: ClientModels): boolean {
    for (const v of c.versions.keys()) if (this.manager.isLoaded(c.clientId, v)) return true;
    return false;
  }

  /**
   * One request. The common case, the version it is routed to already loaded, takes a path of its
   * own: the model is borrowed synchronously and the features are the only wait (predictMany's
   * per-item arrays, version map and borrow promise cost a single prediction ~2 KB and two
   * promise hops; docs/benchmarks/server.md). Anything else goes through predictMany.
   */
  async predict(req: PredictRequest, channel: Channel): Promise<{ result: PredictResult; events: PredictionMade[] }> {
    const started = performance.now();
    const { clientId } = req;
    const c = this.registry.get(clientId);
    if (c?.live !== undefined) {
      const requestId = req.requestId ?? randomId();
      const canary = this.canaryFor(c, req, requestId);
      const wanted = canary ?? c.live;
      const hot = this.borrowHot(clientId, wanted);
      if (hot) {
        try {
          const f = await this.readFeatures(clientId, req.metadata);
          return this.answer(clientId, c, req, requestId, hot, canary, f, undefined, channel, started);
        } finally {
          hot.release();
        }
      }
    }
    // Not loaded, failed to load, or no model yet: the general path.
    return (await this.predictMany(clientId, [req], channel, started))[0]!;
  }

  /** The hot path: `version` is loaded and did not fail recently (no list, no await on I/O). */
  private borrowHot(clientId: string, version: string): ModelHandle | undefined {
    return this.manager.failure(clientId, version) ? undefined : this.manager.borrowLoaded(clientId, version);
  }

  /** The canary version a request goes to (stable per requester), or undefined for the live one. */
  private canaryFor(c: ClientModels, req: PredictRequest, requestId: string): string | undefined {
    if (!c.canary) return undefined;
    const requester = req.metadata[this.config.canaryKey] || requestId;
    return stableShare(`${c.clientId}|${c.canary.version}|${requester}`) < c.canary.share ? c.canary.version : undefined;
  }

  /**
   * Predictions for requests of one client (a batch, or one request): the client, its versions
   * and each model version are looked up once, the real-time features of every request are read
   * together (one Redis round trip: featurizer/realtime.ts RealtimeFeatureReader), then each
   * request is scored synchronously. Throws for the whole call (CLIENT_UNKNOWN) before any work.
   */
  async predictMany(clientId: string, reqs: readonly PredictRequest[], channel: Channel, started = performance.now()): Promise<Array<{ result: PredictResult; events: PredictionMade[] }>> {
    if (!this.isKnown(clientId)) {
      throw apiError('CLIENT_UNKNOWN', `client '${clientId}' has no model and no label definitions`);
    }
    const c = this.registry.get(clientId);
    const n = reqs.length;
    const requestIds: string[] = new Array(n);
    const handles: Array<ModelHandle | undefined> = new Array(n);
    const canaries: Array<string | undefined> = new Array(n);
    const borrowed: ModelHandle[] = [];
    try {
      if (c?.live !== undefined) {
        // Each wanted version (live, or canary for the requesters in its share) is borrowed once.
        const wantedOf: string[] = new Array(n);
        const byVersion = new Map<string, Promise<ModelHandle | undefined>>();
        for (let i = 0; i < n; i++) {
          const req = reqs[i]!;
          const requestId = (requestIds[i] = req.requestId ?? randomId());
          const canary = (canaries[i] = this.canaryFor(c, req, requestId));
          const wanted = (wantedOf[i] = canary ?? c.live);
          if (!byVersion.has(wanted)) byVersion.set(wanted, this.borrowServing(c, wanted, canary !== undefined));
        }
        if (byVersion.size === 1) {
          // The common case (one request, or a batch without a canary split): no bookkeeping.
          const h = await byVersion.values().next().value!;
          if (h) borrowed.push(h);
          handles.fill(h);
        } else {
          // Every borrow settles before anything is used, so each handle taken is released below.
          const settled = await Promise.allSettled(byVersion.values());
          const handleOf = new Map<string, ModelHandle | undefined>();
          let failure: unknown;
          let j = 0;
          for (const version of byVersion.keys()) {
            const r = settled[j++]!;
            if (r.status === 'rejected') failure ??= r.reason;
            else if (r.value) borrowed.push(r.value);
            handleOf.set(version, r.status === 'fulfilled' ? r.value : undefined);
          }
          if (failure !== undefined) throw failure;
          for (let i = 0; i < n; i++) handles[i] = handleOf.get(wantedOf[i]!);
        }
      } else {
        for (let i = 0; i < n; i++) requestIds[i] = reqs[i]!.requestId ?? randomId();
      }
      // Features are read after the models are in hand: a cold load (CPU-bound: hash + decode)
      // must not eat the features' tight deadline. On the hot path borrowing takes microseconds.
      let features: Array<{ features: Record<string, number>; defaulted: boolean }> | undefined;
      if (n === 1) {
        if (handles[0]) features = [await this.readFeatures(clientId, reqs[0]!.metadata)];
      } else if (handles.some((h) => h !== undefined)) {
        features = await this.readFeatures.many(clientId, reqs.map((req, i) => (handles[i] ? req.metadata : NO_METADATA)));
      }
      // Answers without a model (the baseline) order the labels the text does not decide between
      // by the client's labelled examples: read once per call, only when one is needed.
      const exampleCounts = handles.includes(undefined) ? await this.readExampleCounts(clientId) : undefined;
      const out: Array<{ result: PredictResult; events: PredictionMade[] }> = new Array(n);
      for (let i = 0; i < n; i++) {
        out[i] = this.answer(clientId, c, reqs[i]!, requestIds[i]!, handles[i], canaries[i], features?.[i] ?? NO_FEATURES, exampleCounts, channel, started);
      }
      return out;
    } finally {
      for (const h of borrowed) h.release();
    }
  }

  /** One request's answer and events, with its model (or the baseline when there is none). */
  private answer(
    clientId: string, c: ClientModels | undefined, req: PredictRequest, requestId: string, handle: ModelHandle | undefined,
    canary: string | undefined, f: { features: Record<string, number>; defaulted: boolean },
    exampleCounts: ReadonlyMap<string, number> | undefined, channel: Channel, started: number,
  ): { result: PredictResult; events: PredictionMade[] } {
    const topK = req.topK ?? this.config.topK;
    let variant: Variant;
    let featuresDefaulted = false;
    let label: string;
    let scores: Array<{ label: string; score: number }>;
    let unsure: boolean | null = null;
    let explanation: Explanation | undefined;
    let shadowEvent: PredictionMade | undefined;
    if (handle && c) {
      featuresDefaulted = f.defaulted;
      if (f.defaulted) this.defaulted.n++;
      const p = handle.predictor.predict(req.text, req.metadata, f.features, topK);
      ({ label, scores } = p);
      unsure = p.unsure ?? null;
      if (req.explain && isExplainable(handle.predictor)) {
        explanation = explainPrediction(handle.predictor, { text: req.text, metadata: req.metadata, realtime: f.features }, scores.map((x) => x.label), DEFAULT_EXPLAIN_TERMS);
      }
      variant = handle.version === canary ? 'CANARY' : 'LIVE';
      const shadow = c.shadow;
      if (shadow && shadow.version !== handle.version && stableShare(`${clientId}|${shadow.version}|shadow|${requestId}`) < shadow.share) {
        shadowEvent = this.scoreShadow(c, shadow.version, req, f.features, topK, requestId, channel, featuresDefaulted, started);
      }
    } else {
      const definitions = this.baselineLabels(clientId, c);
      const base = baselinePredict(req.text, definitions, exampleCounts, topK);
      if (!base) throw apiError('CLIENT_UNKNOWN', `client '${clientId}' has no servable model and no labels`);
      ({ label, scores } = base);
      if (req.explain) explanation = explainBaseline(req.text, definitions, scores.map((x) => x.label), DEFAULT_EXPLAIN_TERMS);
      variant = 'BASELINE';
    }
    const latencyMs = performance.now() - started;
    const result: PredictResult = { requestId, clientId, label, scores, modelVersion: handle?.version ?? null, variant, featuresDefaulted, unsure, latencyMs };
    if (explanation) result.explanation = explanation;
    const made = this.event(result, req, channel, eventIdOf(req, 'made'));
    this.predicted[channel][variant].n++;
    this.predictSeconds[channel].observe(latencyMs / 1000);
    return { result, events: shadowEvent ? [made, shadowEvent] : [made] };
  }

  /** Label definitions for the baseline; a client whose models all fail still has the labels they were trained on. */
  private baselineLabels(clientId: string, c: ClientModels | undefined): LabelDefinition[] {
    const defined = this.labels.get(clientId);
    if (defined.length > 0 || !c) return defined;
    const newest = [...c.versions.values()].at(-1);
    return (newest?.labels ?? []).map((label) => ({ label, description: '', keywords: [] }));
  }

  /**
   * The model for `wanted`, falling back along `fallbacks` (newest first):
   * 1. wanted is loaded: use it (the hot path, no await on a promise that does I/O);
   * 2. an older version is loaded: use it and load `wanted` in the background (the swap);
   * 3. nothing loaded: load on demand, trying the next version when one fails to load.
   * Versions that recently failed to load are skipped: a broken artifact never replaces a working one.
   */
  private async borrowServing(c: ClientModels, wanted: string, wantedIsCanary: boolean): Promise<ModelHandle | undefined> {
    const hot = this.borrowHot(c.clientId, wanted);
    if (hot) return hot;
    // Fallbacks, newest first: for a canary the live version, then earlier live versions.
    const fallbacks = [...(wantedIsCanary && c.live !== undefined ? [c.live] : []), ...[...c.liveHistory].reverse()];
    const candidates: VersionInfo[] = [];
    for (const v of [wanted, ...fallbacks]) {
      const info = c.versions.get(v);
      if (info && !candidates.includes(info) && !this.manager.failure(c.clientId, v)) candidates.push(info);
    }
    if (candidates.length === 0) return undefined;
    for (let i = candidates[0]!.version === wanted ? 1 : 0; i < candidates.length; i++) {
      const older = this.manager.borrowLoaded(c.clientId, candidates[i]!.version);
      if (older) {
        this.manager.preload(c.clientId, candidates[0]!);
        return older;
      }
    }
    for (const info of candidates) {
      try {
        return await this.manager.borrow(c.clientId, info);
      } catch {
        // Logged and counted by the manager; the next older version is tried.
      }
    }
    return undefined;
  }

  private scoreShadow(
    c: ClientModels, version: string, req: PredictRequest, features: Record<string, number>, topK: number,
    requestId: string, channel: Channel, featuresDefaulted: boolean, started: number,
  ): PredictionMade | undefined {
    const h = this.manager.borrowLoaded(c.clientId, version);
    if (!h) {
      // Shadow scoring must not add latency: load it in the background and score later requests.
      const info = c.versions.get(version);
      if (info) this.manager.preload(c.clientId, info);
      return undefined;
    }
    try {
      const p = h.predictor.predict(req.text, req.metadata, features, topK);
      this.predicted[channel].SHADOW.n++;
      return this.event(
        { requestId, clientId: c.clientId, label: p.label, scores: p.scores, modelVersion: version, variant: 'SHADOW' as Variant, featuresDefaulted, unsure: p.unsure ?? null, latencyMs: performance.now() - started },
        req, channel, eventIdOf(req, 'shadow'),
      );
    } catch (err) {
      this.logger.warn({ clientId: c.clientId, version, err: String(err) }, 'shadow scoring failed');
      return undefined;
    } finally {
      h.release();
    }
  }

  private event(r: Omit<PredictResult, 'variant'> & { variant: Variant | 'SHADOW' }, req: PredictRequest, channel: Channel, eventId: string): PredictionMade {
    return {
      eventId,
      clientId: r.clientId,
      occurredAt: Date.now(),
      requestId: r.requestId,
      text: req.text,
      metadata: req.metadata,
      label: r.label,
      scores: r.scores,
      modelVersion: r.modelVersion,
      variant: r.variant,
      latencyMs: r.latencyMs,
      channel,
      featuresDefaulted: r.featuresDefaulted,
      unsure: r.unsure,
    };
  }
}
