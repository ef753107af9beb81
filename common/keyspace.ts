/**
 * Every Redis key Eddy uses, in one place. All of a client's keys carry the `{clientId}` hash
 * tag, so they live in one Redis Cluster slot and one Lua script may touch all of them; the few
 * keys that list clients sit outside any client's slot. Every name starts with EDDY_REDIS_PREFIX.
 *
 * Per client, `${prefix}:{clientId}` then:
 *
 *   :pred:<requestId>   HASH  the one prediction record feedback refers to: text, md (metadata
 *                             JSON), l (label), v (version, or 'baseline'), variant, t (occurredAt)
 *                             written by the feature processor (replay rebuilds them); j (1 once
 *                             judged) by the monitor's quality join, which also writes l and v (same
 *                             values) so it never waits for the feature processor. The feedback
 *                             processor reads text, md and l. Expires after
 *                             EDDY_FEEDBACK_PREDICTION_TTL_DAYS.
 *
 *   feature processor (processors/features/), `:f`
 *   :f:seen             ZSET  eventId -> processing time: events applied (idempotency)
 *   :f:labels           HASH  label -> JSON {description, keywords, updatedAt}: the active label set
 *   :f:counts           HASH  examples, label:<L>, source:<S>, last_activity_ms, label_changes, predictions, feedback
 *   :f:rt:<field>:<v>   HASH  label -> decayed count, _t: real-time entity history (featurizer/realtime.ts)
 *   :f:xf:<eventId>     STRING the entity state an example saw (a redelivery records the same features)
 *   :f:q:<yyyy-mm-dd>   HASH  outcome:<O>, predictions, variant:<V>, defaulted: daily buckets (35 days)
 *
 *   quality monitor (processors/monitor/), `:m`
 *   :m:seen             ZSET  eventId -> occurredAt: events applied (idempotency), pruned by age
 *   :m:w:<requestId>    STRING JSON {o, c, t}: feedback that overtook its prediction
 *   :m:q:<version>:<day> HASH counters (models/quality.ts) of judgements of that day (epoch day);
 *                             version '*' sums every version, 'baseline' is the no-model fallback
 *   :m:versions         SET   versions with judgements
 *   :m:s                HASH  summary: predictions, feedback, judged, live, pinned, lifecycle (the
 *                             client's models/lifecycle.ts state as JSON), last_* of the lifecycle,
 *                             fresh* (a published version under live evaluation), drop/bias (open alerts)
 *   :m:ev               LIST  recent lifecycle events (JSON, newest first, capped)
 *   :m:trend            ZSET  minute -> JSON rolling-week quality snapshot
 *
 *   :m:g:<day>          HASH  per-segment counters of judgements of that day: `<segment>|<counter>`
 *                             (segment `channel=email`, `length=short`; counters as in :m:q)
 *   and on the prediction record, `sg`: the segments of the prediction (JSON list), written by
 *   the monitor's quality join so that a judgement counts into its segments.
 *
 *   trigger processor (processors/triggers/)
 *   :t                  STRING JSON retrain-policy state (processors/triggers/policy.ts)
 *
 *   review queue (processors/review/ writes, server/http/review.ts reads and closes; models/review.ts)
 *   :r:q                ZSET  itemId -> priority: the open queue, most worth a label first
 *   :r:i:<itemId>       HASH  one item (one normalised text): text, md, l, s (top score), scores,
 *                             v, variant, t/lt (first/last seen), n (requests with this text), req
 *                             (latest requestId), why:<REASON> (score per reason), sh/shv/shs (shadow
 *                             answer), fb/fbl (feedback); expires with the prediction TTL
 *   :r:closed           ZSET  itemId -> when it was labelled or skipped (not queued again; pruned)
 *   :r:w:<requestId>    STRING JSON feedback that overtook its prediction (joined when it comes)
 *   and on the prediction record: ri (item id), rs (top score), rsh/rshv/rshs (the shadow answer).
 *
 * Outside any client's slot: `${prefix}:clients` (SET, every client the feature processor saw),
 * `${prefix}:m:clients` (ZSET clientId -> last activity), `${prefix}:m:recent` (LIST of every
 * client's recent lifecycle events), `${prefix}:triggers:held` (ZSET clientId -> when a held
 * retrain is due). They list clients, so no client's hash tag fits them; each sits in a slot of
 * its own on a Redis Cluster, and is fine there because it is only ever written or read by
 * commands of its own (never in a Lua script or MULTI with a client's keys; in a pipeline of many
 * clients, common/redis.ts `SlotPipelines` gives it its own).
 */

