import type { RedisClient } from '../../common/redis.ts';
import type { ProcessorsConfig } from '../../common/config.ts';
import type { Logger } from '../../common/log.ts';
import type { AnyEvent } from '../../streams/codec.ts';
import type { BatchContext, EventHandler, EventRecord, ProcessorContext } from '../../streams/consumer.ts';
import type { TopicName } from '../../streams/topics.ts';
import type { RetrainRequested } from '../../schemas/events.ts';
import { execPipeline, SlotPipelines } from '../../common/redis.ts';
import { EddyError, errorMessage } from '../../common/errors.ts';
import { derivedId } from '../../common/ids.ts';
import { featureKeys, labelCountsOf, triggerKeys } from '../../common/keyspace.ts';
import { createLogger } from '../../common/log.ts';
import { countArrival, decideRetrain, emptyTriggerState, recentArrivals, type ClientTriggerState, type Decision } from './policy.ts';

export const TRIGGER_TOPICS: readonly TopicName[] = ['examples', 'labels', 'models', 'alerts'];

/** A client's counters as the processors know them, for operators, the monitor and the server. */
export interface ClientCounts {
  examples: number;
  perLabel: Record<string, number>;
  /** Examples that arrived after the data of the live model was cut (trigger processor's view). */
  sinceLastModel: number;
  lastModelVersion: string | null;
  lastActivityMs: number | null;
}

/** Reads a client's counters: totals from the feature state, model-relative ones from the trigger state. */
export async function readClientCounts(redis: RedisClient, prefix: string, clientId: string): Promise<ClientCounts> {
  const pipeline = redis.pipeline();
  pipeline.hgetall(featureKeys.counts(prefix, clientId));
  pipeline.get(triggerKeys.state(prefix, clientId));
  const [counts, raw] = (await execPipeline(pipeline, 'reading client counts')) as [Record<string, string>, string | null];
  const t: ClientTriggerState = raw ? { ...emptyTriggerState(), ...(JSON.parse(raw) as ClientTriggerState) } : emptyTriggerState();
  return {
    examples: Number(counts.examples ?? 0),
    perLabel: Object.fromEntries(labelCountsOf(counts)),
    sinceLastModel: t.lastModelVersion === null ? t.examples : t.examples - t.examplesAtLastModel,
    lastModelVersion: t.lastModelVersion,
    lastActivityMs: counts.last_activity_ms ? Number(counts.last_activity_ms) : null,
  };
}

/** A stable id for the request a given event caused: a redelivery re-sends the same event, which trainers dedupe. */
function requestIdFor(causeEventId: string): string {
  return derivedId(`eddy:retrain:${causeEventId}`);
}

/**
 * Emits RetrainRequested per the retrain policy (policy.ts) and keeps, per client, the state the
 * policy needs in Redis (common/keyspace.ts `triggerKeys`). Time is event time (occurredAt), so decisions
 * do not depend on how fast the log is read. Per call: load the states of the call's clients,
 * apply the records in order, send the requests, then save the states; a crash between send and
 * save re-sends the same request ids (derived from the causing event), which trainers dedupe.
 */
export class TriggerProcessor implements EventHandler {
  private logger: Logger | undefined;
  /** Requests emitted by this process, for tests and logs. */
  readonly emitted: RetrainRequested[] = [];
  /** handle() and the sweep take turns: both read-modify-write client states. */
  private turn: Promise<unknown> = Promise.resolve();
  private emit: ProcessorContext['emit'] = async () => {
    throw new EddyError('NOT_INITIALISED', 'the trigger processor emits only after init()');
  };
  private endOffsets: ProcessorContext['endOffsets'] = async () => {
    throw new EddyError('NOT_INITIALISED', 'the trigger processor reads offsets only after init()');
  };
  /** The highest examples offset this processor has folded, per partition (every client's records count). */
  private readonly examplesRead = new Map<number, number>();
  /**
   * Per client whose request waits to read the backlog first: the end of its examples partition
   * when quiet was first seen. Kept in memory: a restarted processor asks the log again.
   */
  private readonly backlogEnds = new Map<string, { partition: number; end: number }>();

