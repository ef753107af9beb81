import { randomUUID } from 'node:crypto';
import { DependencyUnavailableError, EddyError } from '../common/errors.ts';
import { compareVersions, RecentIds } from '../common/ids.ts';
import type { Logger } from '../common/log.ts';
import type { ModelPromoted, ModelPublished, ModelRolledBack } from '../schemas/events.ts';
import { LogFollower, type AnyEvent, type EventProducer, type Streams } from '../streams/index.ts';

/**
 * The model lifecycle: which version of each client's model is live, canary, shadow or pinned,
 * as the `models` topic says (the TensorFlow Serving "source"). One fold, used by every reader of
 * that topic — servers, trainers, the monitor, the dashboard and the CLI — so they all reach the
 * same decision for the same log:
 * - ModelPublished: the trainer publishes only versions that passed the gate against live, so a
 *   published version goes live, unless the client is pinned (then it waits for a promote);
 * - ModelPromoted LIVE: that version goes live (pinned or not); CANARY/SHADOW with a share > 0
 *   starts that role, share 0 ends it; the live version cannot also be canary or shadow;
 * - ModelRolledBack: back to `toVersion`; the version rolled back from leaves the rollback history
 *   and any role;
 * - a promote or rollback naming a version that was never published is ignored (and reported).
 * The fold itself is pure and per client (`applyModelEvent`); `ModelRegistry` keeps the states of
 * all clients in memory, the monitor keeps each client's state in Redis (`clientModelsToJson`).
 */

export interface VersionInfo {
  version: string;
  artifactUri: string;
  artifactSha256: string;
  featurizer: string;
  labels: string[];
  metrics: Record<string, number>;
  trainingExamples: number;
  publishedAt: number;
  /** The model search's configuration (JSON, ModelPublished.modelConfig; '' from older trainers). */
  modelConfig?: string;
  /** Its cross-validated macro-F1 at the last search (null: none ran). */
  cvMacroF1?: number | null;
  /** Whether this version ran the search or reused the previous choice. */
  searched?: boolean;
  /** What trained it (ModelPublished.backend). */
  backend?: string;
}

export interface ClientModels {
  clientId: string;
  versions: Map<string, VersionInfo>;
  /** The version that should answer requests, unless a canary takes the request. */
  live: string | undefined;
  /** A pinned live version is not replaced by newer ModelPublished events. */
  pinned: boolean;
  canary: { version: string; share: number } | undefined;
  /** Scored on a share of requests and logged, never returned. */
  shadow: { version: string; share: number } | undefined;
  /** Earlier live versions, most recent last: what a rollback without a target returns to. */
  liveHistory: string[];
  updatedAt: number;
}

export type LifecycleChange =
  | { kind: 'published'; clientId: string; version: string; becameLive: boolean; from: string | undefined }
  | { kind: 'live'; clientId: string; version: string; from: string | undefined }
  | { kind: 'canary' | 'shadow'; clientId: string; version: string | undefined }
  | { kind: 'ignored'; clientId: string; reason: string };

/** The models topic's lifecycle events (ModelRejected changes nothing here). */
export type LifecycleEvent =
  | { name: 'ModelPublished'; value: ModelPublished }
  | { name: 'ModelPromoted'; value: ModelPromoted }
  | { name: 'ModelRolledBack'; value: ModelRolledBack };

export function isLifecycleEvent(event: AnyEvent): event is LifecycleEvent {
  return event.name === 'ModelPublished' || event.name === 'ModelPromoted' || event.name === 'ModelRolledBack';
}

/** One line of the lifecycle history (the monitor records it; the dashboard and CLI show it). */
export interface LifecycleEntry {
  id: string;
  clientId: string;
  type: string;
  at: number;
  version: string | null;
  title: string;
}

export const MAX_VERSIONS_PER_CLIENT = 50;
const MAX_LIVE_HISTORY = 20;

export function emptyClientModels(clientId: string): ClientModels {
  return { clientId, versions: new Map(), live: undefined, pinned: false, canary: undefined, shadow: undefined, liveHistory: [], updatedAt: 0 };
}

