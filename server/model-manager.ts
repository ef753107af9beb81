import { EddyError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { hotMetrics, serverMetrics } from './metrics.ts';
import type { VersionInfo } from '../models/lifecycle.ts';

/**
 * The TensorFlow Serving "manager" for thousands of per-client models in one process:
 * - loads lazily (first request) or in the background (a new live version of a client that is
 *   being served), and coalesces concurrent loads of one version into one;
 * - keeps loaded models in LRU order and evicts the least recently used ones beyond the memory
 *   budget (bytes as reported by each predictor), never one that a request is borrowing;
 * - remembers versions that failed to load, so a broken artifact is not retried on every request
 *   (it is retried after `failureTtlMs`, in case the store was only briefly unreadable).
 * Which version a request should use is the prediction service's decision; this class only holds
 * models and hands out short-lived handles.
 */

/** What the server needs from a loaded model (models/predictor.ts `Predictor` satisfies it). */
export interface ServablePredictor {
  predict(
    text: string,
    metadata: Record<string, string>,
    realtime: Record<string, number>,
    topK?: number,
  ): { label: string; scores: Array<{ label: string; score: number }>; unsure?: boolean | null };
  readonly memoryBytes: number;
}

/** Reads, verifies (sha256) and loads one artifact; throws EddyError (ARTIFACT_CORRUPT, FEATURIZER_MISMATCH, ...). */
export type ArtifactLoader = (clientId: string, version: VersionInfo) => Promise<ServablePredictor>;

export interface ModelHandle {
  readonly clientId: string;
  readonly version: string;
  readonly predictor: ServablePredictor;
  /** Ends the borrow; the model may be evicted afterwards. */
  release(): void;
}

interface LoadedModel {
  key: string;
  clientId: string;
  version: string;
  predictor: ServablePredictor;
  bytes: number;
  borrowed: number;
  loadMs: number;
}

/** A handle as a class, not an object with a closure: one is made per prediction. */
class Borrow implements ModelHandle {
  private released = false;
  readonly clientId: string;
  readonly version: string;
  readonly predictor: ServablePredictor;

  constructor(private readonly model: LoadedModel) {
    this.clientId = model.clientId;
    this.version = model.version;
    this.predictor = model.predictor;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.model.borrowed--;
  }
}

export interface LoadFailure {
  code: string;
  message: string;
  at: number;
}

const keyOf = (clientId: string, version: string) => `${clientId}\u0000${version}`;

export class ModelManager {
  /** Insertion order is recency order: a hit moves the entry to the end. */
  private readonly loaded = new Map<string, LoadedModel>();
  private readonly loading = new Map<string, Promise<LoadedModel>>();
  private readonly failures = new Map<string, LoadFailure>();
  private loadedBytes = 0;
  private readonly hits = hotMetrics.cacheLookups().cell({ result: 'hit' });

  constructor(
    private readonly loader: ArtifactLoader,
    private readonly budgetBytes: number,
    private readonly logger: Logger,
    private readonly failureTtlMs = 60_000,
  ) {}

  private loadsCompleted = 0;

  get stats(): { models: number; bytes: number; budgetBytes: number; loading: number; loads: number } {
    return { models: this.loaded.size, bytes: this.loadedBytes, budgetBytes: this.budgetBytes, loading: this.loading.size, loads: this.loadsCompleted };
  }

  isLoaded(clientId: string, version: string): boolean {
    return this.loaded.has(keyOf(clientId, version));
  }

  isLoading(clientId: string, version: string): boolean {
    return this.loading.has(keyOf(clientId, version));
  }

  /** The recent load failure of a version, if any (expired failures are forgotten). */
  failure(clientId: string, version: string): LoadFailure | undefined {
    const key = keyOf(clientId, version);
    const f = this.failures.get(key);
    if (f && Date.now() - f.at > this.failureTtlMs) {
      this.failures.delete(key);
      return undefined;
    }
    return f;
  }

  /** A handle on a loaded model, or undefined (never loads: the hot path stays synchronous). */
  borrowLoaded(clientId: string, version: string): ModelHandle | undefined {
    const key = keyOf(clientId, version);
    const m = this.loaded.get(key);
    if (!m) return undefined;
    this.loaded.delete(key);
    this.loaded.set(key, m);
    this.hits.n++;
    return this.handle(m);
  }

  /** Loads (or joins the load of) a version and borrows it; throws the load error. */
  async borrow(clientId: string, info: VersionInfo): Promise<ModelHandle> {
    const hot = this.borrowLoaded(clientId, info.version);
    if (hot) return hot;
    serverMetrics.cacheLookups().inc({ result: 'miss' });
    const m = await this.load(clientId, info);
    return this.handle(m);
  }

  /** Starts loading in the background (a swap or a shadow); failures are logged and counted, never thrown. */
  preload(clientId: string, info: VersionInfo): void {
    if (this.isLoaded(clientId, info.version) || this.failure(clientId, info.version)) return;
    this.load(clientId, info).catch(() => undefined);
  }

  private handle(m: LoadedModel): ModelHandle {
    m.borrowed++;
    return new Borrow(m);
  }

  private load(clientId: string, info: VersionInfo): Promise<LoadedModel> {
    const key = keyOf(clientId, info.version);
    const existing = this.loaded.get(key);
    if (existing) return Promise.resolve(existing);
    const failed = this.failure(clientId, info.version);
    if (failed) return Promise.reject(new EddyError(failed.code, failed.message));
    let pending = this.loading.get(key);
    if (pending) return pending;
    pending = this.doLoad(key, clientId, info).finally(() => this.loading.delete(key));
    this.loading.set(key, pending);
    return pending;
  }

  private async doLoad(key: string, clientId: string, info: VersionInfo): Promise<LoadedModel> {
    const started = performance.now();
    let predictor: ServablePredictor;
    try {
      predictor = await this.loader(clientId, info);
    } catch (err) {
      const code = err instanceof EddyError ? err.code : 'MODEL_LOAD_FAILED';
      this.failures.set(key, { code, message: errorMessage(err), at: Date.now() });
      serverMetrics.loads().inc({ outcome: 'failed', code });
      this.logger.error({ clientId, version: info.version, artifactUri: info.artifactUri, code, err: errorMessage(err) }, 'model load failed; the version is not served');
      throw err instanceof EddyError ? err : new EddyError(code, `loading ${clientId} ${info.version} failed: ${errorMessage(err)}`, { cause: err });
    }
    const loadMs = performance.now() - started;
    serverMetrics.loads().inc({ outcome: 'ok', code: '' });
    serverMetrics.loadSeconds().observe(loadMs / 1000);
    const m: LoadedModel = { key, clientId, version: info.version, predictor, bytes: Math.max(1, predictor.memoryBytes), borrowed: 0, loadMs };
    this.failures.delete(key);
    this.loadsCompleted++;
    this.loaded.set(key, m);
    this.loadedBytes += m.bytes;
    this.evict(m);
    this.updateGauges();
    this.logger.debug({ clientId, version: info.version, bytes: m.bytes, loadMs }, 'model loaded');
    return m;
  }

  /** Evicts least recently used models until the budget holds; the model just loaded stays. */
  private evict(keep: LoadedModel): void {
    if (this.loadedBytes <= this.budgetBytes) return;
    for (const m of this.loaded.values()) {
      if (this.loadedBytes <= this.budgetBytes) break;
      if (m === keep || m.borrowed > 0) continue;
      this.remove(m);
      serverMetrics.evictions().inc();
    }
  }

  private remove(m: LoadedModel): void {
    this.loaded.delete(m.key);
    this.loadedBytes -= m.bytes;
    this.updateGauges();
  }

  private updateGauges(): void {
    serverMetrics.loadedModels().set(this.loaded.size);
    serverMetrics.loadedBytes().set(this.loadedBytes);
  }
}
