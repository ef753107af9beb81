import type { RedisClient } from '../common/redis.ts';
import { monitorKeys } from '../common/keyspace.ts';
import { execPipeline } from '../common/redis.ts';

/**
 * Quality arithmetic, pure (no I/O): judged-prediction counters -> precision, recall, F1 per
 * label and macro-averaged; distribution divergence for prediction bias; the drop rule.
 *
 * Counters of one window (a sum of daily buckets) are a flat record, as stored in Redis:
 *   n            judged predictions (feedback joined with its prediction)
 *   correct      ACCEPTED, or REASSIGNED to the predicted label
 *   rejected     REJECTED (wrong, correct label unknown)
 *   tp:<L>       predicted L and L was right
 *   fp:<L>       predicted L and it was wrong (reassigned elsewhere or rejected)
 *   fpk:<L>      the part of fp:<L> whose right label is known (reassigned)
 *   fn:<L>       L was right but something else was predicted
 *   pred:<L>     predictions of L that were judged
 *   obs:<L>      judged predictions whose right label is known to be L
 */
export type Counters = Record<string, number>;

export interface LabelQuality {
  label: string;
  precision: number;
  recall: number;
  f1: number;
  /** tp + fp + fn: judgements that say something about this label. */
  support: number;
}

export interface Quality {
  /** Judged predictions in the window. */
  support: number;
  /** correct / n (micro-averaged precision; the share of predictions users kept). */
  accuracy: number;
  /** Macro averages over labels with support. */
  precision: number;
  recall: number;
  f1: number;
  labels: LabelQuality[];
}

export const QUALITY_METRICS = ['precision', 'recall', 'f1'] as const;
export type QualityMetric = (typeof QUALITY_METRICS)[number];

export function addCounters(into: Counters, from: Counters): Counters {
  for (const k in from) into[k] = (into[k] ?? 0) + from[k]!;
  return into;
}

const ratio = (a: number, b: number) => (b > 0 ? a / b : 0);

export function qualityOf(c: Counters): Quality {
  const labels = new Set<string>();
  for (const k of Object.keys(c)) {
    const m = /^(tp|fp|fn):(.*)$/.exec(k);
    if (m) labels.add(m[2]!);
  }
  const perLabel: LabelQuality[] = [...labels].sort().map((label) => {
    const tp = c[`tp:${label}`] ?? 0;
    const fp = c[`fp:${label}`] ?? 0;
    const fn = c[`fn:${label}`] ?? 0;
    const precision = ratio(tp, tp + fp);
    const recall = ratio(tp, tp + fn);
    return { label, precision, recall, f1: ratio(2 * precision * recall, precision + recall), support: tp + fp + fn };
  });
  const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
  // A label that was only ever rejected has no observed positives: its recall is undefined, not 0.
  const withRecall = perLabel.filter((l) => (c[`tp:${l.label}`] ?? 0) + (c[`fn:${l.label}`] ?? 0) > 0);
  const withPrecision = perLabel.filter((l) => (c[`pred:${l.label}`] ?? 0) > 0);
  return {
    support: c.n ?? 0,
    accuracy: ratio(c.correct ?? 0, c.n ?? 0),
    precision: mean(withPrecision.map((l) => l.precision)),
    recall: mean(withRecall.map((l) => l.recall)),
    f1: mean(perLabel.map((l) => l.f1)),
    labels: perLabel,
  };
}

/** A metric that fell: what QualityAlert reports. */
export interface Drop {
  metric: QualityMetric;
  /** null: the client's macro average. */
  label: string | null;
  current: number;
  previous: number;
  dropPercent: number;
  support: number;
}

/**
 * Every metric (macro P/R/F1, and P/R/F1 of each label) that fell more than `dropPct` percent below
 * its previous-week value, where both weeks have at least `minSupport` judgements behind it.
 * Sorted worst first. Relative drop: (previous - current) / previous.
 */
