import type { RedisClient } from '../../common/redis.ts';
import { apiError, type Principal } from '../http/plumbing.ts';
import { compareVersions } from '../../common/ids.ts';
import { monitorKeys } from '../../common/keyspace.ts';
import { redisError, SlotPipelines } from '../../common/redis.ts';
import type { LifecycleEntry, ModelRegistry, VersionInfo } from '../../models/lifecycle.ts';
import { ALL_VERSIONS, biasOf, DAY_MS, dayOf, qualityOf, readDays, readSegmentQuality, readWindows, type Counters, type SegmentQuality } from '../../models/quality.ts';
import { reviewQueueSizes } from '../../models/review.ts';
import type { LagSample } from '../../streams/index.ts';

/**
 * What the dashboard shows, read from the monitor's Redis state (models/quality.ts, common/keyspace.ts) and
 * this server's model registry. Everything is a projection of the Kafka log: the page never
 * reads raw events.
 */

/**
 * A window's figures. A figure with nothing behind it is null, not 0: "no judgements" and "all
 * wrong" are different news (the page shows "—").
 */
export interface QualitySummary {
  precision: number | null;
  recall: number | null;
  f1: number | null;
  accuracy: number | null;
  support: number;
  bias: number | null;
}

export interface LabelRow {
  label: string;
  /** null: the label was never predicted in the window (nothing to be precise about). */
  precision: number | null;
  /** null: the label was never the right answer in the window. */
  recall: number | null;
  f1: number | null;
  support: number;
}

/** One point of a client's rolling-week quality (the overview's sparkline). */
export interface SparkPoint {
  t: number;
  f1: number | null;
  precision: number | null;
  recall: number | null;
  support: number;
}

export interface ClientRow {
  clientId: string;
  live: string | null;
  /** Where `live` comes from: this server's registry, or the monitor's view of the models topic. */
  liveSource: 'server' | 'monitor' | 'none';
  versions: number;
  lastRetrain: { at: number; reason: string; detail: string } | null;
  lastOutcome: { at: number; status: string; version: string; detail: string } | null;
  lastRollback: { at: number; detail: string } | null;
  quality: QualitySummary;
  openAlerts: string[];
  /** Segments now behind the client's overall accuracy (open SEGMENT_GAP episodes). */
  segmentGaps: Array<{ segment: string; gapPercent: number }>;
  /** Items waiting in the review queue. */
  reviewQueue: number;
  /** The last rolling-week points, oldest first (at most SPARK_POINTS). */
  trend: SparkPoint[];
  predictions: number;
  feedback: number;
  lastActivity: number;
}

export interface Overview {
  generatedAt: number;
  totalClients: number;
  clients: ClientRow[];
  recent: LifecycleEntry[];
  rates: Array<{ topic: string; perSecond: number | null; total: number }>;
  lag: Array<{ group: string; topic: string; lag: number }>;
  lagSampledAt: number | null;
}

/** One window of a client's quality trend: the summary's figures, when, and for which version. */
export interface TrendPoint extends QualitySummary {
  t: number;
  version: string | null;
}

export interface ClientDetail {
  clientId: string;
  live: string | null;
  versions: string[];
  quality: QualitySummary;
  labels: LabelRow[];
  /** Each version's quality over the last 14 days (the monitor's per-version buckets), newest first. */
  byVersion: Array<{ version: string; precision: number | null; recall: number | null; f1: number | null; accuracy: number | null; support: number }>;
  trend: TrendPoint[];
  daily: Array<{ day: string; precision: number | null; recall: number | null; f1: number | null; accuracy: number | null; support: number }>;
  /** The version timeline: published, promoted, rolled back, alerts (oldest first). */
  markers: Array<{ at: number; version: string | null; type: string; title: string }>;
  events: LifecycleEntry[];
  /** Each segment's 7-day quality, most behind the client's overall accuracy first. */
  segments: SegmentQuality[];
  segmentGaps: Array<{ segment: string; gapPercent: number }>;
  reviewQueue: number;
  /** The live version's model info from this server's registry (null when it does not know the client's live version). */
  model: LiveModelInfo | null;
}

