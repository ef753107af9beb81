import { DependencyUnavailableError } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { LogFollower } from '../server/log-follower.ts';
import { LabelDirectory, ModelRegistry } from '../server/registry.ts';
import type { Streams } from '../streams/index.ts';

/**
 * Which version is live per client, as the servers see it: the server's own projection of the
 * `models` topic (ModelRegistry: publish, promote, pin, rollback rules) fed by the server's
 * follower (private consumer group from the beginning, ready once caught up with the end offsets
 * captured at start). One set of rules, so the trainer's gate compares against exactly the
 * version the servers answer with, e.g. the older one after a ModelRolledBack.
 */
export interface LiveView {
  /** The live version (null: none) and the versions retention must also keep. */
  forTraining(clientId: string): Promise<{ liveVersion: string | null; keepVersions: string[] }>;
  /** A ModelPublished this process just sent: the next training of that client waits for it to come back from the log. */
  announced(clientId: string, eventId: string): void;
}

const OWN_EVENT_TIMEOUT_MS = 30_000;

export class LiveVersions implements LiveView {
  readonly registry = new ModelRegistry();
  private readonly follower: LogFollower;
  private readonly pending = new Map<string, string>();

  constructor(streams: Streams, replicaId: string, private readonly logger: Logger) {
    // The labels the follower also reads are not needed here; examples are not counted.
    this.follower = new LogFollower(streams, this.registry, new LabelDirectory(), replicaId, logger, false);
  }

  /** Starts following and resolves once caught up with the models topic as it was at start. */
  async start(): Promise<void> {
    await this.follower.start();
    await this.follower.whenReady();
    this.logger.info({ clients: this.registry.size }, 'live versions known from the models topic');
  }

  announced(clientId: string, eventId: string): void {
    this.pending.set(clientId, eventId);
  }

  async forTraining(clientId: string): Promise<{ liveVersion: string | null; keepVersions: string[] }> {
    const own = this.pending.get(clientId);
    if (own !== undefined) {
      // Our own publish is applied in log order (a rollback written before it stays before it),
      // so we wait for the follower rather than applying it locally.
      const deadline = Date.now() + OWN_EVENT_TIMEOUT_MS;
      while (!this.registry.hasApplied(own)) {
        if (this.follower.crashError) throw new DependencyUnavailableError('kafka', `models topic follower stopped: ${this.follower.crashError.message}`);
        if (Date.now() > deadline) throw new DependencyUnavailableError('kafka', `ModelPublished ${own} of ${clientId} not back from the models topic after ${OWN_EVENT_TIMEOUT_MS} ms`);
        await new Promise((r) => setTimeout(r, 20));
      }
      this.pending.delete(clientId);
    }
    const c = this.registry.get(clientId);
    if (!c) return { liveVersion: null, keepVersions: [] };
    const roles = [c.canary?.version, c.shadow?.version].filter((v): v is string => v !== undefined);
    return { liveVersion: c.live ?? null, keepVersions: [...c.liveHistory, ...roles] };
  }

  async stop(): Promise<void> {
    await this.follower.stop();
  }
}