export function findDrops(current: Quality, previous: Quality, opts: { dropPct: number; minSupport: number }): Drop[] {
  const drops: Drop[] = [];
  const consider = (metric: QualityMetric, label: string | null, cur: number, prev: number, curSupport: number, prevSupport: number) => {
    if (curSupport < opts.minSupport || prevSupport < opts.minSupport || prev <= 0) return;
    const dropPercent = (100 * (prev - cur)) / prev;
    if (dropPercent > opts.dropPct) drops.push({ metric, label, current: cur, previous: prev, dropPercent, support: curSupport });
  };
  for (const m of QUALITY_METRICS) consider(m, null, current[m], previous[m], current.support, previous.support);
  const before = new Map(previous.labels.map((l) => [l.label, l]));
  for (const l of current.labels) {
    const p = before.get(l.label);
    if (!p) continue;
    for (const m of QUALITY_METRICS) consider(m, l.label, l[m], p[m], l.support, p.support);
  }
  // Worst first; the macro figure wins a tie because it speaks for the whole client.
  // (Differences below 1e-9 are float noise: a macro mean of equal values is not always bit-equal to them.)
  return drops.sort((a, b) => {
    const d = b.dropPercent - a.dropPercent;
    if (Math.abs(d) > 1e-9) return d;
    return a.label === null && b.label !== null ? -1 : b.label === null && a.label !== null ? 1 : 0;
  });
}

/** Normalised distribution of the `<prefix>:<label>` counters (labels of both sides included). */
export function distribution(c: Counters, prefix: 'pred' | 'obs', labels: readonly string[]): number[] {
  const counts = labels.map((l) => c[`${prefix}:${l}`] ?? 0);
  const total = counts.reduce((a, b) => a + b, 0);
  return counts.map((x) => (total > 0 ? x / total : 0));
}

/**
 * Jensen-Shannon divergence in bits (0 = same distribution, 1 = disjoint). Chosen over KL because
 * it is symmetric and finite when one side has a zero (a label never predicted), and over total
 * variation because it weighs a label squeezed to nothing more than a small shift spread wide.
 */
export function jensenShannon(p: readonly number[], q: readonly number[]): number {
  let js = 0;
  for (let i = 0; i < p.length; i++) {
    const a = p[i]!;
    const b = q[i] ?? 0;
    const m = (a + b) / 2;
    if (a > 0) js += 0.5 * a * Math.log2(a / m);
    if (b > 0) js += 0.5 * b * Math.log2(b / m);
  }
  return Math.max(0, Math.min(1, js));
}

export interface Bias {
  divergence: number;
  /** Judgements with a known right label behind the observed distribution. */
  support: number;
  /** The label predicted most above its observed share (what the model leans towards). */
  overPredicted: string | null;
  predicted: Record<string, number>;
  observed: Record<string, number>;
}

/** Predicted-label distribution against observed-label distribution over the same judged predictions. */
export function biasOf(c: Counters): Bias {
  const labels = [...new Set(Object.keys(c).filter((k) => k.startsWith('pred:') || k.startsWith('obs:')).map((k) => k.slice(k.indexOf(':') + 1)))].sort();
  // Only judgements with a known right label (not REJECTED) compare like with like.
  const known: Counters = {};
  for (const l of labels) {
    known[`obs:${l}`] = c[`obs:${l}`] ?? 0;
    known[`pred:${l}`] = (c[`tp:${l}`] ?? 0) + (c[`fpk:${l}`] ?? 0);
  }
  const p = distribution(known, 'pred', labels);
  const q = distribution(known, 'obs', labels);
  let overPredicted: string | null = null;
  let most = 0;
  labels.forEach((l, i) => {
    if (p[i]! - q[i]! > most) {
      most = p[i]! - q[i]!;
      overPredicted = l;
    }
  });
  return {
    divergence: jensenShannon(p, q),
    support: labels.reduce((a, l) => a + (c[`obs:${l}`] ?? 0), 0),
    overPredicted,
    predicted: Object.fromEntries(labels.map((l, i) => [l, p[i]!])),
    observed: Object.fromEntries(labels.map((l, i) => [l, q[i]!])),
  };
}

/*
 * The monitor's quality state as its readers see it (the dashboard, `eddy quality`): day buckets
 * of judged counters per client and version (written by processors/monitor/), summed over windows.
 */