function setLive(c: ClientModels, version: string): string | undefined {
  const from = c.live;
  if (from === version) return from;
  if (from !== undefined) {
    c.liveHistory = c.liveHistory.filter((v) => v !== from);
    c.liveHistory.push(from);
    if (c.liveHistory.length > MAX_LIVE_HISTORY) c.liveHistory.shift();
  }
  c.liveHistory = c.liveHistory.filter((v) => v !== version);
  c.live = version;
  // A version is in exactly one role: promoting the canary or shadow to live ends that role.
  if (c.canary?.version === version) c.canary = undefined;
  if (c.shadow?.version === version) c.shadow = undefined;
  return from;
}

/**
 * The models topic is kept forever, so a client's versions grow without bound; the state keeps
 * the newest MAX_VERSIONS_PER_CLIENT plus every version in a role or in the rollback history
 * (the model store prunes old artifacts by a similar policy).
 */
function forgetOldVersions(c: ClientModels): void {
  if (c.versions.size <= MAX_VERSIONS_PER_CLIENT) return;
  const keep = new Set([c.live, c.canary?.version, c.shadow?.version, ...c.liveHistory]);
  for (const v of [...c.versions.keys()].sort(compareVersions)) {
    if (c.versions.size <= MAX_VERSIONS_PER_CLIENT) break;
    if (!keep.has(v)) c.versions.delete(v);
  }
}

/** The fold: applies one lifecycle event to one client's state (in place) and says what changed. */
export function applyModelEvent(c: ClientModels, event: LifecycleEvent): LifecycleChange {
  switch (event.name) {
    case 'ModelPublished': {
      const e = event.value;
      c.updatedAt = e.occurredAt;
      c.versions.set(e.modelVersion, {
        version: e.modelVersion, artifactUri: e.artifactUri, artifactSha256: e.artifactSha256, featurizer: e.featurizer,
        labels: e.labels, metrics: e.metrics, trainingExamples: e.trainingExamples, publishedAt: e.occurredAt,
        modelConfig: e.modelConfig, cvMacroF1: e.cvMacroF1, searched: e.searched, backend: e.backend,
      });
      const becameLive = !c.pinned;
      const from = becameLive ? setLive(c, e.modelVersion) : c.live;
      forgetOldVersions(c);
      return { kind: 'published', clientId: e.clientId, version: e.modelVersion, becameLive, from };
    }
    case 'ModelPromoted': {
      const e = event.value;
      if (!c.versions.has(e.modelVersion)) {
        return { kind: 'ignored', clientId: e.clientId, reason: `ModelPromoted ${e.modelVersion}: version was never published` };
      }
      c.updatedAt = e.occurredAt;
      if (e.variant === 'LIVE') {
        const from = setLive(c, e.modelVersion);
        c.pinned = e.pinned;
        return { kind: 'live', clientId: e.clientId, version: e.modelVersion, from };
      }
      // share 0 ends a canary or shadow; the live version cannot also be canary or shadow.
      const share = Math.min(1, Math.max(0, e.share));
      const role = share > 0 && e.modelVersion !== c.live ? { version: e.modelVersion, share } : undefined;
      if (e.variant === 'CANARY') c.canary = role;
      else c.shadow = role;
      return { kind: e.variant === 'CANARY' ? 'canary' : 'shadow', clientId: e.clientId, version: role?.version };
    }
    case 'ModelRolledBack': {
      const e = event.value;
      if (!c.versions.has(e.toVersion)) {
        return { kind: 'ignored', clientId: e.clientId, reason: `ModelRolledBack to ${e.toVersion}: version was never published` };
      }
      c.updatedAt = e.occurredAt;
      const from = setLive(c, e.toVersion);
      if (from !== undefined && from !== e.toVersion) {
        // The rolled-back-from version must not come back as a canary or shadow by itself, and
        // it leaves the rollback history: rolling back again should not return to it.
        if (c.canary?.version === from) c.canary = undefined;
        if (c.shadow?.version === from) c.shadow = undefined;
        c.liveHistory = c.liveHistory.filter((v) => v !== from);
      }
      return { kind: 'live', clientId: e.clientId, version: e.toVersion, from };
    }
  }
}

