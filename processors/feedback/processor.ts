import type { RedisClient } from '../../common/redis.ts';
import { EddyError } from '../../common/errors.ts';
import type { EventHandler, EventRecord, ProcessorContext } from '../../streams/consumer.ts';
import type { AnyEvent } from '../../streams/codec.ts';
import type { TopicName } from '../../streams/topics.ts';
import type { LabeledExample, PredictionFeedback } from '../../schemas/events.ts';
import { SlotPipelines } from '../../common/redis.ts';
import { derivedId } from '../../common/ids.ts';
import { predictionKey } from '../../common/keyspace.ts';

export const FEEDBACK_TOPICS: readonly TopicName[] = ['feedback'];

/** A stable UUID-shaped id derived from the feedback's eventId: a replay produces the same example event. */
export function exampleEventIdFor(feedbackEventId: string): string {
  return derivedId(`eddy:feedback-example:${feedbackEventId}`);
}

/**
 * Turns feedback into training data, so an upstream service reports a correction once:
 * ACCEPTED -> LabeledExample(label = predicted, source ASSIGNMENT), REASSIGNED ->
 * LabeledExample(label = correctLabel, source REASSIGNMENT); REJECTED says only what is wrong, so
 * it yields no example. Text, metadata and the predicted label come from the prediction record
 * the feature processor keeps in Redis (common/keyspace.ts). exampleId = requestId, so a later correction replaces an earlier acceptance.
 *
 * Feedback can overtake its prediction (different topics): then the call fails with a retriable
 * error and is retried with backoff, up to `maxWaits` times, after which the feedback is
 * dead-lettered with the reason (its prediction is unknown or expired).
 */
export class FeedbackProcessor implements EventHandler {
  private readonly waits = new Map<string, number>();

  private emit: ProcessorContext['emit'] = async () => {
    throw new EddyError('NOT_INITIALISED', 'the feedback processor emits only after init()');
  };

  constructor(
    private readonly redis: RedisClient,
    private readonly opts: { keyPrefix: string; maxWaits: number },
  ) {}

  async init(ctx: ProcessorContext): Promise<void> {
    this.emit = ctx.emit;
  }

  async handle(records: EventRecord[]): Promise<void> {
    const feedback: PredictionFeedback[] = [];
    for (const r of records) {
      if (r.event.name !== 'PredictionFeedback') continue;
      const f = r.event.value;
      if (f.outcome === 'REJECTED') continue;
      if (f.outcome === 'REASSIGNED' && !f.correctLabel) {
        throw new EddyError('FEEDBACK_INVALID', `feedback ${f.eventId} is REASSIGNED without a correctLabel`);
      }
      feedback.push(f);
    }
    if (feedback.length === 0) return;
    // One pipeline on a single Redis; one per client on a cluster (a call spans many clients).
    const pipeline = new SlotPipelines(this.redis);
    for (const f of feedback) {
      const key = predictionKey(this.opts.keyPrefix, f.clientId, f.requestId);
      pipeline.queue(key, (q) => q.hmget(key, 'text', 'md', 'l'));
    }
    const stored = await pipeline.exec('reading predictions for feedback');
    const examples: AnyEvent[] = [];
    const missing: PredictionFeedback[] = [];
    feedback.forEach((f, i) => {
      const [text, md, label] = stored[i] as Array<string | null>;
      if (text === null || text === undefined || label === null || label === undefined) {
        missing.push(f);
        return;
      }
      const p = { text, label, metadata: md ? (JSON.parse(md) as Record<string, string>) : {} };
      const example: LabeledExample = {
        eventId: exampleEventIdFor(f.eventId),
        clientId: f.clientId,
        occurredAt: f.occurredAt,
        exampleId: f.requestId,
        text: p.text,
        label: f.outcome === 'REASSIGNED' ? f.correctLabel! : p.label,
        source: f.outcome === 'REASSIGNED' ? 'REASSIGNMENT' : 'ASSIGNMENT',
        metadata: p.metadata,
        predictionId: f.requestId,
      };
      examples.push({ name: 'LabeledExample', value: example });
      this.waits.delete(f.eventId);
    });
    await this.emit(examples);
    if (missing.length === 0) return;
    const first = missing[0]!;
    const waited = (this.waits.get(first.eventId) ?? 0) + 1;
    if (waited > this.opts.maxWaits) {
      // Kept (not reset) so that the runner's record-by-record isolation dead-letters it at once.
      if (this.waits.size > 100_000) this.waits.clear();
      throw new EddyError('PREDICTION_UNKNOWN', `feedback ${first.eventId} refers to prediction ${first.requestId} of client ${first.clientId}, which is unknown or expired after ${this.opts.maxWaits} retries`);
    }
    for (const f of missing) this.waits.set(f.eventId, (this.waits.get(f.eventId) ?? 0) + 1);
    if (this.waits.size > 100_000) this.waits.clear(); // bounded memory; worst case a feedback waits again
    throw new EddyError('PREDICTION_NOT_YET_KNOWN', `${missing.length} feedback event(s) wait for their prediction (first: ${first.requestId}, attempt ${waited}/${this.opts.maxWaits})`, { retriable: true });
  }
}