export const DAY_MS = 86_400_000;
/** The bucket version that sums every version. */
export const ALL_VERSIONS = '*';
/** The bucket version of predictions answered without a model. */
export const BASELINE_VERSION = 'baseline';
/** Lifecycle events kept per client, and across clients, for the dashboard. */
export const EVENTS_PER_CLIENT = 100;
export const RECENT_EVENTS = 300;
/** Rolling-week quality snapshots kept per client (one per minute at most). */
export const TREND_POINTS = 2000;

export const dayOf = (ms: number) => Math.floor(ms / DAY_MS);

/** Summed counters of `version` over days [fromDay, toDay] (inclusive), one pipeline per call. */
export async function readWindows(
  redis: RedisClient, prefix: string, clientId: string,
  windows: Array<{ version: string; fromDay: number; toDay: number }>,
): Promise<Counters[]> {
  const pipeline = redis.pipeline();
  const spans: number[] = [];
  for (const w of windows) {
    const days = Math.max(0, w.toDay - w.fromDay + 1);
    spans.push(days);
    for (let d = w.fromDay; d <= w.toDay; d++) pipeline.hgetall(monitorKeys.bucket(prefix, clientId, w.version, d));
  }
  const results = (await execPipeline(pipeline, 'reading quality windows')) as Array<Record<string, string>>;
  let i = 0;
  return spans.map((days) => {
    const sum: Counters = {};
    for (let d = 0; d < days; d++) {
      const raw = results[i++] ?? {};
      const c: Counters = {};
      for (const k in raw) c[k] = Number(raw[k]);
      addCounters(sum, c);
    }
    return sum;
  });
}

/** Per-day counters of one version over [fromDay, toDay]: the dashboard's daily series. */
export async function readDays(redis: RedisClient, prefix: string, clientId: string, version: string, fromDay: number, toDay: number): Promise<Array<{ day: number; counters: Counters }>> {
  const windows = [];
  for (let d = fromDay; d <= toDay; d++) windows.push({ version, fromDay: d, toDay: d });
  const sums = await readWindows(redis, prefix, clientId, windows);
  return sums.map((counters, i) => ({ day: fromDay + i, counters }));
}

/*
 * Per-segment quality: the same counters, per segment of a client's requests. A segment is
 * `field=value` for each configured metadata field (EDDY_MONITOR_SEGMENT_FIELDS, e.g.
 * `channel=email`, `department=hr`) and `length=<range>` for the text's length in characters
 * (EDDY_MONITOR_LENGTH_BUCKETS, e.g. `length=0-39`, `length=40-159`, `length=160+`). The monitor
 * records a prediction's segments with it and counts each judgement into them (one hash per
 * client and day, fields `<segment>\x1f<counter>`).
 */
export const SEGMENT_SEPARATOR = '\x1f';
/** Longest metadata value kept in a segment name (longer ones are cut). */
const SEGMENT_VALUE_CHARS = 80;

export interface SegmentRules {
  fields: readonly string[];
  /** Ascending character counts splitting texts into length segments. */
  lengthBuckets: readonly number[];
}

/** The length segment of a text: `0-39`, `40-159`, `160+` for bounds [40, 160]. */
export function lengthSegment(chars: number, bounds: readonly number[]): string {
  let lo = 0;
  for (const b of bounds) {
    if (chars < b) return `length=${lo}-${b - 1}`;
    lo = b;
  }
  return `length=${lo}+`;
}

/** The segments a request belongs to (values lower-cased and trimmed: `Email` and `email ` are one segment). */
export function segmentsOf(text: string, metadata: Record<string, string>, rules: SegmentRules): string[] {
  const out: string[] = [];
  for (const field of rules.fields) {
    const raw = metadata[field];
    if (raw === undefined) continue;
    // eslint-disable-next-line no-control-regex
    const value = raw.trim().toLowerCase().replace(/[\x00-\x1f]/g, ' ').slice(0, SEGMENT_VALUE_CHARS);
    if (value) out.push(`${field}=${value}`);
  }
  if (rules.lengthBuckets.length > 0) out.push(lengthSegment(text.length, rules.lengthBuckets));
  return out;
}

