import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from '../../common/redis.ts';
import type { EddyConfig, MonitorConfig } from '../../common/config.ts';
import { EddyError } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import type { AnyEvent } from '../../streams/codec.ts';
import type { BatchContext, EventHandler, EventRecord, ProcessorContext } from '../../streams/consumer.ts';
import type { TopicName } from '../../streams/topics.ts';
import type { ModelRolledBack, QualityAlert } from '../../schemas/events.ts';
import { derivedId as deriveFrom, versionNumber } from '../../common/ids.ts';
import { monitorKeys, predictionKey } from '../../common/keyspace.ts';
import { execPipeline, redisError, SlotPipelines } from '../../common/redis.ts';
import {
  applyModelEvent, clientModelsFromJson, clientModelsToJson, isLifecycleEvent, type LifecycleChange, type LifecycleEntry,
} from '../../models/lifecycle.ts';
import {
  addCounters, ALL_VERSIONS, BASELINE_VERSION, biasOf, DAY_MS, dayOf, EVENTS_PER_CLIENT, findDrops, gapPercent, qualityOf, readWindows,
  RECENT_EVENTS, segmentsOf, splitSegments, TREND_POINTS, type Counters, type Drop, type SegmentRules,
} from '../../models/quality.ts';
import { monitorMetrics } from './metrics.ts';
import { withMonitorScripts, type MonitorRedis } from './store.ts';

export const MONITOR_TOPICS: readonly TopicName[] = ['predictions', 'feedback', 'models', 'retrain-requests', 'alerts'];

/** The monitor's settings: its part of EDDY_MONITOR_* (docs/monitoring.md) plus where it keeps state and how long a prediction waits. */
export type MonitorOptions = Pick<MonitorConfig, 'dropPct' | 'minSupport' | 'biasThreshold' | 'autoRollback' | 'rollbackDropPct' | 'rollbackMinSupport'
  | 'segmentFields' | 'lengthBuckets' | 'segmentGapPct' | 'segmentMinSupport'> & {
  keyPrefix: string;
  /** How long predictions wait for feedback (and feedback for its prediction). */
  predictionTtlMs: number;
};

export function monitorOptions(config: EddyConfig): MonitorOptions {
  const { dropPct, minSupport, biasThreshold, autoRollback, rollbackDropPct, rollbackMinSupport, segmentFields, lengthBuckets, segmentGapPct, segmentMinSupport } = config.monitor;
  return {
    dropPct, minSupport, biasThreshold, autoRollback, rollbackDropPct, rollbackMinSupport, segmentFields, lengthBuckets, segmentGapPct, segmentMinSupport,
    keyPrefix: config.redisPrefix, predictionTtlMs: config.processors.predictionTtlMs,
  };
}

const WEEK_DAYS = 7;
/** Bounds the work one call can cause per client (each evaluation reads ~14 day buckets). */
const MAX_EVALUATIONS_PER_CALL = 31;
const EVALUATION_CONCURRENCY = 16;
const BUCKET_TTL_MS = 35 * DAY_MS;

/** UUID-shaped id derived from what caused an event: a redelivery re-sends the same id, consumers dedupe. */
export function derivedId(...parts: string[]): string {
  return deriveFrom(`eddy:monitor:${parts.join('\u0000')}`);
}

const pct = (x: number) => `${x.toFixed(1)}%`;
const f3 = (x: number) => x.toFixed(3);

/**
 * The quality monitor: joins predictions with their feedback in Redis (in either arrival order),
 * counts each judgement once into daily buckets per client and model version, and after every
 * call evaluates the clients that got new judgements, in event time:
 * - QUALITY_DROP: the worst metric (macro or per-label precision/recall/F1) of the last 7 days
 *   that fell more than dropPct below the 7 days before, both with minSupport judgements. One
 *   alert per episode: the episode stays open (no new alert) until no metric is down by more than
 *   half the threshold. The trigger processor turns the alert into a retrain request.
 * - PREDICTION_BIAS: predicted vs observed label distribution over 7 days beyond biasThreshold
 *   (closes below 80% of it).
 * - MODEL_REGRESSION + ModelRolledBack: a freshly published live version whose accuracy on live
 *   feedback is rollbackDropPct below its predecessor's, judged once when both have
 *   rollbackMinSupport judgements.
 * It also follows the lifecycle (models, retrain-requests, alerts) for the dashboard and metrics.
 */
