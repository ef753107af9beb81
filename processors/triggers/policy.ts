import type { ProcessorsConfig } from '../../common/config.ts';
import type { RetrainRequested } from '../../schemas/events.ts';

type RetrainReason = RetrainRequested['reason'];

/** What the trigger processor remembers per client (a projection of examples, labels, models, alerts). */
export interface ClientTriggerState {
  /** Examples seen (events; a correction of the same exampleId counts again, like new evidence). */
  examples: number;
  /** Examples per label, for labels currently in use. */
  labelCounts: Record<string, number>;
  /** `examples` when the last request was made (or when a model appeared without our request). */
  baselineExamples: number;
  /** `examples` when the data of the live model was cut: the baseline of the request it answered. */
  examplesAtLastModel: number;
  lastModelVersion: string | null;
  lastModelAt: number | null;
  lastRequestAt: number | null;
  /** The request no ModelPublished/ModelRejected answered yet (and why it was made). */
  outstanding: { eventId: string; at: number; reason?: RetrainReason } | null;
  /**
   * Set when the answer to our request said the trainer read its data before ClickHouse had all
   * of it (`dataComplete: false`): the reason to ask again, once the cooldown allows.
   */
  incomplete: RetrainReason | null;
  labelsChanged: boolean;
  qualityAlert: string | null;
  /** Highest offset applied per topic: a client lives on one partition per topic, so this dedupes redeliveries. */
  offsets: Record<string, number>;
  /** eventId of the latest LabeledExample / LabelSetChanged folded: the watermark a request carries (dataAsOf). */
  lastExampleEventId: string | null;
  lastLabelChangeEventId: string | null;
  /**
   * Processing time (this process's clock) when the last LabeledExample was folded: "quiet" is
   * judged on it, so a backlog being read counts as busy until it is drained, whatever its event times.
   */
  lastExampleSeenAt: number | null;
  /**
   * Examples folded recently, decayed with time constant quietMs, as of lastExampleSeenAt: a burst
   * (an import, a backlog) adds up to hundreds, live traffic stays at a few. Absent in a state
   * saved before it was kept: such a client counts as busy (any recent example) until its next
   * example starts the count.
   */
  arrivals?: number;
  /** Processing time when a request that waits for quiet was first held for it (bounds the wait). */
  waitingSince: number | null;
  /** Examples per label when the last request was made: which labels its training set had too few of. */
  labelCountsAtRequest: Record<string, number>;
  /**
   * Set when the answer to our request was ModelRejected LABEL_TOO_FEW_EXAMPLES: the reason to ask
   * again and the per-label counts that request was made on; asked again as soon as a label that
   * had fewer than minExamplesPerLabel then has that many.
   */
  thin: { reason: RetrainReason; counts: Record<string, number> } | null;
}

export function emptyTriggerState(): ClientTriggerState {
  return {
    examples: 0, labelCounts: {}, baselineExamples: 0, examplesAtLastModel: 0, lastModelVersion: null, lastModelAt: null,
    lastRequestAt: null, outstanding: null, incomplete: null, labelsChanged: false, qualityAlert: null, offsets: {},
    lastExampleEventId: null, lastLabelChangeEventId: null, lastExampleSeenAt: null, waitingSince: null, labelCountsAtRequest: {}, thin: null,
  };
}

export type Decision =
  /**
   * `readBacklogFirst`: the request answers a burst and passed the quiet rule on processing time
   * only; the processor also checks that it has read what the log held when quiet was first seen
   * (a starved or stalled consumer folds nothing for a while, which looks quiet).
   */
  | { kind: 'request'; reason: RetrainReason; detail: string; readBacklogFirst?: boolean }
  | { kind: 'hold'; reason: RetrainReason; detail: string; blockedBy: 'OUTSTANDING' | 'COOLDOWN' | 'QUIET' }
  | { kind: 'none' };

/** `s.arrivals` decayed to `wallNow` (Infinity for a state that does not keep it: busy as before). */
export function recentArrivals(s: Pick<ClientTriggerState, 'arrivals' | 'lastExampleSeenAt'>, wallNow: number, quietMs: number): number {
  if (s.arrivals === undefined) return Infinity;
  if (s.lastExampleSeenAt === null) return 0;
  return s.arrivals * Math.exp(-Math.max(0, wallNow - s.lastExampleSeenAt) / quietMs);
}

/** Folds one example's arrival at processing time `wallNow` into `s.arrivals` (before lastExampleSeenAt moves). */
export function countArrival(s: ClientTriggerState, wallNow: number, quietMs: number): void {
  const since = s.lastExampleSeenAt;
  s.arrivals = (quietMs > 0 && since !== null ? (s.arrivals ?? 0) * Math.exp(-Math.max(0, wallNow - since) / quietMs) : 0) + 1;
}

