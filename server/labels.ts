import { RecentIds } from '../common/ids.ts';
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