/** What the model builder chose and measured for the live version (ModelPublished's fields). */
export interface LiveModelInfo {
  version: string;
  /** The configuration JSON as published ({kind, params, charNgrams}); '' from older trainers. */
  config: string;
  cvMacroF1: number | null;
  searched: boolean;
  backend: string | null;
  trainingExamples: number;
  /** Held-out macro-F1 (the same configuration fitted on the train split). */
  macroF1: number | null;
  eceBefore: number | null;
  eceAfter: number | null;
  unsureBelow: number | null;
}

const WEEK = 7;
/** Points of each client's sparkline in the overview (its last rolling-week snapshots). */
export const SPARK_POINTS = 30;

/** Figures of a window, null where nothing stands behind them. */
function figures(q: ReturnType<typeof qualityOf>, c: Counters): { precision: number | null; recall: number | null; f1: number | null; accuracy: number | null } {
  if (q.support === 0) return { precision: null, recall: null, f1: null, accuracy: null };
  const predicted = Object.keys(c).some((k) => k.startsWith('pred:') && c[k]! > 0);
  const observed = Object.keys(c).some((k) => (k.startsWith('tp:') || k.startsWith('fn:')) && c[k]! > 0);
  return { precision: predicted ? q.precision : null, recall: observed ? q.recall : null, f1: q.f1, accuracy: q.accuracy };
}

function labelRows(q: ReturnType<typeof qualityOf>, c: Counters): LabelRow[] {
  return q.labels.map((l) => {
    const tp = c[`tp:${l.label}`] ?? 0;
    const fp = c[`fp:${l.label}`] ?? 0;
    const fn = c[`fn:${l.label}`] ?? 0;
    const precision = tp + fp > 0 ? l.precision : null;
    const recall = tp + fn > 0 ? l.recall : null;
    return { label: l.label, precision, recall, f1: precision === null && recall === null ? null : l.f1, support: l.support };
  });
}

function openGaps(raw: string | undefined): Array<{ segment: string; gapPercent: number }> {
  if (!raw) return [];
  try {
    return Object.entries(JSON.parse(raw) as Record<string, { gapPercent: number }>).map(([segment, g]) => ({ segment, gapPercent: g.gapPercent }));
  } catch {
    return [];
  }
}

function sparkPoint(raw: string): SparkPoint {
  const p = JSON.parse(raw) as TrendPoint;
  const judged = p.support > 0;
  return { t: p.t, f1: judged ? p.f1 : null, precision: judged ? p.precision : null, recall: judged ? p.recall : null, support: p.support };
}

async function run<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw redisError(err, what);
  }
}

export class DashboardData {
  constructor(
    private readonly redis: RedisClient,
    private readonly prefix: string,
    private readonly registry?: ModelRegistry,
    private readonly lag?: () => LagSample | undefined,
  ) {}

  private summary(q: ReturnType<typeof qualityOf>, c: Counters): QualitySummary {
    const b = biasOf(c);
    return { ...figures(q, c), support: q.support, bias: b.support > 0 ? b.divergence : null };
  }

  private live(clientId: string, monitorLive: string | undefined): { live: string | null; source: ClientRow['liveSource'] } {
    const fromServer = this.registry?.get(clientId)?.live;
    if (fromServer) return { live: fromServer, source: 'server' };
    if (monitorLive) return { live: monitorLive, source: 'monitor' };
    return { live: null, source: 'none' };
  }

