import { randomUUID } from 'node:crypto';
import type { Streams, TopicName } from '../streams/index.ts';
import type { EventRecord } from '../streams/index.ts';
import type { AnyEvent } from '../streams/codec.ts';
import type { PredictionFeedback, PredictionMade } from '../schemas/events.ts';
import { caughtUp, feedback, prediction } from './processors-support.ts';

/** Shared by the monitor tests: judged-prediction streams and a reader of what the monitor emits. */

export const DAY = 86_400_000;

/**
 * `n` predictions of `version` at `at` with feedback: `right(i)` is the right label of the i-th,
 * `predicted(i)` what the model said. Right -> ACCEPTED, wrong -> REASSIGNED to the right label.
 */
export function judged(clientId: string, version: string | null, at: number, n: number, predicted: (i: number) => string, right: (i: number) => string): AnyEvent[] {
  const events: AnyEvent[] = [];
  for (let i = 0; i < n; i++) {
    const requestId = randomUUID();
    const label = predicted(i);
    const truth = right(i);
    const p: PredictionMade = prediction(clientId, requestId, label, { occurredAt: at + i, modelVersion: version, variant: version ? 'LIVE' : 'BASELINE' });
    const f: PredictionFeedback = truth === label
      ? feedback(clientId, requestId, 'ACCEPTED', null, { occurredAt: at + i + 1 })
      : feedback(clientId, requestId, 'REASSIGNED', truth, { occurredAt: at + i + 1 });
    events.push({ name: 'PredictionMade', value: p }, { name: 'PredictionFeedback', value: f });
  }
  return events;
}

/**
 * Starts a consumer collecting every event of `topics` (its own group), resolved once assigned.
 * `drained()` is true once it has read everything the topics hold now: a "none emitted" or
 * "exactly one" check must wait for it after the emitting processor caught up (which produces
 * before it commits), or an event still on its way would go unseen.
 */
export async function collect(streams: Streams, topics: readonly TopicName[]): Promise<AnyEvent[] & { drained(): Promise<boolean> }> {
  const seen: AnyEvent[] = [];
  const group = `reader-${randomUUID().slice(0, 8)}`;
  const reader = streams.consumer({
    group, topics,
    handler: { async handle(records: EventRecord[]) { for (const r of records) seen.push(r.event); } },
  });
  const assigned = reader.waitForAssignment();
  await reader.start();
  await assigned;
  return Object.assign(seen, { drained: () => caughtUp(streams, group, topics) });
}
