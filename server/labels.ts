import { RecentIds } from '../common/ids.ts';
import { featureKeys, labelCountsOf } from '../common/keyspace.ts';
import type { RedisClient } from '../common/redis.ts';
import type { LabelSetChanged } from '../schemas/events.ts';
import type { AnyEvent } from '../streams/index.ts';

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
}

/** Labelled examples per label of a client (the baseline's majority label); undefined when not known in time. */
export type ExampleCountReader = (clientId: string) => Promise<ReadonlyMap<string, number> | undefined>;

/**
 * Reads a client's labelled examples per label from the counters the feature processor keeps in
 * Redis (`featureKeys.counts`). The server used to count them itself by reading the whole
 * `examples` topic at every start: CPU that grows with every example ever sent, on the request
 * thread, while a restarted server is trying to answer (3.5 s of a blocked event loop at ~100k
 * examples on the loaded 2-core machine). Only answers without a model ask, and only to order
 * labels the text does not decide between, so a read that fails or misses the deadline
 * gives undefined (definition order) instead of failing the prediction.
 */
export function redisExampleCounts(redis: RedisClient, keyPrefix: string, timeoutMs: number): ExampleCountReader {
  return async (clientId) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      const counts = await Promise.race([
        redis.hgetall(featureKeys.counts(keyPrefix, clientId)),
        new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), timeoutMs))),
      ]);
      return counts && labelCountsOf(counts);
    } catch {
      return undefined;
    } finally {
      clearTimeout(timer);
    }
  };
}