/** The common start of every key of one client. */
export function clientKey(prefix: string, clientId: string): string {
  return `${prefix}:{${clientId}}`;
}

/** Matches every key of a prefix (SCAN MATCH), for replay and test clean-up. */
export function keyPattern(prefix: string): string {
  return `${prefix}:*`;
}

/** The one prediction record per request (see above). */
export function predictionKey(prefix: string, clientId: string, requestId: string): string {
  return `${clientKey(prefix, clientId)}:pred:${requestId}`;
}

const MAX_ENTITY_VALUE_LENGTH = 200;

export const featureKeys = {
  base: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:f`,
  seen: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:f:seen`,
  labels: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:f:labels`,
  /**
   * A client's counters, kept by the feature processor (exactly once per event): `examples`,
   * `label:<label>` and `source:<source>` per labelled example, `label_changes`, `predictions`,
   * `feedback`, `last_activity_ms`. Read by the trigger processor and by the server (the
   * baseline's majority label): `labelCountsOf`.
   */
  counts: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:f:counts`,
  snapshot: (prefix: string, clientId: string, eventId: string) => `${clientKey(prefix, clientId)}:f:xf:${eventId}`,
  quality: (prefix: string, clientId: string, occurredAt: number) =>
    `${clientKey(prefix, clientId)}:f:q:${new Date(occurredAt).toISOString().slice(0, 10)}`,
  /**
   * One entity's decayed label counts (the value is cut to 200 characters and URI-encoded). Lone
   * surrogates become U+FFFD first, as a UTF-8 round trip (Avro on the log) makes them, so a
   * value typed into HTTP and the same value read from an event name one key; and
   * encodeURIComponent, which throws on a lone surrogate (also one left by the cut), cannot fail.
   */
  entity: (prefix: string, clientId: string, field: string, value: string) =>
    `${clientKey(prefix, clientId)}:f:rt:${field}:${encodeURIComponent(wellFormed(value.slice(0, MAX_ENTITY_VALUE_LENGTH)))}`,
  clients: (prefix: string) => `${prefix}:clients`,
};

export const monitorKeys = {
  base: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m`,
  seen: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m:seen`,
  waiting: (prefix: string, clientId: string, requestId: string) => `${clientKey(prefix, clientId)}:m:w:${requestId}`,
  bucket: (prefix: string, clientId: string, version: string, day: number) => `${clientKey(prefix, clientId)}:m:q:${version}:${day}`,
  versions: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m:versions`,
  summary: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m:s`,
  events: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m:ev`,
  trend: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:m:trend`,
  segments: (prefix: string, clientId: string, day: number) => `${clientKey(prefix, clientId)}:m:g:${day}`,
  clients: (prefix: string) => `${prefix}:m:clients`,
  recent: (prefix: string) => `${prefix}:m:recent`,
};

export const reviewKeys = {
  queue: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:r:q`,
  item: (prefix: string, clientId: string, itemId: string) => `${clientKey(prefix, clientId)}:r:i:${itemId}`,
  /** What item keys of a client start with (Lua scripts append the item id). */
  itemBase: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:r:i:`,
  closed: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:r:closed`,
  waiting: (prefix: string, clientId: string, requestId: string) => `${clientKey(prefix, clientId)}:r:w:${requestId}`,
};

export const triggerKeys = {
  state: (prefix: string, clientId: string) => `${clientKey(prefix, clientId)}:t`,
  held: (prefix: string) => `${prefix}:triggers:held`,
};

/** Labelled examples per label, from a client's `featureKeys.counts` hash. */
export function labelCountsOf(counts: Record<string, string>): Map<string, number> {
  const out = new Map<string, number>();
  for (const field in counts) if (field.startsWith('label:')) out.set(field.slice(6), Number(counts[field]));
  return out;
}

/** String.prototype.toWellFormed (Node 20; not in the ES2022 lib this project compiles against). */
function wellFormed(s: string): string {
  return (s as unknown as { toWellFormed(): string }).toWellFormed();
}