/**
 * The retrain policy, pure: given a client's state at event time `now` (and processing time
 * `wallNow`, for the quiet rule), should a retrain be requested, and why. Rules in priority order:
 * QUALITY_DROP (an alert arrived), the answer to our last request missed data (its reason again),
 * a label the last request had too few examples of now has enough (its reason again), NEW_CLIENT
 * (no model yet, enough examples over at least minLabels labels), catch-up (data grew
 * catchUpGrowth× since what the live model or the last request saw: NEW_DATA; before
 * LABELS_CHANGED, which waits for the cooldown, because a retrain reads the labels too), LABELS_CHANGED, NEW_DATA
 * (count or growth since the last request), STALE (model older than staleMs and any new example).
 * Every rule needs at least minLabels labels with examples.
 *
 * A request is held back while another is outstanding (until its ModelPublished/ModelRejected, or
 * outstandingTimeoutMs) and within the cooldown after the last one, except the catch-up and the
 * thin-label retry: they bypass the cooldown (each is bounded by itself: catch-up needs the data
 * to double again, the retry needs a label to fill). NEW_CLIENT and catch-up, the two that answer
 * a burst of data (an import, a backlog), also wait for a quiet moment: no example folded for
 * quietMs, or fewer than quietBurst in the last quietMs (decayed: live traffic, not a burst), or
 * quietMaxWaitMs since they were first held for it, so that one model is trained on (nearly) the
 * whole burst instead of a model on its first tenth, while a client whose history came before
 * its live traffic does not wait the whole quietMaxWaitMs for its first model. Quiet on processing time cannot
 * tell an idle client from a consumer that reads nothing for a while (a starved machine, a
 * rebalance), so such a request says `readBacklogFirst` and the processor checks the log too.
 */
export function decideRetrain(s: ClientTriggerState, now: number, t: ProcessorsConfig['trigger'], wallNow = now): Decision {
  const labels = Object.values(s.labelCounts).filter((n) => n > 0).length;
  if (labels < t.minLabels) return { kind: 'none' };
  const fresh = s.examples - s.baselineExamples;
  // What the live model (or the last request, if it was refused) already saw: catch-up is relative to it.
  const seen = Math.max(s.examplesAtLastModel, s.baselineExamples);
  let want: { reason: RetrainReason; detail: string; bypassCooldown?: boolean; quiet?: boolean } | undefined;
  const filled = s.thin ? Object.entries(s.labelCounts).filter(([l, n]) => (s.thin!.counts[l] ?? 0) < t.minExamplesPerLabel && n >= t.minExamplesPerLabel).map(([l]) => l) : [];
  if (s.qualityAlert) {
    want = { reason: 'QUALITY_DROP', detail: s.qualityAlert };
  } else if (s.incomplete) {
    want = { reason: s.incomplete, detail: `the last retrain (${s.incomplete}) read its data before ClickHouse held all of it; asking again` };
  } else if (s.thin && filled.length > 0) {
    want = { reason: s.thin.reason, detail: `the last retrain was refused for too few examples of a label; ${filled.slice(0, 5).join(', ')} now ha${filled.length === 1 ? 's' : 've'} ${t.minExamplesPerLabel}+`, bypassCooldown: true };
  } else if (s.lastModelVersion === null) {
    if (s.examples >= t.minExamples && (s.lastRequestAt === null || fresh > 0)) {
      want = { reason: 'NEW_CLIENT', detail: `${s.examples} examples over ${labels} labels and no model yet`, quiet: true };
    }
  } else if (t.catchUpGrowth > 0 && s.examples >= t.catchUpGrowth * Math.max(1, seen) && s.examples - seen >= t.minExamples) {
    want = {
      reason: 'NEW_DATA', bypassCooldown: true, quiet: true,
      detail: `catch-up: ${s.examples} examples, ${(s.examples / Math.max(1, seen)).toFixed(1)}x the ${seen} that model ${s.lastModelVersion} or the last request saw (threshold ${t.catchUpGrowth}x)`,
    };
  } else if (s.labelsChanged) {
    want = { reason: 'LABELS_CHANGED', detail: `label set changed since ${s.lastModelVersion}` };
  } else if (fresh >= t.newExamples) {
    want = { reason: 'NEW_DATA', detail: `${fresh} new examples since the last request (threshold ${t.newExamples}), model ${s.lastModelVersion}` };
  } else if (fresh >= t.minExamples && s.baselineExamples > 0 && fresh / s.baselineExamples >= t.growth) {
    want = { reason: 'NEW_DATA', detail: `examples grew ${Math.round((100 * fresh) / s.baselineExamples)}% since the last request (threshold ${Math.round(100 * t.growth)}%), model ${s.lastModelVersion}` };
  } else if (s.lastModelAt !== null && now - s.lastModelAt >= t.staleMs && fresh > 0) {
    want = { reason: 'STALE', detail: `model ${s.lastModelVersion} is ${Math.round((now - s.lastModelAt) / 3_600_000)} h old and ${fresh} new examples exist` };
  }
  if (!want) return { kind: 'none' };
  const { reason, detail } = want;
  if (s.outstanding && now - s.outstanding.at < t.outstandingTimeoutMs) return { kind: 'hold', reason, detail, blockedBy: 'OUTSTANDING' };
  if (!want.bypassCooldown && s.lastRequestAt !== null && now - s.lastRequestAt < t.cooldownMs) return { kind: 'hold', reason, detail, blockedBy: 'COOLDOWN' };
  if (want.quiet && t.quietMs > 0) {
    const busy = s.lastExampleSeenAt !== null && wallNow - s.lastExampleSeenAt < t.quietMs
      && (t.quietBurst <= 0 || recentArrivals(s, wallNow, t.quietMs) >= t.quietBurst);
    const waitedOut = s.waitingSince !== null && wallNow - s.waitingSince >= t.quietMaxWaitMs;
    if (busy && !waitedOut) return { kind: 'hold', reason, detail: `${detail}; waiting for the data to stop arriving`, blockedBy: 'QUIET' };
    if (!waitedOut) return { kind: 'request', reason, detail, readBacklogFirst: true };
  }
  return { kind: 'request', reason, detail };
}