/** The versions retention must keep for a client besides the newest: live, rollback history, canary, shadow. */
export function retainedVersions(c: ClientModels | undefined): { live: string | null; keep: string[] } {
  if (!c) return { live: null, keep: [] };
  const roles = [c.canary?.version, c.shadow?.version].filter((v): v is string => v !== undefined);
  return { live: c.live ?? null, keep: [...new Set([...c.liveHistory, ...roles])] };
}

/** JSON form of one client's state (the monitor keeps it in Redis between events). */
export function clientModelsToJson(c: ClientModels): string {
  return JSON.stringify({ ...c, versions: [...c.versions.values()] });
}

export function clientModelsFromJson(clientId: string, json: string | null | undefined): ClientModels {
  if (!json) return emptyClientModels(clientId);
  const raw = JSON.parse(json) as Omit<ClientModels, 'versions'> & { versions: VersionInfo[] };
  return { ...emptyClientModels(clientId), ...raw, versions: new Map(raw.versions.map((v) => [v.version, v])) };
}

/** Every client's lifecycle state in memory, folded from the models topic. Pure state, no I/O. */
export class ModelRegistry {
  private readonly clients = new Map<string, ClientModels>();
  private readonly applied = new RecentIds(100_000);
  private readonly listeners = new Set<(change: LifecycleChange) => void>();

  get(clientId: string): ClientModels | undefined {
    return this.clients.get(clientId);
  }

  /** Whether an event was applied (recently): admin calls wait for their own event to come back. */
  hasApplied(eventId: string): boolean {
    return this.applied.has(eventId);
  }

  clientIds(): IterableIterator<string> {
    return this.clients.keys();
  }

  get size(): number {
    return this.clients.size;
  }