export class MonitorProcessor implements EventHandler {
  private readonly redis: MonitorRedis;
  private logger: Logger | undefined;

  private emit: ProcessorContext['emit'] = async () => {
    throw new EddyError('NOT_INITIALISED', 'the monitor emits only after init()');
  };

  private readonly segmentRules: SegmentRules;
  /**
   * The evaluation of each client in progress: the calls of several partitions run at once (its
   * predictions, its feedback, its lifecycle events are on different topics), and two evaluations
   * of one client at once would both take a decision that is to be taken once (a rollback, an
   * alert episode). One member owns a client's partitions of every topic (co-partitioned), so
   * one at a time in this process is one at a time.
   */
  private readonly evaluating = new Map<string, Promise<void>>();

  constructor(redis: RedisClient, private readonly opts: MonitorOptions) {
    this.redis = withMonitorScripts(redis);
    this.segmentRules = { fields: opts.segmentFields, lengthBuckets: opts.lengthBuckets };
  }

  async init(ctx: ProcessorContext): Promise<void> {
    this.logger = ctx.logger.child({ processor: 'monitor' });
    this.emit = ctx.emit;
  }

  async handle(records: EventRecord[], ctx: BatchContext): Promise<void> {
    const logger = this.logger ?? ctx.logger;
    const p = this.opts.keyPrefix;
    /** client -> day -> the latest judgement of that day in this call (time, the event that made it) */
    const judged = new Map<string, Map<number, { at: number; eventId: string }>>();
    const touched = new Map<string, number>();
    // One pipeline on a single Redis; one per client on a cluster (a call spans many clients).
    let pipeline = new SlotPipelines<MonitorPipeline>(this.redis);
    /** Keeps the latest evaluation point of the client's day. */
    const evaluateAt = (clientId: string, at: number, eventId: string) => {
      let days = judged.get(clientId);
      if (!days) judged.set(clientId, (days = new Map()));
      const prev = days.get(dayOf(at));
      if (!prev || at >= prev.at) days.set(dayOf(at), { at, eventId });
    };
    let pending: Array<{ clientId: string; at: number; eventId: string; kind: 'prediction' | 'feedback' }> = [];
    const flush = async () => {
      if (pending.length === 0) return;
      const results = await pipeline.exec('applying predictions and feedback');
      pending.forEach((x, i) => {
        const r = Number(results[i]);
        if (r === 2) {
          monitorMetrics.judged().inc();
          evaluateAt(x.clientId, x.at, x.eventId);
        } else if (r === 1 && x.kind === 'feedback') monitorMetrics.waiting().inc();
        else if (r === 3) monitorMetrics.rejudged().inc();
      });
      pipeline = new SlotPipelines<MonitorPipeline>(this.redis);
      pending = [];
    };
    for (const r of records) {
      const ev = r.event;
      const clientId = (ev.value as { clientId: string }).clientId;
      touched.set(clientId, Math.max(touched.get(clientId) ?? 0, (ev.value as { occurredAt: number }).occurredAt));
      if (ev.name === 'PredictionMade') {
        const e = ev.value;
        // A shadow answer was never shown to the user: the feedback is about the one that was.
        if (e.variant === 'SHADOW') continue;
        const seenKey = monitorKeys.seen(p, clientId);
        pipeline.queue(seenKey, (q) => q.eddyMonitorPrediction(
          seenKey, predictionKey(p, clientId, e.requestId), monitorKeys.waiting(p, clientId, e.requestId),
          monitorKeys.base(p, clientId), e.eventId, e.occurredAt, e.label, e.modelVersion ?? BASELINE_VERSION, this.opts.predictionTtlMs, BUCKET_TTL_MS,
          JSON.stringify(segmentsOf(e.text, e.metadata, this.segmentRules)),
        ));
        pending.push({ clientId, at: e.occurredAt, eventId: e.eventId, kind: 'prediction' });
      } else if (ev.name === 'PredictionFeedback') {
        const e = ev.value;
        // REASSIGNED without the right label says only "wrong": count it as a rejection.
        const outcome = e.outcome === 'REASSIGNED' && !e.correctLabel ? 'REJECTED' : e.outcome;
        const seenKey = monitorKeys.seen(p, clientId);
        pipeline.queue(seenKey, (q) => q.eddyMonitorFeedback(
          seenKey, predictionKey(p, clientId, e.requestId), monitorKeys.waiting(p, clientId, e.requestId),
          monitorKeys.base(p, clientId), e.eventId, e.occurredAt, outcome, e.correctLabel ?? '', this.opts.predictionTtlMs, BUCKET_TTL_MS,
        ));
        pending.push({ clientId, at: e.occurredAt, eventId: e.eventId, kind: 'feedback' });
      } else {
        await flush();
        // A version that became live is judged against its predecessor at each evaluation of its
        // client. Its feedback may have been handled before this event (another topic, another
        // call), and nothing would evaluate the client until the next judgement: evaluate now too.
        if (await this.applyLifecycle(ev, logger)) {
          const v = ev.value as { occurredAt: number; eventId: string };
          evaluateAt(clientId, v.occurredAt, v.eventId);
        }
      }
    }
    await flush();
    // The active-clients index is one key without a hash tag (a slot of its own): this pipeline
    // and the lifecycle list below touch that one key only, so they are fine on a cluster.
    const seen = this.redis.pipeline();
    for (const [c, at] of touched) seen.zadd(monitorKeys.clients(p), 'GT', at, c);
    if (touched.size > 0) await execPipeline(seen, 'recording active clients').catch(async () => {
      // ZADD GT needs Redis >= 6.2; older servers get the plain form (last writer wins).
      const plain = this.redis.pipeline();
      for (const [c, at] of touched) plain.zadd(monitorKeys.clients(p), at, c);
      await execPipeline(plain, 'recording active clients');
    });
    // One evaluation per client and event-time day touched (the latest judgement of each day), in
    // order: replaying a week of history yields the same daily trend and alerts as living it.
    // Clients are independent: a few at a time keeps Redis round trips overlapping.
    const work = [...judged].map(([clientId, days]) => () =>
      this.evaluateInTurn(clientId, [...days.values()].sort((a, b) => a.at - b.at).slice(-MAX_EVALUATIONS_PER_CALL), logger));
    for (let i = 0; i < work.length; i += EVALUATION_CONCURRENCY) await Promise.all(work.slice(i, i + EVALUATION_CONCURRENCY).map((f) => f()));
  }