  /**
   * One page of clients. What a principal sees: the admin every client and the platform's
   * rates and lag; a client key its own client and its own events only (no other client's id,
   * no platform-wide figures).
   */
  async overview(opts: { limit: number; offset: number; search?: string }, principal: Principal = { kind: 'admin' }): Promise<Overview> {
    const p = this.prefix;
    const now = Date.now();
    let ids: string[];
    let total: number;
    const fromMonitor = await run('listing clients', () => this.redis.zrevrange(monitorKeys.clients(p), 0, -1, 'WITHSCORES'));
    const activity = new Map<string, number>();
    for (let i = 0; i < fromMonitor.length; i += 2) activity.set(fromMonitor[i]!, Number(fromMonitor[i + 1]));
    // Clients the server knows but the monitor has not seen yet (a model, no traffic) are listed too.
    for (const id of this.registry?.clientIds() ?? []) if (!activity.has(id)) activity.set(id, 0);
    ids = [...activity.keys()];
    if (principal.kind === 'client') ids = ids.filter((id) => id === principal.clientId);
    if (opts.search) ids = ids.filter((id) => id.toLowerCase().includes(opts.search!.toLowerCase()));
    total = ids.length;
    ids = ids.slice(opts.offset, opts.offset + opts.limit);
    const today = dayOf(now);
    // One pipeline on a single Redis; one per client on a cluster (the page lists many clients).
    const pipeline = new SlotPipelines(this.redis);
    for (const id of ids) pipeline.queue(monitorKeys.summary(p, id), (q) => q.hgetall(monitorKeys.summary(p, id)));
    for (const id of ids) pipeline.queue(monitorKeys.trend(p, id), (q) => q.zrange(monitorKeys.trend(p, id), -SPARK_POINTS, -1));
    const results = await pipeline.exec('reading client summaries');
    const summaries = results.slice(0, ids.length).map((v) => (v ?? {}) as Record<string, string>);
    const trends = results.slice(ids.length).map((v) => ((v ?? []) as string[]).map(sparkPoint));
    const queues = await run('reading review queue sizes', () => reviewQueueSizes(this.redis, p, ids));
    // Concurrent reads share the one connection: Redis sees them back to back, like a pipeline.
    const weeks = await run('reading quality', () => Promise.all(ids.map((id) => readWindows(this.redis, p, id, [{ version: ALL_VERSIONS, fromDay: today - WEEK + 1, toDay: today }]))));
    const clients: ClientRow[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      const s = summaries[i] ?? {};
      const week = weeks[i]![0]!;
      const q = qualityOf(week);
      const { live, source } = this.live(id, s.live);
      const openAlerts: string[] = [];
      if (s.drop) openAlerts.push('QUALITY_DROP');
      if (s.bias) openAlerts.push('PREDICTION_BIAS');
      const segmentGaps = openGaps(s.segaps);
      if (segmentGaps.length) openAlerts.push('SEGMENT_GAP');
      clients.push({
        clientId: id, live, liveSource: source,
        versions: this.registry?.get(id)?.versions.size ?? 0,
        lastRetrain: s.last_retrain_at ? { at: Number(s.last_retrain_at), reason: s.last_retrain_reason ?? '', detail: s.last_retrain_detail ?? '' } : null,
        lastOutcome: s.last_outcome_at ? { at: Number(s.last_outcome_at), status: s.last_outcome ?? '', version: s.last_outcome_version ?? '', detail: s.last_outcome_detail ?? '' } : null,
        lastRollback: s.last_rollback_at ? { at: Number(s.last_rollback_at), detail: s.last_rollback_detail ?? '' } : null,
        quality: this.summary(q, week),
        openAlerts,
        segmentGaps,
        reviewQueue: queues[i] ?? 0,
        trend: trends[i] ?? [],
        predictions: Number(s.predictions ?? 0),
        feedback: Number(s.feedback ?? 0),
        lastActivity: activity.get(id) ?? 0,
      });
    }
    const recentRaw = principal.kind === 'admin'
      ? await run('reading recent events', () => this.redis.lrange(monitorKeys.recent(p), 0, 49))
      : await run('reading recent events', () => this.redis.lrange(monitorKeys.events(p, principal.clientId), 0, 49));
    const sample = principal.kind === 'admin' ? this.lag?.() : undefined;
    return {
      generatedAt: now,
      totalClients: total,
      clients,
      // Listed in processing order; shown in event-time order (a replay or a late event lands in place).
      recent: recentRaw.map((r) => JSON.parse(r) as LifecycleEntry).sort((a, b) => b.at - a.at),
      rates: sample ? Object.entries(sample.ends).map(([topic, total]) => ({ topic, total: total ?? 0, perSecond: sample.rates[topic as keyof typeof sample.rates] ?? null })) : [],
      lag: sample ? Object.entries(sample.lag).flatMap(([group, topics]) => Object.entries(topics).map(([topic, lag]) => ({ group, topic, lag: lag ?? 0 }))) : [],
      lagSampledAt: sample?.at ?? null,
    };
  }