  /** Called after each applied change (the server preloads new live versions from here). */
  onChange(listener: (change: LifecycleChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies one event of the models topic; other types and duplicates are no-ops. */
  apply(event: AnyEvent): LifecycleChange | undefined {
    if (!isLifecycleEvent(event)) return undefined;
    if (!this.applied.add(event.value.eventId)) return undefined;
    const clientId = event.value.clientId;
    let c = this.clients.get(clientId);
    if (!c) this.clients.set(clientId, (c = emptyClientModels(clientId)));
    const change = applyModelEvent(c, event);
    for (const l of this.listeners) l(change);
    return change;
  }

  /** Resolves once `eventId` was applied (this process's own event read back from the log). */
  async waitForApplied(eventId: string, timeoutMs: number, crashed?: () => Error | undefined): Promise<boolean> {
    const deadline = Date.now() + timeoutMs;
    while (!this.applied.has(eventId)) {
      const err = crashed?.();
      if (err) throw new DependencyUnavailableError('kafka', `models topic follower stopped: ${err.message}`, err);
      if (Date.now() > deadline) return false;
      await new Promise((r) => setTimeout(r, 20));
    }
    return true;
  }
}

/**
 * A ModelRegistry kept in step with the models topic by a private follower (streams/follower.ts):
 * what trainers (gate and retention against the live version) and the CLI use. Servers follow
 * the models and labels topics together (server/main.ts).
 */
export class ModelLifecycle {
  readonly registry = new ModelRegistry();
  private readonly follower: LogFollower;

  constructor(streams: Streams, name: string, private readonly logger: Logger) {
    this.follower = new LogFollower(streams, {
      name: `${name}-models`, topics: ['models'], logger,
      apply: (r) => {
        const change = this.registry.apply(r.event);
        if (change?.kind === 'ignored') logger.warn({ clientId: change.clientId, reason: change.reason }, 'model event ignored');
      },
    });
  }

  /** Starts following and resolves once caught up with the models topic as it was at start. */
  async start(): Promise<void> {
    await this.follower.start();
    await this.follower.whenReady();
    this.logger.debug({ clients: this.registry.size }, 'lifecycle known from the models topic');
  }

  /** Waits until this process's own event came back from the log (so its effect is visible here). */
  async applied(eventId: string, timeoutMs = 30_000): Promise<void> {
    if (!(await this.registry.waitForApplied(eventId, timeoutMs, () => this.follower.crashError))) {
      throw new DependencyUnavailableError('kafka', `event ${eventId} was published but not read back from the models topic within ${timeoutMs} ms`);
    }
  }

  async stop(): Promise<void> {
    await this.follower.stop();
  }
}

export interface PromoteRequest {
  version: string;
  variant: 'LIVE' | 'CANARY' | 'SHADOW';
  share?: number;
  pinned?: boolean;
  reason?: string;
  actor?: string;
}

export interface RollbackRequest {
  to?: string;
  reason?: string;
  actor?: string;
}

/**
 * Promote, roll back and pin: operator decisions become events on the `models` topic, never
 * local state changes, so every replica (and a replica started later) follows the same decision
 * by reading the log. The admin API and the CLI both go through here; the checks run against the
 * caller's registry (caught up with the log) so a typo is refused instead of being published.
 */
export class ModelAdmin {
  constructor(private readonly registry: ModelRegistry, private readonly producer: EventProducer) {}

  private client(clientId: string): ClientModels {
    const c = this.registry.get(clientId);
    if (!c || c.versions.size === 0) throw new EddyError('CLIENT_UNKNOWN', `client '${clientId}' has no published model`);
    return c;
  }

  private version(clientId: string, version: string): void {
    const c = this.client(clientId);
    if (!c.versions.has(version)) {
      throw new EddyError('VERSION_UNKNOWN', `client '${clientId}' has no version '${version}' (published: ${[...c.versions.keys()].join(', ')})`);
    }
  }

  async promote(clientId: string, req: PromoteRequest): Promise<ModelPromoted> {
    this.version(clientId, req.version);
    const share = req.share ?? 1;
    if (!(share >= 0 && share <= 1)) throw new EddyError('INVALID_REQUEST', `share must be in [0, 1], got ${share}`);
    const c = this.client(clientId);
    if (req.variant !== 'LIVE' && req.version === c.live && share > 0) {
      throw new EddyError('CONFLICT', `${req.version} is the live version of '${clientId}'; it cannot also be ${req.variant}`);
    }
    const event: ModelPromoted = {
      eventId: randomUUID(), clientId, occurredAt: Date.now(), modelVersion: req.version, variant: req.variant,
      share, pinned: req.variant === 'LIVE' ? req.pinned ?? false : false, actor: req.actor ?? 'operator', reason: req.reason ?? '',
    };
    await this.producer.send('ModelPromoted', event);
    return event;
  }

  /** Pins (or unpins) a live version: a pinned client ignores newer ModelPublished until unpinned. */
  async pin(clientId: string, req: { version?: string; pinned: boolean; reason?: string; actor?: string }): Promise<ModelPromoted> {
    const c = this.client(clientId);
    const version = req.version ?? c.live;
    if (!version) throw new EddyError('CONFLICT', `client '${clientId}' has no live version to pin`);
    return this.promote(clientId, { version, variant: 'LIVE', pinned: req.pinned, reason: req.reason, actor: req.actor });
  }

  async rollback(clientId: string, req: RollbackRequest): Promise<ModelRolledBack> {
    const c = this.client(clientId);
    const to = req.to ?? c.liveHistory.at(-1);
    if (!to) throw new EddyError('CONFLICT', `client '${clientId}' has no earlier live version to roll back to; name one with --to`);
    this.version(clientId, to);
    if (to === c.live) throw new EddyError('CONFLICT', `${to} is already the live version of '${clientId}'`);
    const event: ModelRolledBack = {
      eventId: randomUUID(), clientId, occurredAt: Date.now(), fromVersion: c.live ?? null, toVersion: to,
      actor: req.actor ?? 'operator', reason: req.reason ?? '',
    };
    await this.producer.send('ModelRolledBack', event);
    return event;
  }
}
