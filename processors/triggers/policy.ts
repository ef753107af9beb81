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
}

export function emptyTriggerState(): ClientTriggerState {
  return {
    examples: 0, labelCounts: {}, baselineExamples: 0, examplesAtLastModel: 0, lastModelVersion: null, lastModelAt: null,
    lastRequestAt: null, outstanding: null, incomplete: null, labelsChanged: false, qualityAlert: null, offsets: {},
    lastExampleEventId: null, lastLabelChangeEventId: null,
  };
}

export type Decision =
  | { kind: 'request'; reason: RetrainReason; detail: string }
  | { kind: 'hold'; reason: RetrainReason; detail: string; blockedBy: 'OUTSTANDING' | 'COOLDOWN' }
  | { kind: 'none' };

/**
 * The retrain policy, pure: given a client's state at event time `now`, should a retrain be
 * requested, and why. Rules in priority order: QUALITY_DROP (an alert arrived), the answer to our
 * last request missed data (its reason again), NEW_CLIENT (no
 * model yet, enough examples over at least minLabels labels), LABELS_CHANGED, NEW_DATA (count
 * or growth since the last request), STALE (model older than staleMs and any new example).
 * Every rule needs at least minLabels labels with examples. A request is held back while another
 * is outstanding (until its ModelPublished/ModelRejected, or outstandingTimeoutMs) or within the
 * cooldown after the last one.
 */
export function decideRetrain(s: ClientTriggerState, now: number, t: ProcessorsConfig['trigger']): Decision {
  const labels = Object.values(s.labelCounts).filter((n) => n > 0).length;
  if (labels < t.minLabels) return { kind: 'none' };
  const fresh = s.examples - s.baselineExamples;
  let want: { reason: RetrainReason; detail: string } | undefined;
  if (s.qualityAlert) {
    want = { reason: 'QUALITY_DROP', detail: s.qualityAlert };
  } else if (s.incomplete) {
    want = { reason: s.incomplete, detail: `the last retrain (${s.incomplete}) read its data before ClickHouse held all of it; asking again` };
  } else if (s.lastModelVersion === null) {
    if (s.examples >= t.minExamples && (s.lastRequestAt === null || fresh > 0)) {
      want = { reason: 'NEW_CLIENT', detail: `${s.examples} examples over ${labels} labels and no model yet` };
    }
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
  if (s.outstanding && now - s.outstanding.at < t.outstandingTimeoutMs) return { kind: 'hold', ...want, blockedBy: 'OUTSTANDING' };
  if (s.lastRequestAt !== null && now - s.lastRequestAt < t.cooldownMs) return { kind: 'hold', ...want, blockedBy: 'COOLDOWN' };
  return { kind: 'request', ...want };
}