  async client(clientId: string): Promise<ClientDetail> {
    const p = this.prefix;
    const [s, trendRaw, eventsRaw, versions] = await run('reading a client', async () => Promise.all([
      this.redis.hgetall(monitorKeys.summary(p, clientId)),
      this.redis.zrange(monitorKeys.trend(p, clientId), 0, -1),
      this.redis.lrange(monitorKeys.events(p, clientId), 0, -1),
      this.redis.smembers(monitorKeys.versions(p, clientId)),
    ]));
    const known = this.registry?.get(clientId);
    if (Object.keys(s).length === 0 && !known) throw apiError('CLIENT_UNKNOWN', `the monitor has seen nothing of client '${clientId}'`);
    const trend = trendRaw.map((r) => JSON.parse(r) as TrendPoint);
    // "Today" is the latest judgement's day (event time), so replayed or simulated history shows too.
    const lastT = trend.at(-1)?.t ?? Date.now();
    const today = dayOf(lastT);
    const [[week], segmentQuality, [queue]] = await run('reading quality', () => Promise.all([
      readWindows(this.redis, p, clientId, [{ version: ALL_VERSIONS, fromDay: today - WEEK + 1, toDay: today }]),
      readSegmentQuality(this.redis, p, clientId, today),
      reviewQueueSizes(this.redis, p, [clientId]),
    ]));
    const q = qualityOf(week!);
    const days = await run('reading daily quality', () => readDays(this.redis, p, clientId, ALL_VERSIONS, today - 2 * WEEK + 1, today));
    const events = eventsRaw.map((r) => JSON.parse(r) as LifecycleEntry).sort((a, b) => b.at - a.at);
    // The 20 newest versions with judgements are enough for a page (and bound the reads).
    const judgedVersions = versions.filter((v) => v !== ALL_VERSIONS).sort(compareVersions).reverse().slice(0, 20);
    const perVersion = await run('reading per-version quality', () =>
      readWindows(this.redis, p, clientId, judgedVersions.map((version) => ({ version, fromDay: today - 2 * WEEK + 1, toDay: today }))));
    const markerTypes = new Set(['ModelPublished', 'ModelRolledBack', 'ModelPromoted', 'QualityAlert']);
    return {
      clientId,
      live: this.live(clientId, s.live).live,
      versions: [...new Set([...(known ? [...known.versions.keys()] : []), ...versions.filter((v) => v !== ALL_VERSIONS)])],
      quality: this.summary(q, week!),
      labels: labelRows(q, week!),
      byVersion: judgedVersions.map((version, i) => {
        const vq = qualityOf(perVersion[i]!);
        return { version, ...figures(vq, perVersion[i]!), support: vq.support };
      }).filter((v) => v.support > 0),
      trend,
      daily: days.filter((d) => (d.counters.n ?? 0) > 0).map((d) => {
        const dq = qualityOf(d.counters);
        return { day: new Date(d.day * DAY_MS).toISOString().slice(0, 10), ...figures(dq, d.counters), support: dq.support };
      }),
      markers: events.filter((e) => markerTypes.has(e.type)).map((e) => ({ at: e.at, version: e.version, type: e.type, title: e.title })).reverse(),
      events,
      segments: segmentQuality.segments,
      segmentGaps: openGaps(s.segaps),
      reviewQueue: queue ?? 0,
      model: liveModelInfo(known?.live !== undefined ? known.versions.get(known.live) : undefined),
    };
  }
}

function liveModelInfo(v: VersionInfo | undefined): LiveModelInfo | null {
  if (!v) return null;
  const m = v.metrics;
  return {
    version: v.version, config: v.modelConfig ?? '', cvMacroF1: v.cvMacroF1 ?? null, searched: v.searched ?? false, backend: v.backend ?? null,
    trainingExamples: v.trainingExamples, macroF1: m.macroF1 ?? null, eceBefore: m.eceBefore ?? null, eceAfter: m.eceAfter ?? null, unsureBelow: m.unsureBelow ?? null,
  };
}
