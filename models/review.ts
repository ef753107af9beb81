import { createHash } from 'node:crypto';
import type { RedisClient } from '../common/redis.ts';
import { reviewKeys } from '../common/keyspace.ts';
import { redisError, SlotPipelines } from '../common/redis.ts';
import { normalizeText, tokenize } from '../featurizer/text.ts';

/**
 * The review queue (active learning), as its readers see it: per client, the predictions most
 * worth a human label, kept in Redis by the review processor (processors/review/) from the
 * `predictions` and `feedback` topics, read and closed by the server's review API
 * (server/http/review.ts) and the dashboard. Layout: common/keyspace.ts (`reviewKeys`).
 *
 * Why an item is there (its reasons), and how much it is worth (its score per reason):
 *   CONFIDENTLY_WRONG  feedback reassigned or rejected an answer given with a top score of at
 *                      least EDDY_REVIEW_CONFIDENT_ABOVE: 1 + top score (1.8..2). The model is
 *                      sure and wrong: the most informative label there is.
 *   DISAGREEMENT       the shadow version answered differently from the served one: 1 + half the
 *                      lower of the two top scores (1..1.5): two confident versions disagreeing
 *                      first.
 *   UNSURE             the served answer was unsure (isUnsure below): 1 - top score (0..1): the
 *                      least sure first.
 * An item's priority is its best reason's score, plus 0.1 per further reason, plus 0.02 per
 * further request with the same text (at most 10): a text many users send is worth more.
 *
 * De-duplicated: an item is one text as the model sees it (the featurizer's normalisation and
 * words: case, accents, punctuation and spacing aside), so the same request redelivered, a request and its shadow scoring, and many users
 * sending the same words are one item. Labelled or skipped items are closed and not queued again
 * while the prediction TTL lasts.
 */

export const REVIEW_REASONS = ['CONFIDENTLY_WRONG', 'DISAGREEMENT', 'UNSURE'] as const;
export type ReviewReason = (typeof REVIEW_REASONS)[number];

export interface ReviewItem {
  itemId: string;
  priority: number;
  text: string;
  metadata: Record<string, string>;
  /** What the model answered (the latest request with this text). */
  predicted: { label: string; score: number; version: string | null; variant: string };
  scores: Array<{ label: string; score: number }>;
  reasons: Array<{ reason: ReviewReason; score: number }>;
  /** The shadow version's answer, when it disagreed. */
  shadow: { label: string; version: string; score: number } | null;
  /** What feedback said, when it disagreed with a confident answer. */
  feedback: { outcome: string; correctLabel: string | null } | null;
  /** Requests with this text since it was queued. */
  occurrences: number;
  /** The latest request with this text (the LabeledExample's predictionId). */
  requestId: string;
  firstSeenAt: number;
  lastSeenAt: number;
}

/** The id of the item a text belongs to: its words as the featurizer sees them (case, accents and spacing aside), hashed (16 hex characters). */
export function reviewItemId(text: string): string {
  return createHash('sha256').update(tokenize(normalizeText(text)).join(' ')).digest('hex').slice(0, 16);
}

/**
 * Is a served prediction unsure? The one switch of the queue's UNSURE rule: a prediction that
 * carries a calibrated `unsure` flag (PredictionMade's boolean, set by the server from the
 * version's calibrated threshold) is taken at its word; one that does not (events written before
 * the flag existed) is unsure when its top score is below `unsureBelow` (EDDY_REVIEW_UNSURE_BELOW).
 */
export function isUnsure(prediction: { scores: ReadonlyArray<{ score: number }> }, unsureBelow: number): boolean {
  const flag = (prediction as { unsure?: unknown }).unsure;
  if (typeof flag === 'boolean') return flag;
  return (prediction.scores[0]?.score ?? 0) < unsureBelow;
}

function parseJson<T>(raw: string | undefined, fallback: T): T {
  if (!raw) return fallback;
  try {
    return JSON.parse(raw) as T;
  } catch {
    return fallback;
  }
}

/** An item from its stored hash (undefined when it does not exist). */
export function itemFromHash(itemId: string, priority: number, h: Record<string, string>): ReviewItem | undefined {
  if (!h.text && h.text !== '') return undefined;
  const reasons: ReviewItem['reasons'] = [];
  for (const reason of REVIEW_REASONS) {
    const v = h[`why:${reason}`];
    if (v !== undefined) reasons.push({ reason, score: Number(v) });
  }
  reasons.sort((a, b) => b.score - a.score);
  const version = h.v && h.v !== 'baseline' ? h.v : null;
  return {
    itemId,
    priority,
    text: h.text,
    metadata: parseJson<Record<string, string>>(h.md, {}),
    predicted: { label: h.l ?? '', score: Number(h.s ?? 0), version, variant: h.variant ?? '' },
    scores: parseJson<Array<{ label: string; score: number }>>(h.scores, []),
    reasons,
    shadow: h.sh ? { label: h.sh, version: h.shv ?? '', score: Number(h.shs ?? 0) } : null,
    feedback: h.fb ? { outcome: h.fb, correctLabel: h.fbl || null } : null,
    occurrences: Number(h.n ?? 1),
    requestId: h.req ?? '',
    firstSeenAt: Number(h.t ?? 0),
    lastSeenAt: Number(h.lt ?? h.t ?? 0),
  };
}

