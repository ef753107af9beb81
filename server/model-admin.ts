import { randomUUID } from 'node:crypto';
import { EddyError } from '../common/errors.ts';
import type { ModelPromoted, ModelRolledBack } from '../schemas/events.ts';
import type { EventProducer } from '../streams/index.ts';
import type { ModelRegistry } from './registry.ts';

/**
 * Promote, roll back and pin: operator decisions become events on the `models` topic, never
 * local state changes, so every replica (and a replica started later) follows the same decision
 * by reading the log. The admin API and the CLI both go through here; the checks run against the
 * caller's registry (caught up with the log) so a typo is refused instead of being published.
 */
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

export class ModelAdmin {
  constructor(private readonly registry: ModelRegistry, private readonly producer: EventProducer) {}

  private client(clientId: string) {
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
