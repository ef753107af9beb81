import type { LabelSetChanged, ModelPromoted, ModelPublished, ModelRolledBack } from '../schemas/events.ts';
import type { AnyEvent } from '../streams/index.ts';

/**
 * The server's view of which model versions each client should serve: a projection of the
 * `models` topic (the TensorFlow Serving "source"). Every replica folds the same log in the same
 * order, so every replica reaches the same decision. Pure state, no I/O: the follower feeds it,
 * the manager and the prediction path read it.
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

const VERSION_RE = /^v(\d+)$/;
export const MAX_VERSIONS_PER_CLIENT = 50;

/** Orders `v<N>` numerically (v10 after v9); anything else sorts before, by name. */
export function compareVersions(a: string, b: string): number {
  const ma = VERSION_RE.exec(a);
  const mb = VERSION_RE.exec(b);
  if (ma && mb) return Number(ma[1]) - Number(mb[1]);
  if (ma) return 1;
  if (mb) return -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Bounded set of recently applied event ids: redelivered events are applied once. */
class RecentIds {
  private readonly ids = new Set<string>();
  constructor(private readonly capacity: number) {}
  has(id: string): boolean {
    return this.ids.has(id);
  }
  /** True the first time an id is seen. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value!);
    return true;
  }
}

export type RegistryChange =
  | { kind: 'published'; clientId: string; version: string; becameLive: boolean }
  | { kind: 'live'; clientId: string; version: string; from: string | undefined }
  | { kind: 'canary' | 'shadow'; clientId: string; version: string | undefined }
  | { kind: 'ignored'; clientId: string; reason: string };

export class ModelRegistry {
  private readonly clients = new Map<string, ClientModels>();
  private readonly applied = new RecentIds(100_000);
  private readonly listeners = new Set<(change: RegistryChange) => void>();

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

  /** Called after each applied change (the manager preloads new live versions from here). */
  onChange(listener: (change: RegistryChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Applies one event of the models topic; unknown types and duplicates are no-ops. */
  apply(event: AnyEvent): RegistryChange | undefined {
    if (event.name !== 'ModelPublished' && event.name !== 'ModelPromoted' && event.name !== 'ModelRolledBack') return undefined;
    if (!this.applied.add(event.value.eventId)) return undefined;
    let change: RegistryChange;
    if (event.name === 'ModelPublished') change = this.published(event.value);
    else if (event.name === 'ModelPromoted') change = this.promoted(event.value);
    else change = this.rolledBack(event.value);
    for (const l of this.listeners) l(change);
    return change;
  }

  private client(clientId: string): ClientModels {
    let c = this.clients.get(clientId);
    if (!c) {
      c = { clientId, versions: new Map(), live: undefined, pinned: false, canary: undefined, shadow: undefined, liveHistory: [], updatedAt: 0 };
      this.clients.set(clientId, c);
    }
    return c;
  }

  private setLive(c: ClientModels, version: string): string | undefined {
    const from = c.live;
    if (from === version) return from;
    if (from !== undefined) {
      c.liveHistory = c.liveHistory.filter((v) => v !== from);
      c.liveHistory.push(from);
      if (c.liveHistory.length > 20) c.liveHistory.shift();
    }
    c.liveHistory = c.liveHistory.filter((v) => v !== version);
    c.live = version;
    // A version is in exactly one role: promoting the canary or shadow to live ends that role.
    if (c.canary?.version === version) c.canary = undefined;
    if (c.shadow?.version === version) c.shadow = undefined;
    return from;
  }

  private published(e: ModelPublished): RegistryChange {
    const c = this.client(e.clientId);
    c.updatedAt = e.occurredAt;
    c.versions.set(e.modelVersion, {
      version: e.modelVersion,
      artifactUri: e.artifactUri,
      artifactSha256: e.artifactSha256,
      featurizer: e.featurizer,
      labels: e.labels,
      metrics: e.metrics,
      trainingExamples: e.trainingExamples,
      publishedAt: e.occurredAt,
    });
    // The trainer only publishes versions that passed the gate against live: they go live,
    // unless an operator pinned the live version (then it waits for an explicit promote).
    const becameLive = !c.pinned;
    if (becameLive) this.setLive(c, e.modelVersion);
    this.forgetOldVersions(c);
    return { kind: 'published', clientId: e.clientId, version: e.modelVersion, becameLive };
  }

  /**
   * The models topic is kept forever, so a client's versions grow without bound; the registry
   * keeps the newest MAX_VERSIONS_PER_CLIENT plus every version in a role or in the rollback
   * history (the model store prunes old artifacts by a similar policy).
   */
  private forgetOldVersions(c: ClientModels): void {
    if (c.versions.size <= MAX_VERSIONS_PER_CLIENT) return;
    const keep = new Set([c.live, c.canary?.version, c.shadow?.version, ...c.liveHistory]);
    const byAge = [...c.versions.keys()].sort(compareVersions);
    for (const v of byAge) {
      if (c.versions.size <= MAX_VERSIONS_PER_CLIENT) break;
      if (!keep.has(v)) c.versions.delete(v);
    }
  }

  private promoted(e: ModelPromoted): RegistryChange {
    const c = this.client(e.clientId);
    if (!c.versions.has(e.modelVersion)) {
      return { kind: 'ignored', clientId: e.clientId, reason: `ModelPromoted ${e.modelVersion}: version was never published` };
    }
    c.updatedAt = e.occurredAt;
    if (e.variant === 'LIVE') {
      const from = this.setLive(c, e.modelVersion);
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

  private rolledBack(e: ModelRolledBack): RegistryChange {
    const c = this.client(e.clientId);
    if (!c.versions.has(e.toVersion)) {
      return { kind: 'ignored', clientId: e.clientId, reason: `ModelRolledBack to ${e.toVersion}: version was never published` };
    }
    c.updatedAt = e.occurredAt;
    const from = this.setLive(c, e.toVersion);
    // The rolled-back-from version must not come back as a canary or shadow by itself.
    if (from !== undefined && c.canary?.version === from) c.canary = undefined;
    if (from !== undefined && c.shadow?.version === from) c.shadow = undefined;
    // It also leaves the rollback history: rolling back again should not return to it.
    if (from !== undefined) c.liveHistory = c.liveHistory.filter((v) => v !== from);
    return { kind: 'live', clientId: e.clientId, version: e.toVersion, from };
  }
}

export interface LabelDefinition {
  label: string;
  description: string;
  keywords: string[];
}

/**
 * Per-client label (team) definitions, a projection of the `labels` topic. The server has no
 * label store of its own; this is what the baseline answers from for clients without a model.
 */
export class LabelDirectory {
  private readonly clients = new Map<string, Map<string, LabelDefinition>>();
  private readonly applied = new RecentIds(100_000);
  private readonly exampleCounts = new Map<string, Map<string, number>>();
  private readonly countedExamples = new RecentIds(100_000);

  get(clientId: string): LabelDefinition[] {
    return [...(this.clients.get(clientId)?.values() ?? [])];
  }

  has(clientId: string): boolean {
    return (this.clients.get(clientId)?.size ?? 0) > 0;
  }

  apply(event: AnyEvent): void {
    if (event.name !== 'LabelSetChanged') return;
    if (!this.applied.add(event.value.eventId)) return;
    const e: LabelSetChanged = event.value;
    let labels = this.clients.get(e.clientId);
    if (!labels) this.clients.set(e.clientId, (labels = new Map()));
    const existing = labels.get(e.label) ?? (e.previousLabel ? labels.get(e.previousLabel) : undefined);
    switch (e.change) {
      case 'REMOVED':
        labels.delete(e.label);
        return;
      case 'RENAMED':
        if (e.previousLabel) labels.delete(e.previousLabel);
        break;
      default:
        break;
    }
    labels.set(e.label, {
      label: e.label,
      description: e.description ?? existing?.description ?? '',
      keywords: e.keywords.length > 0 ? e.keywords : existing?.keywords ?? [],
    });
  }

  /** Labelled examples seen per label: the baseline's majority label. */
  counts(clientId: string): ReadonlyMap<string, number> | undefined {
    return this.exampleCounts.get(clientId);
  }

  countExample(event: AnyEvent): void {
    if (event.name !== 'LabeledExample') return;
    if (!this.countedExamples.add(event.value.eventId)) return;
    let counts = this.exampleCounts.get(event.value.clientId);
    if (!counts) this.exampleCounts.set(event.value.clientId, (counts = new Map()));
    counts.set(event.value.label, (counts.get(event.value.label) ?? 0) + 1);
  }
}