  constructor(
    private readonly redis: RedisClient,
    private readonly opts: { keyPrefix: string; trigger: ProcessorsConfig['trigger'] },
  ) {}

  /**
   * Held-back retrains are looked at again when their cooldown or quiet wait ends, not only at the
   * client's next event: the sweep is scheduled every tenth of the cooldown or half the quiet gap,
   * whichever is shorter (0.25–5 s), as late as one may come.
   */
  async init(ctx: ProcessorContext): Promise<void> {
    this.logger = ctx.logger.child({ processor: 'triggers' });
    this.emit = ctx.emit;
    this.endOffsets = ctx.endOffsets;
    const t = this.opts.trigger;
    const every = Math.min(5_000, Math.max(250, Math.min(t.cooldownMs / 10, t.quietMs > 0 ? t.quietMs / 2 : Infinity)));
    ctx.schedule('retrain-sweep', every, async (owned) => {
      await this.sweep((topic, partition) => owned.owns(topic as TopicName, partition));
    });
  }

  async close(): Promise<void> {
    await this.turn;
  }

  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.turn.then(fn, fn);
    this.turn = run.catch(() => undefined);
    return run;
  }

  async handle(records: EventRecord[], ctx: BatchContext): Promise<void> {
    await this.exclusive(() => this.apply(records, ctx.logger));
  }

  private async apply(records: EventRecord[], ctxLogger: Logger): Promise<void> {
    const logger = this.logger ?? ctxLogger;
    const clientIds = [...new Set(records.map((r) => (r.event.value as { clientId: string }).clientId))];
    const states = await this.loadStates(clientIds);
    const requests: RetrainRequested[] = [];
    const changed = new Set<string>();
    const held = new Map<string, number>();
    for (const r of records) {
      const ev = r.event.value as { clientId: string; eventId: string; occurredAt: number };
      const s = states.get(ev.clientId)!;
      const offset = Number(r.offset);
      const offsetKey = `${r.topic}/${r.partition}`;
      if ((s.offsets[offsetKey] ?? -1) >= offset) continue; // redelivered: already applied
      s.offsets[offsetKey] = offset;
      if (r.topic === 'examples') this.examplesRead.set(r.partition, Math.max(offset, this.examplesRead.get(r.partition) ?? -1));
      changed.add(ev.clientId);
      const wallNow = Date.now();
      if (!this.fold(s, r, logger, wallNow)) continue;
      let d = this.unlessBacklog(ev.clientId, s, decideRetrain(s, ev.occurredAt, this.opts.trigger, wallNow), logger);
      if (d instanceof Promise) d = await d;
      if (d.kind === 'hold') {
        if (d.blockedBy === 'QUIET') s.waitingSince ??= wallNow;
        held.set(ev.clientId, this.dueAt(s, d));
        logger.info({ clientId: ev.clientId, reason: d.reason, detail: d.detail, blockedBy: d.blockedBy }, 'retrain wanted but held back');
      } else if (d.kind === 'request') {
        held.delete(ev.clientId);
        requests.push(this.request(s, ev.clientId, d, ev.eventId, ev.occurredAt, logger));
      }
    }
    await this.emit(requests.map((value): AnyEvent => ({ name: 'RetrainRequested', value })));
    this.emitted.push(...requests);
    await this.save(states, changed, held, new Set(requests.map((r) => r.clientId)));
  }

  private async loadStates(clientIds: string[]): Promise<Map<string, ClientTriggerState>> {
    // One pipeline on a single Redis; one per client on a cluster (a call spans many clients).
    const load = new SlotPipelines(this.redis);
    for (const c of clientIds) {
      const key = triggerKeys.state(this.opts.keyPrefix, c);
      load.queue(key, (q) => q.get(key));
    }
    const raw = await load.exec('loading trigger state');
    const states = new Map<string, ClientTriggerState>();
    clientIds.forEach((c, i) => states.set(c, raw[i] ? { ...emptyTriggerState(), ...(JSON.parse(raw[i] as string) as ClientTriggerState) } : emptyTriggerState()));
    return states;
  }

  /** Saves the changed states and the due times of held decisions (one round trip). */
  private async save(states: Map<string, ClientTriggerState>, changed: Set<string>, held: Map<string, number>, requested: Set<string>): Promise<void> {
    if (changed.size === 0 && held.size === 0 && requested.size === 0) return;
    const save = new SlotPipelines(this.redis);
    for (const c of changed) {
      const key = triggerKeys.state(this.opts.keyPrefix, c);
      save.queue(key, (q) => q.set(key, JSON.stringify(states.get(c))));
    }
    // The held index spans clients (the sweep reads it whole), so it has no hash tag: one key in a
    // slot of its own, which the per-client states need not share (nothing updates both atomically).
    const heldKey = triggerKeys.held(this.opts.keyPrefix);
    for (const [c, at] of held) save.queue(heldKey, (q) => q.zadd(heldKey, at, c));
    for (const c of requested) if (!held.has(c)) save.queue(heldKey, (q) => q.zrem(heldKey, c));
    await save.exec('saving trigger state');
  }

  /**
   * When a held decision should be looked at again: when what holds it back ends. Cooldown and
   * outstanding timeouts are in event time, the quiet wait in processing time (the sweep compares
   * both with its clock).
   */
  private dueAt(s: ClientTriggerState, d: Extract<Decision, { kind: 'hold' }>): number {
    const t = this.opts.trigger;
    if (d.blockedBy === 'QUIET') {
      // Quiet when no example came for quietMs, or once the decayed arrivals fall below the burst size.
      const last = s.lastExampleSeenAt ?? 0;
      const r = recentArrivals(s, last, t.quietMs);
      const calm = t.quietBurst > 0 && Number.isFinite(r) && r > t.quietBurst ? last + t.quietMs * Math.log(r / t.quietBurst) : Infinity;
      return Math.min(last + t.quietMs, calm, (s.waitingSince ?? 0) + t.quietMaxWaitMs);
    }
    return d.blockedBy === 'OUTSTANDING' && s.outstanding ? s.outstanding.at + t.outstandingTimeoutMs : (s.lastRequestAt ?? 0) + t.cooldownMs;
  }

  /**
   * A request that answers a burst (NEW_CLIENT, catch-up) passed the quiet rule on processing time;
   * it goes out only once this processor has also read what the client's examples partition held
   * when quiet was first seen. A consumer that reads nothing for a while (a starved machine, a
   * rebalance, a broker restart) looks quiet, yet the rest of the import is still in the log: the
   * request waits for it instead of training on a tenth. Bounded like the quiet wait itself: the
   * policy stops asking for this once quietMaxWaitMs has passed. When Kafka cannot say where the
   * log ends, the request waits too (same bound).
   */
  private unlessBacklog(clientId: string, s: ClientTriggerState, d: Decision, logger: Logger): Decision | Promise<Decision> {
    if (d.kind !== 'request' || !d.readBacklogFirst) {
      // Busy again, or a request that does not wait: a later quiet moment measures the log anew.
      // Synchronous: this runs for every folded record, and a promise per record is not free.
      this.backlogEnds.delete(clientId);
      return d;
    }
    return this.backlogHolds(clientId, s, d, logger);
  }

  private async backlogHolds(clientId: string, s: ClientTriggerState, d: Extract<Decision, { kind: 'request' }>, logger: Logger): Promise<Decision> {
    const home = Object.keys(s.offsets).find((k) => k.startsWith('examples/'));
    if (home === undefined) return d;
    const partition = Number(home.slice('examples/'.length));
    let target = this.backlogEnds.get(clientId);
    if (target === undefined || target.partition !== partition) {
      try {
        const end = (await this.endOffsets('examples')).get(partition);
        target = { partition, end: end === undefined ? 0 : Number(end) };
      } catch (err) {
        logger.warn({ clientId, err: errorMessage(err) }, 'cannot read where the examples log ends; the retrain waits');
        return { kind: 'hold', reason: d.reason, detail: `${d.detail}; waiting to learn where the log ends`, blockedBy: 'QUIET' };
      }
      this.backlogEnds.set(clientId, target);
    }
    const read = Math.max(this.examplesRead.get(partition) ?? -1, s.offsets[home] ?? -1);
    if (read >= target.end - 1) {
      this.backlogEnds.delete(clientId);
      return d;
    }
    return { kind: 'hold', reason: d.reason, detail: `${d.detail}; reading the backlog first (${target.end - 1 - read} records of partition ${partition} to go)`, blockedBy: 'QUIET' };
  }

  private request(s: ClientTriggerState, clientId: string, d: Extract<Decision, { kind: 'request' }>, causeId: string, at: number, logger: Logger): RetrainRequested {
    const req: RetrainRequested = {
      eventId: requestIdFor(causeId), clientId, occurredAt: at,
      reason: d.reason, detail: d.detail, requestedBy: 'trigger',
      // The trainer reads ClickHouse, which the analytics/feature processors fill after we saw
      // these events: it waits until they are visible there (docs/processors.md, watermark).
      dataAsOf: { examplesEventId: s.lastExampleEventId, labelChangesEventId: s.lastLabelChangeEventId },
    };
    s.outstanding = { eventId: req.eventId, at, reason: d.reason };
    s.incomplete = null;
    s.lastRequestAt = at;
    s.baselineExamples = s.examples;
    s.labelsChanged = false;
    s.qualityAlert = null;
    s.thin = null;
    s.waitingSince = null;
    s.labelCountsAtRequest = { ...s.labelCounts };
    logger.info({ clientId, reason: d.reason, detail: d.detail, retrainEventId: req.eventId }, 'retrain requested');
    return req;
  }

  /**
   * Re-evaluates the clients whose held decision is due (cooldown over, outstanding request timed
   * out), so that data which arrived while a retrain was held back is trained on without waiting
   * for the client's next event. Only clients this member owns are touched (`owns`: the consumer's
   * current assignment; the group is co-partitioned, so a client's partition number is the same on
   * every topic). Scheduled at init; called directly by tests. Returns the requests it made.
   */
  async sweep(owns: (topic: string, partition: number) => boolean, now = Date.now()): Promise<RetrainRequested[]> {
    const due = await this.redis.zrangebyscore(triggerKeys.held(this.opts.keyPrefix), '-inf', now, 'LIMIT', 0, 500);
    if (due.length === 0) return [];
    return this.exclusive(async () => {
      const logger = this.logger ?? createLogger('triggers');
      const states = await this.loadStates(due);
      const requests: RetrainRequested[] = [];
      const changed = new Set<string>();
      const held = new Map<string, number>();
      const done: string[] = [];
      for (const clientId of due) {
        const s = states.get(clientId)!;
        const home = Object.keys(s.offsets)[0]?.split('/');
        if (!home || !owns(home[0]!, Number(home[1]))) continue;
        const d = await this.unlessBacklog(clientId, s, decideRetrain(s, now, this.opts.trigger, now), logger);
        if (d.kind === 'request') {
          // Derived from the state it was decided on: a crash before the save re-sends the same id.
          const cause = `sweep:${clientId}:${s.lastRequestAt}:${s.examples}:${s.lastLabelChangeEventId}:${s.qualityAlert}`;
          requests.push(this.request(s, clientId, d, cause, now, logger));
          changed.add(clientId);
        } else if (d.kind === 'hold') {
          if (d.blockedBy === 'QUIET' && s.waitingSince === null) {
            s.waitingSince = now;
            changed.add(clientId);
          }
          held.set(clientId, this.dueAt(s, d));
        } else {
          done.push(clientId);
        }
      }
      await this.emit(requests.map((value): AnyEvent => ({ name: 'RetrainRequested', value })));
      this.emitted.push(...requests);
      await this.save(states, changed, held, new Set([...requests.map((r) => r.clientId), ...done]));
      return requests;
    });
  }

  /** Folds one event into the state; returns whether the policy should be evaluated after it. */
  private fold(s: ClientTriggerState, r: EventRecord, logger: Logger, wallNow: number): boolean {
    const ev = r.event;
    switch (ev.name) {
      case 'LabeledExample':
        s.examples++;
        countArrival(s, wallNow, this.opts.trigger.quietMs);
        s.lastExampleSeenAt = wallNow;
        s.lastExampleEventId = ev.value.eventId;
        s.labelCounts[ev.value.label] = (s.labelCounts[ev.value.label] ?? 0) + 1;
        return true;
      case 'LabelSetChanged': {
        const e = ev.value;
        s.lastLabelChangeEventId = e.eventId;
        if (e.change === 'REMOVED') delete s.labelCounts[e.label];
        if (e.change === 'RENAMED' && e.previousLabel) {
          s.labelCounts[e.label] = (s.labelCounts[e.label] ?? 0) + (s.labelCounts[e.previousLabel] ?? 0);
          delete s.labelCounts[e.previousLabel];
        }
        // A description or keyword update changes the definition examples too: retrain.
        s.labelsChanged = true;
        return true;
      }
      case 'ModelPublished': {
        const e = ev.value;
        s.lastModelVersion = e.modelVersion;
        s.lastModelAt = e.occurredAt;
        const answersOurs = s.outstanding !== null && e.retrainEventId === s.outstanding.eventId;
        s.examplesAtLastModel = answersOurs ? s.baselineExamples : s.examples;
        const ended = s.outstanding !== null && (e.retrainEventId === s.outstanding.eventId || e.retrainEventId === null);
        if (answersOurs && !e.dataComplete) s.incomplete = s.outstanding!.reason ?? 'NEW_DATA';
        if (ended) s.outstanding = null;
        // A model we never asked for (an operator's): what counts as new starts here.
        if (s.lastRequestAt === null) s.baselineExamples = s.examples;
        // Data that arrived while the retrain ran is judged now (or when the cooldown ends).
        return ended;
      }
      case 'ModelRejected': {
        const e = ev.value;
        const ended = s.outstanding !== null && (e.retrainEventId === s.outstanding.eventId || e.retrainEventId === null);
        if (ended && e.retrainEventId !== null && !e.dataComplete) s.incomplete = s.outstanding!.reason ?? 'NEW_DATA';
        // Refused because a label had too few examples (typically a new team announced before its
        // examples were read): ask again as soon as such a label has enough, not at the next threshold.
        if (ended && e.retrainEventId === s.outstanding!.eventId && e.reasons.includes('LABEL_TOO_FEW_EXAMPLES')) {
          s.thin = { reason: s.outstanding!.reason ?? 'NEW_DATA', counts: s.labelCountsAtRequest };
        }
        if (ended) s.outstanding = null;
        logger.info({ clientId: e.clientId, reasons: e.reasons, stage: e.stage }, 'retrain rejected; waiting for new data or signals');
        return ended;
      }
      case 'QualityAlert': {
        const e = ev.value;
        // A drop or a biased model is what a retrain on fresh data can fix. A segment gap needs
        // data of that segment (a retrain on the same data serves it as badly), and a regression is
        // answered by the monitor's rollback: neither asks for a retrain.
        if (e.kind === 'SEGMENT_GAP' || e.kind === 'MODEL_REGRESSION') return false;
        s.qualityAlert = `${e.kind}: ${e.metric}${e.label ? ` of ${e.label}` : ''} fell ${e.dropPercent.toFixed(1)}% (${e.previousValue.toFixed(3)} -> ${e.currentValue.toFixed(3)})${e.modelVersion ? ` on ${e.modelVersion}` : ''}`;
        return true;
      }
      default:
        return false;
    }
  }
}