  /**
   * Lifecycle events: summary fields, history lists, metrics. Applied once per eventId. True when
   * the event put a fresh version under live evaluation (auto-rollback on) of a client with
   * judgements.
   */
  private async applyLifecycle(ev: AnyEvent, logger: Logger): Promise<boolean> {
    const p = this.opts.keyPrefix;
    const v = ev.value as { clientId: string; eventId: string; occurredAt: number };
    const clientId = v.clientId;
    const fields: Record<string, string | number> = {};
    let title = '';
    let version: string | null = null;
    const m = monitorMetrics;
    const after: Array<() => void> = [];
    const summary = await this.redis.hmget(monitorKeys.summary(p, clientId), 'lifecycle', 'last_retrain_id', 'last_retrain_at', 'last_retrain_reason', 'judged')
      .catch((err: unknown) => { throw wrap(err, 'reading monitor summary'); });
    // Which version is live comes from the one lifecycle fold (models/lifecycle.ts), applied to
    // this client's state kept in the summary: the same decision the servers and trainers reach.
    let change: LifecycleChange | undefined;
    if (isLifecycleEvent(ev)) {
      const state = clientModelsFromJson(clientId, summary[0]);
      const liveBefore = state.live;
      change = applyModelEvent(state, ev);
      fields.lifecycle = clientModelsToJson(state);
      fields.pinned = state.pinned ? '1' : '0';
      if (change.kind === 'ignored') logger.warn({ clientId, reason: change.reason }, 'model event ignored');
      if (state.live !== undefined && state.live !== liveBefore) {
        Object.assign(fields, { live: state.live, live_since: v.occurredAt });
        const live = state.live;
        after.push(() => { const n = versionNumber(live); if (n !== undefined) m.liveVersion().set({ client_id: clientId }, n); });
      }
      if (change.kind === 'published' && change.becameLive) {
        // A fresh version goes under live evaluation against the one it replaced (auto-rollback).
        Object.assign(fields, { fresh: change.version, fresh_prev: change.from ?? '', fresh_since: v.occurredAt });
      } else if (change.kind === 'live') {
        // An operator (or a rollback) decided: the monitor no longer second-guesses it automatically.
        fields.fresh = '';
      }
    }
    const ignored = change?.kind === 'ignored' ? ` (ignored: ${change.reason})` : '';
    switch (ev.name) {
      case 'ModelPublished': {
        const e = ev.value;
        version = e.modelVersion;
        const macro = e.metrics.macroF1 ?? e.metrics.f1;
        title = `${e.modelVersion} published${macro !== undefined ? ` (test macro-F1 ${f3(macro)})` : ''}, ${e.trainingExamples} examples, trained in ${(e.trainingMs / 1000).toFixed(1)} s`;
        Object.assign(fields, {
          last_outcome: 'PUBLISHED', last_outcome_at: e.occurredAt, last_outcome_version: e.modelVersion, last_outcome_detail: title,
          latest_version: e.modelVersion,
        });
        const reason = summary[1] && summary[1] === e.retrainEventId ? summary[3] ?? 'unknown' : 'unknown';
        after.push(() => {
          m.retrains().inc({ outcome: 'published', reason });
          m.retrainSeconds().observe({ outcome: 'published' }, e.trainingMs / 1000);
        });
        break;
      }
      case 'ModelRejected': {
        const e = ev.value;
        version = e.candidateVersion;
        title = `${e.candidateVersion ?? 'candidate'} rejected at ${e.stage}: ${e.reasons.join(', ')}${e.detail ? ` (${e.detail})` : ''}`;
        Object.assign(fields, { last_outcome: 'REJECTED', last_outcome_at: e.occurredAt, last_outcome_version: e.candidateVersion ?? '', last_outcome_detail: title });
        const matches = summary[1] && summary[1] === e.retrainEventId;
        const reason = matches ? summary[3] ?? 'unknown' : 'unknown';
        after.push(() => {
          m.retrains().inc({ outcome: 'rejected', reason });
          if (matches && summary[2]) m.retrainSeconds().observe({ outcome: 'rejected' }, Math.max(0, e.occurredAt - Number(summary[2])) / 1000);
        });
        break;
      }
      case 'ModelPromoted': {
        const e = ev.value;
        version = e.modelVersion;
        title = `${e.modelVersion} promoted ${e.variant}${e.variant === 'LIVE' ? (e.pinned ? ' (pinned)' : '') : ` share ${e.share}`} by ${e.actor}${e.reason ? `: ${e.reason}` : ''}${ignored}`;
        break;
      }
      case 'ModelRolledBack': {
        const e = ev.value;
        version = e.toVersion;
        title = `rolled back ${e.fromVersion ?? '?'} -> ${e.toVersion} by ${e.actor}${e.reason ? `: ${e.reason}` : ''}${ignored}`;
        if (change?.kind !== 'ignored') Object.assign(fields, { last_rollback_at: e.occurredAt, last_rollback_detail: title });
        break;
      }
      case 'RetrainRequested': {
        const e = ev.value;
        title = `retrain requested (${e.reason}) by ${e.requestedBy}${e.detail ? `: ${e.detail}` : ''}`;
        Object.assign(fields, { last_retrain_at: e.occurredAt, last_retrain_reason: e.reason, last_retrain_id: e.eventId, last_retrain_detail: title });
        after.push(() => m.retrains().inc({ outcome: 'requested', reason: e.reason }));
        break;
      }
      case 'QualityAlert': {
        const e = ev.value;
        version = e.modelVersion;
        title = alertTitle(e);
        Object.assign(fields, { last_alert_at: e.occurredAt, last_alert_kind: e.kind, last_alert_detail: title });
        break;
      }
      default:
        return false;
    }
    if (ev.name.startsWith('Model')) after.push(() => m.modelEvents().inc({ event: ev.name }));
    const entry: LifecycleEntry = { id: v.eventId, clientId, type: ev.name, at: v.occurredAt, version, title };
    const json = JSON.stringify(entry);
    let applied: number;
    try {
      applied = await this.redis.eddyMonitorLifecycle(
        monitorKeys.seen(p, clientId), monitorKeys.summary(p, clientId), monitorKeys.events(p, clientId),
        v.eventId, v.occurredAt, this.opts.predictionTtlMs, json, EVENTS_PER_CLIENT, ...Object.entries(fields).flat(),
      );
    } catch (err) {
      throw wrap(err, 'applying a lifecycle event');
    }
    if (applied !== 1) return false;
    for (const f of after) f();
    const recent = this.redis.pipeline().lpush(monitorKeys.recent(p), json).ltrim(monitorKeys.recent(p), 0, RECENT_EVENTS - 1);
    await execPipeline(recent, 'recording recent lifecycle events');
    logger.debug({ clientId, event: ev.name, title }, 'lifecycle event');
    // Only a client with judgements has anything to evaluate (one without keeps an empty trend).
    return this.opts.autoRollback && typeof fields.fresh === 'string' && fields.fresh !== '' && Number(summary[4] ?? 0) > 0;
  }

