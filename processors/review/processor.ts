import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from '../../common/redis.ts';
import type { EddyConfig } from '../../common/config.ts';
import { predictionKey, reviewKeys } from '../../common/keyspace.ts';
import { counter } from '../../common/metrics.ts';
import { SlotPipelines } from '../../common/redis.ts';
import { BASELINE_VERSION } from '../../models/quality.ts';
import { isUnsure, reviewItemId } from '../../models/review.ts';
import type { EventHandler, EventRecord } from '../../streams/consumer.ts';
import type { TopicName } from '../../streams/topics.ts';
import { withReviewScripts, type ReviewRedis } from './store.ts';

export const REVIEW_TOPICS: readonly TopicName[] = ['predictions', 'feedback'];

export interface ReviewOptions {
  keyPrefix: string;
  /** EDDY_REVIEW_UNSURE_BELOW: the UNSURE rule's threshold for predictions without a calibrated flag. */
  unsureBelow: number;
  /** EDDY_REVIEW_CONFIDENT_ABOVE: a wrong answer at least this sure is CONFIDENTLY_WRONG. */
  confidentAbove: number;
  /** EDDY_REVIEW_MAX_ITEMS per client. */
  maxItems: number;
  /** How long items, and predictions waiting for their feedback, are kept (the prediction TTL). */
  ttlMs: number;
}

export function reviewOptions(config: EddyConfig): ReviewOptions {
  const r = config.processors.review;
  return { keyPrefix: config.redisPrefix, unsureBelow: r.unsureBelow, confidentAbove: r.confidentAbove, maxItems: r.maxItems, ttlMs: config.processors.predictionTtlMs };
}

const queued = () => counter({
  name: 'eddy_review_queued_total', help: 'Reasons added to review queue items (an item can have several), by reason', labelNames: ['reason'],
});

/**
 * The review queue (active learning), a projection of the `predictions` and `feedback` topics:
 * served predictions that were unsure, answers that feedback proved confidently wrong, and
 * requests the shadow version answered differently, one item per normalised text, ranked
 * (models/review.ts). Feedback may overtake its prediction: it waits in Redis and is joined
 * when the prediction arrives, like the monitor's join. Canary requests are scored by one
 * version only, so disagreements come from shadow scoring.
 */
export class ReviewProcessor implements EventHandler {
  private readonly redis: ReviewRedis;

  constructor(redis: RedisClient, private readonly opts: ReviewOptions) {
    this.redis = withReviewScripts(redis);
  }

  async handle(records: EventRecord[]): Promise<void> {
    const o = this.opts;
    const p = o.keyPrefix;
    // One pipeline on a single Redis; one per client on a cluster (a call spans many clients).
    const pipeline = new SlotPipelines<ReviewPipeline>(this.redis);
    let n = 0;
    for (const r of records) {
      if (r.event.name === 'PredictionMade') {
        const e = r.event.value;
        const itemId = reviewItemId(e.text);
        const top = e.scores[0]?.score ?? 0;
        const rec = predictionKey(p, e.clientId, e.requestId);
        const base = reviewKeys.itemBase(p, e.clientId);
        if (e.variant === 'SHADOW') {
          pipeline.queue(rec, (q) => q.eddyReviewShadow(rec, reviewKeys.queue(p, e.clientId), reviewKeys.closed(p, e.clientId), reviewKeys.item(p, e.clientId, itemId),
            e.requestId, itemId, base, e.label, e.modelVersion ?? BASELINE_VERSION, top, e.occurredAt, o.ttlMs, o.maxItems));
        } else {
          pipeline.queue(rec, (q) => q.eddyReviewServed(rec, reviewKeys.queue(p, e.clientId), reviewKeys.closed(p, e.clientId), reviewKeys.item(p, e.clientId, itemId), reviewKeys.waiting(p, e.clientId, e.requestId),
            e.requestId, itemId, base, e.text, JSON.stringify(e.metadata), e.label, e.modelVersion ?? BASELINE_VERSION, e.variant, e.occurredAt, top,
            JSON.stringify(e.scores), isUnsure(e, o.unsureBelow) ? 1 : 0, o.ttlMs, o.maxItems, o.confidentAbove));
        }
        n++;
      } else if (r.event.name === 'PredictionFeedback') {
        const f = r.event.value;
        const rec = predictionKey(p, f.clientId, f.requestId);
        pipeline.queue(rec, (q) => q.eddyReviewFeedback(rec, reviewKeys.queue(p, f.clientId), reviewKeys.closed(p, f.clientId), reviewKeys.waiting(p, f.clientId, f.requestId),
          f.requestId, reviewKeys.itemBase(p, f.clientId), f.outcome, f.correctLabel ?? '', f.occurredAt, o.ttlMs, o.maxItems, o.confidentAbove));
        n++;
      }
    }
    if (n === 0) return;
    const results = await pipeline.exec('updating the review queue');
    const counter = queued();
    for (const r of results) {
      if (typeof r !== 'string' || r === '' || r === 'waiting') continue;
      for (const reason of r.split(',')) counter.inc({ reason });
    }
  }
}

type ReviewPipeline = ChainableCommander & {
  eddyReviewServed(...args: Array<string | number>): unknown;
  eddyReviewShadow(...args: Array<string | number>): unknown;
  eddyReviewFeedback(...args: Array<string | number>): unknown;
};