/** Splits a day's segment hash into counters per segment. */
export function splitSegments(hash: Record<string, string>): Map<string, Counters> {
  const out = new Map<string, Counters>();
  for (const k in hash) {
    const at = k.indexOf(SEGMENT_SEPARATOR);
    if (at < 0) continue;
    const segment = k.slice(0, at);
    let c = out.get(segment);
    if (!c) out.set(segment, (c = {}));
    c[k.slice(at + 1)] = Number(hash[k]);
  }
  return out;
}

/** Summed segment counters over days [fromDay, toDay] (inclusive). */
export async function readSegmentWindow(redis: RedisClient, prefix: string, clientId: string, fromDay: number, toDay: number): Promise<Map<string, Counters>> {
  const pipeline = redis.pipeline();
  for (let d = fromDay; d <= toDay; d++) pipeline.hgetall(monitorKeys.segments(prefix, clientId, d));
  const days = (await execPipeline(pipeline, 'reading segment quality')) as Array<Record<string, string>>;
  const sum = new Map<string, Counters>();
  for (const day of days) {
    for (const [segment, c] of splitSegments(day ?? {})) addCounters(sum.get(segment) ?? sum.set(segment, {}).get(segment)!, c);
  }
  return sum;
}

export interface SegmentQuality {
  segment: string;
  /** The metadata field, or `length`. */
  field: string;
  value: string;
  precision: number;
  recall: number;
  f1: number;
  accuracy: number;
  support: number;
  /** How far (percent) its accuracy is below the client's overall accuracy of the same week (negative: above). */
  gapPercent: number;
  /** Last week's accuracy and support, and the week-over-week drop (percent; null without last week's judgements). */
  previousAccuracy: number | null;
  previousSupport: number;
  dropPercent: number | null;
}

/** Relative gap (percent) of a segment's accuracy below the overall one; 0 when there is no overall figure. */
export function gapPercent(segmentAccuracy: number, overallAccuracy: number): number {
  return overallAccuracy > 0 ? (100 * (overallAccuracy - segmentAccuracy)) / overallAccuracy : 0;
}

/** Each segment's quality this week (and last), against the client's overall accuracy; most behind first. */
export function segmentQualities(current: Map<string, Counters>, previous: Map<string, Counters>, overallAccuracy: number): SegmentQuality[] {
  const out: SegmentQuality[] = [];
  for (const [segment, c] of current) {
    const q = qualityOf(c);
    if (q.support === 0) continue;
    const prev = previous.get(segment);
    const pq = prev ? qualityOf(prev) : undefined;
    const eq = segment.indexOf('=');
    out.push({
      segment, field: segment.slice(0, eq), value: segment.slice(eq + 1),
      precision: q.precision, recall: q.recall, f1: q.f1, accuracy: q.accuracy, support: q.support,
      gapPercent: gapPercent(q.accuracy, overallAccuracy),
      previousAccuracy: pq && pq.support > 0 ? pq.accuracy : null,
      previousSupport: pq?.support ?? 0,
      dropPercent: pq && pq.support > 0 && pq.accuracy > 0 ? (100 * (pq.accuracy - q.accuracy)) / pq.accuracy : null,
    });
  }
  return out.sort((a, b) => b.gapPercent - a.gapPercent || (a.segment < b.segment ? -1 : 1));
}

/** A client's segments over the week ending on `today` (epoch day), with last week's for the drop. */
export async function readSegmentQuality(redis: RedisClient, prefix: string, clientId: string, today: number): Promise<{ overall: Quality; segments: SegmentQuality[] }> {
  const [thisWeek, lastWeek, [overall]] = await Promise.all([
    readSegmentWindow(redis, prefix, clientId, today - 6, today),
    readSegmentWindow(redis, prefix, clientId, today - 13, today - 7),
    readWindows(redis, prefix, clientId, [{ version: ALL_VERSIONS, fromDay: today - 6, toDay: today }]),
  ]);
  const q = qualityOf(overall!);
  return { overall: q, segments: segmentQualities(thisWeek, lastWeek, q.accuracy) };
}