  /** evaluateClient, after any evaluation of the same client in progress (a failed one does not stop the next). */
  private evaluateInTurn(clientId: string, points: Array<{ at: number; eventId: string }>, logger: Logger): Promise<void> {
    const before = this.evaluating.get(clientId);
    const queued = (before ? before.catch(() => undefined) : Promise.resolve()).then(() => this.evaluateClient(clientId, points, logger));
    this.evaluating.set(clientId, queued);
    const forget = () => {
      if (this.evaluating.get(clientId) === queued) this.evaluating.delete(clientId);
    };
    queued.then(forget, forget);
    return queued;
  }

  /**
   * Evaluates one client at each of `points` (event time, in order): the day buckets the windows
   * need are read once, the windows are summed in memory, the episode state advances point by
   * point, and alerts, the rollback, trend points and state are written once at the end.
   */
  private async evaluateClient(clientId: string, points: Array<{ at: number; eventId: string }>, logger: Logger): Promise<void> {
    const p = this.opts.keyPrefix;
    const o = this.opts;
    const summaryKey = monitorKeys.summary(p, clientId);
    const s = await this.redis.hgetall(summaryKey).catch((err: unknown) => { throw wrap(err, 'reading monitor summary'); });
    const lo = dayOf(points[0]!.at) - 2 * WEEK_DAYS + 1;
    const hi = dayOf(points[points.length - 1]!.at);
    let fresh = o.autoRollback && s.fresh && s.fresh_prev && s.live === s.fresh ? { version: s.fresh, previous: s.fresh_prev, since: Number(s.fresh_since) } : undefined;
    const versions = fresh ? [ALL_VERSIONS, fresh.version, fresh.previous] : [ALL_VERSIONS];
    const windows = versions.flatMap((version) => Array.from({ length: hi - lo + 1 }, (_, i) => ({ version, fromDay: lo + i, toDay: lo + i })));
    const segmentDays = this.redis.pipeline();
    for (let d = lo; d <= hi; d++) segmentDays.hgetall(monitorKeys.segments(p, clientId, d));
    const [daily, segmentHashes] = await Promise.all([
      readWindows(this.redis, p, clientId, windows),
      execPipeline(segmentDays, 'reading segment quality') as Promise<Array<Record<string, string>>>,
    ]);
    const segmentsByDay = segmentHashes.map((h) => splitSegments(h ?? {}));
    const span = hi - lo + 1;
    /** Segment counters summed over days [from, to]. */
    const segmentSum = (from: number, to: number): Map<string, Counters> => {
      const total = new Map<string, Counters>();
      for (let d = Math.max(from, lo); d <= Math.min(to, hi); d++) {
        for (const [segment, c] of segmentsByDay[d - lo]!) {
          let t = total.get(segment);
          if (!t) total.set(segment, (t = {}));
          addCounters(t, c);
        }
      }
      return total;
    };
    /** Open SEGMENT_GAP episodes: segment -> when it opened and how far behind it was. */
    const gaps = JSON.parse(s.segaps || '{}') as Record<string, { at: number; gapPercent: number }>;
    let gapsChanged = false;
    /** Counters of `version` summed over days [from, to], from the buckets read above. */
    const sum = (version: string, from: number, to: number): Counters => {
      const v = versions.indexOf(version);
      const total: Counters = {};
      for (let d = Math.max(from, lo); d <= Math.min(to, hi); d++) addCounters(total, daily[v * span + (d - lo)]!);
      return total;
    };
    const out: AnyEvent[] = [];
    const fields: Record<string, string> = {};
    const trend: Array<{ minute: number; json: string }> = [];
    const live = s.live || null;
    let last: { current: ReturnType<typeof qualityOf>; bias: number } | undefined;

    for (const { at: now, eventId: causeId } of points) {
      const today = dayOf(now);
      const cur = sum(ALL_VERSIONS, today - WEEK_DAYS + 1, today);
      const current = qualityOf(cur);
      const previous = qualityOf(sum(ALL_VERSIONS, today - 2 * WEEK_DAYS + 1, today - WEEK_DAYS));

      // --- quality drop: one alert per episode ---
      const drops = findDrops(current, previous, { dropPct: o.dropPct, minSupport: o.minSupport });
      if (!s.drop && drops.length > 0) {
        const d = drops[0]!;
        out.push({ name: 'QualityAlert', value: dropAlert(clientId, now, d, live, derivedId(clientId, 'drop', causeId)) });
        s.drop = fields.drop = JSON.stringify({ at: now, metric: d.metric, label: d.label, dropPercent: d.dropPercent, also: drops.length - 1 });
      } else if (s.drop && findDrops(current, previous, { dropPct: o.dropPct / 2, minSupport: o.minSupport }).length === 0) {
        s.drop = fields.drop = '';
        logger.info({ clientId }, 'quality recovered; drop episode closed');
      }

      // --- prediction bias ---
      const bias = biasOf(cur);
      if (!s.bias && bias.support >= o.minSupport && bias.divergence > o.biasThreshold) {
        const alert: QualityAlert = {
          eventId: derivedId(clientId, 'bias', causeId), clientId, occurredAt: now, kind: 'PREDICTION_BIAS', metric: 'jensen_shannon',
          label: bias.overPredicted, modelVersion: live, currentValue: bias.divergence, previousValue: o.biasThreshold,
          dropPercent: (100 * (bias.divergence - o.biasThreshold)) / o.biasThreshold, support: bias.support, window: '7d', segment: null,
        };
        out.push({ name: 'QualityAlert', value: alert });
        s.bias = fields.bias = JSON.stringify({ at: now, divergence: bias.divergence, overPredicted: bias.overPredicted });
      } else if (s.bias && (bias.support < o.minSupport || bias.divergence < 0.8 * o.biasThreshold)) {
        s.bias = fields.bias = '';
      }

      // --- automatic rollback of a fresh version clearly worse than its predecessor ---
      if (fresh) {
        const nq = qualityOf(sum(fresh.version, Math.max(dayOf(fresh.since), today - 2 * WEEK_DAYS + 1), today));
        const pq = qualityOf(sum(fresh.previous, today - 2 * WEEK_DAYS + 1, today));
        if (nq.support >= o.rollbackMinSupport && pq.support >= o.rollbackMinSupport) {
          const dropPercent = pq.accuracy > 0 ? (100 * (pq.accuracy - nq.accuracy)) / pq.accuracy : 0;
          if (dropPercent > o.rollbackDropPct) {
            const reason = `automatic: ${fresh.version} kept ${pct(100 * nq.accuracy)} of ${nq.support} judged predictions, ${fresh.previous} kept ${pct(100 * pq.accuracy)} of ${pq.support} (accuracy -${pct(dropPercent)}, threshold ${pct(o.rollbackDropPct)}; macro-F1 ${f3(nq.f1)} vs ${f3(pq.f1)})`;
            const rollback: ModelRolledBack = {
              eventId: derivedId(clientId, 'rollback', fresh.version), clientId, occurredAt: now,
              fromVersion: fresh.version, toVersion: fresh.previous, actor: 'monitor', reason,
            };
            const alert: QualityAlert = {
              eventId: derivedId(clientId, 'regression', fresh.version), clientId, occurredAt: now, kind: 'MODEL_REGRESSION', metric: 'accuracy',
              label: null, modelVersion: fresh.version, currentValue: nq.accuracy, previousValue: pq.accuracy, dropPercent, support: nq.support,
              window: 'since-publish', segment: null,
            };
            out.push({ name: 'ModelRolledBack', value: rollback }, { name: 'QualityAlert', value: alert });
            monitorMetrics.rollbacks().inc();
            logger.warn({ clientId, from: fresh.version, to: fresh.previous, reason }, 'rolling back a version worse than its predecessor');
          } else {
            logger.info({ clientId, version: fresh.version, accuracy: nq.accuracy, previous: pq.accuracy }, 'fresh version holds up on live feedback; kept');
          }
          fields.fresh = '';
          fields.fresh_decision = JSON.stringify({ version: fresh.version, at: now, accuracy: nq.accuracy, previousAccuracy: pq.accuracy, support: nq.support, rolledBack: dropPercent > o.rollbackDropPct });
          fresh = undefined; // decided once
        }
      }

      // --- segment gaps: one alert per segment episode, closed when the gap is under half the threshold ---
      for (const [segment, c] of segmentSum(today - WEEK_DAYS + 1, today)) {
        const sq = qualityOf(c);
        const gap = gapPercent(sq.accuracy, current.accuracy);
        const open = gaps[segment];
        if (!open && sq.support >= o.segmentMinSupport && current.support >= o.segmentMinSupport && gap > o.segmentGapPct) {
          out.push({ name: 'QualityAlert', value: {
            eventId: derivedId(clientId, 'segment', segment, causeId), clientId, occurredAt: now, kind: 'SEGMENT_GAP', metric: 'accuracy', label: null,
            modelVersion: live, currentValue: sq.accuracy, previousValue: current.accuracy, dropPercent: gap, support: sq.support, window: '7d', segment,
          } });
          gaps[segment] = { at: now, gapPercent: gap };
          gapsChanged = true;
        } else if (open && (sq.support < o.segmentMinSupport || gap < o.segmentGapPct / 2)) {
          delete gaps[segment];
          gapsChanged = true;
          logger.info({ clientId, segment }, 'segment caught up; gap episode closed');
        }
      }

      trend.push({
        minute: Math.floor(now / 60_000) * 60_000,
        json: JSON.stringify({ t: now, precision: current.precision, recall: current.recall, f1: current.f1, accuracy: current.accuracy, support: current.support, bias: bias.divergence, version: live }),
      });
      last = { current, bias: bias.divergence };
    }

    if (gapsChanged) fields.segaps = JSON.stringify(gaps);
    // At-least-once: send first, then remember; a crash in between re-sends the same derived ids.
    await this.emit(out);
    for (const e of out) if (e.name === 'QualityAlert') {
      monitorMetrics.alerts().inc({ kind: e.value.kind });
      logger.warn({ clientId, alert: alertTitle(e.value) }, 'quality alert');
    }
    if (last) {
      const g = monitorMetrics.quality();
      for (const m of ['precision', 'recall', 'f1', 'accuracy'] as const) g.set({ client_id: clientId, metric: m }, last.current[m]);
      monitorMetrics.bias().set({ client_id: clientId }, last.bias);
    }
    const trendKey = monitorKeys.trend(p, clientId);
    const save = this.redis.pipeline();
    for (const t of trend) save.zremrangebyscore(trendKey, t.minute, t.minute + 59_999).zadd(trendKey, t.minute, t.json);
    save.zremrangebyrank(trendKey, 0, -(TREND_POINTS + 1)).pexpire(trendKey, BUCKET_TTL_MS);
    if (Object.keys(fields).length > 0) save.hset(summaryKey, fields);
    await execPipeline(save, 'saving monitor state');
  }
}