/**
 * One page of the queue in one script, so the page is a snapshot: an item's priority (the sorted
 * set) and its fields (the hash) are read together. Read separately, a reader could see the
 * priority before an update and the occurrence count after it.
 * KEYS: queue. ARGV: item key base, first index, last index. Returns [total, id, score, fields, ...].
 */
const READ_PAGE = `
local total = redis.call('ZCARD', KEYS[1])
local page = redis.call('ZREVRANGE', KEYS[1], ARGV[2], ARGV[3], 'WITHSCORES')
local out = {total}
for i = 1, #page, 2 do
  table.insert(out, page[i])
  table.insert(out, page[i + 1])
  table.insert(out, redis.call('HGETALL', ARGV[1] .. page[i]))
end
return out
`;

function hashOf(fields: string[]): Record<string, string> {
  const h: Record<string, string> = {};
  for (let i = 0; i < fields.length; i += 2) h[fields[i]!] = fields[i + 1]!;
  return h;
}

/** One page of a client's queue, most worth a label first, and its size. */
export async function readReviewQueue(redis: RedisClient, prefix: string, clientId: string, opts: { limit: number; offset: number }): Promise<{ total: number; items: ReviewItem[] }> {
  let reply: unknown[];
  try {
    reply = (await redis.eval(READ_PAGE, 1, reviewKeys.queue(prefix, clientId), reviewKeys.item(prefix, clientId, ''), opts.offset, opts.offset + opts.limit - 1)) as unknown[];
  } catch (err) {
    throw redisError(err, 'reading the review queue');
  }
  const items: ReviewItem[] = [];
  for (let i = 1; i < reply.length; i += 3) {
    const item = itemFromHash(String(reply[i]), Number(reply[i + 1]), hashOf(reply[i + 2] as string[]));
    // An item whose hash expired while still queued is not worth showing (its text is gone).
    if (item) items.push(item);
  }
  return { total: Number(reply[0]), items };
}

/** One open item, or undefined when it is not (or no longer) in the queue. */
export async function readReviewItem(redis: RedisClient, prefix: string, clientId: string, itemId: string): Promise<ReviewItem | undefined> {
  let score: string | null;
  let hash: Record<string, string>;
  try {
    // One transaction, for the same reason as READ_PAGE.
    const res = await redis.multi().zscore(reviewKeys.queue(prefix, clientId), itemId).hgetall(reviewKeys.item(prefix, clientId, itemId)).exec();
    if (!res) throw new Error('transaction aborted');
    for (const [err] of res) if (err) throw err;
    score = res[0]![1] as string | null;
    hash = res[1]![1] as Record<string, string>;
  } catch (err) {
    throw redisError(err, 'reading a review item');
  }
  if (score === null) return undefined;
  return itemFromHash(itemId, Number(score), hash);
}

/** Queue sizes of many clients in one pipeline (the dashboard's overview). */
export async function reviewQueueSizes(redis: RedisClient, prefix: string, clientIds: readonly string[]): Promise<number[]> {
  if (clientIds.length === 0) return [];
  // One pipeline on a single Redis; one per client on a cluster.
  const pipeline = new SlotPipelines(redis);
  for (const id of clientIds) {
    const key = reviewKeys.queue(prefix, id);
    pipeline.queue(key, (q) => q.zcard(key));
  }
  return ((await pipeline.exec('reading review queue sizes')) as number[]).map(Number);
}

/**
 * Closes an item (labelled or skipped): out of the queue, remembered as closed for `ttlMs` (a
 * later request with the same text is not queued again meanwhile), its hash deleted. Atomic;
 * returns false when the item was not open (already closed by another reviewer, or unknown).
 */
const CLOSE = `
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(ARGV[2]) - tonumber(ARGV[3])))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('DEL', KEYS[3])
return 1
`;

export async function closeReviewItem(redis: RedisClient, prefix: string, clientId: string, itemId: string, now: number, ttlMs: number): Promise<boolean> {
  try {
    const r = await redis.eval(CLOSE, 3, reviewKeys.queue(prefix, clientId), reviewKeys.closed(prefix, clientId), reviewKeys.item(prefix, clientId, itemId), itemId, now, ttlMs);
    return Number(r) === 1;
  } catch (err) {
    throw redisError(err, 'closing a review item');
  }
}