type MonitorPipeline = ChainableCommander & {
  eddyMonitorPrediction(...args: Array<string | number>): unknown;
  eddyMonitorFeedback(...args: Array<string | number>): unknown;
};

/** Redis failures are classified by the processors' rule: away/busy is retriable (the work pauses). */
const wrap = (err: unknown, what: string) => redisError(err, what);

export function dropAlert(clientId: string, now: number, d: Drop, modelVersion: string | null, eventId: string): QualityAlert {
  return {
    eventId, clientId, occurredAt: now, kind: 'QUALITY_DROP', metric: d.metric, label: d.label, modelVersion,
    currentValue: d.current, previousValue: d.previous, dropPercent: d.dropPercent, support: d.support, window: '7d', segment: null,
  };
}

export function alertTitle(e: QualityAlert): string {
  const what = `${e.metric}${e.label ? ` of ${e.label}` : ''}`;
  switch (e.kind) {
    case 'QUALITY_DROP':
      return `${what} fell ${pct(e.dropPercent)} below last week (${f3(e.previousValue)} -> ${f3(e.currentValue)}, ${e.support} judged)${e.modelVersion ? ` on ${e.modelVersion}` : ''}`;
    case 'PREDICTION_BIAS':
      return `predictions biased${e.label ? ` towards ${e.label}` : ''}: divergence ${f3(e.currentValue)} > ${f3(e.previousValue)} over ${e.support} judged${e.modelVersion ? ` on ${e.modelVersion}` : ''}`;
    case 'SEGMENT_GAP':
      return `requests in ${e.segment ?? 'a segment'} are served worse: accuracy ${f3(e.currentValue)} vs ${f3(e.previousValue)} overall (-${pct(e.dropPercent)}, ${e.support} judged)${e.modelVersion ? ` on ${e.modelVersion}` : ''}`;
    case 'MODEL_REGRESSION':
      return `${e.modelVersion ?? 'new version'} worse than its predecessor on live feedback: ${what} ${f3(e.currentValue)} vs ${f3(e.previousValue)} (-${pct(e.dropPercent)}, ${e.support} judged)`;
    default:
      return what;
  }
}
