import type { ChainableCommander } from 'ioredis';
import type { RedisClient } from '../../common/redis.ts';
import { featureKeys, predictionKey } from '../../common/keyspace.ts';
import { BASELINE_VERSION } from '../../models/quality.ts';
import { entitiesOf, featuresFromState, type RealtimeFeatures } from '../../featurizer/realtime.ts';
import type { EventHandler, EventRecord } from '../../streams/consumer.ts';
import type { TopicName } from '../../streams/topics.ts';
import type { LabeledExample } from '../../schemas/events.ts';
import { SlotPipelines } from '../../common/redis.ts';
import type { BatchInserter, Row } from '../analytics/inserter.ts';
import { exampleRow } from '../analytics/rows.ts';
import { FEATURE_DECAY, QUALITY_BUCKET_TTL_MS, withFeatureScripts, type FeatureRedis } from './state.ts';

export const FEATURE_TOPICS: readonly TopicName[] = ['examples', 'labels', 'predictions', 'feedback'];

export interface FeatureProcessorOptions {
  keyPrefix: string;
  seenTtlMs: number;
  /** How long the prediction record waits for feedback (EDDY_FEEDBACK_PREDICTION_TTL_DAYS). */
  predictionTtlMs: number;
}

type FeaturePipeline = ChainableCommander & {
  eddyApplyExamples(keys: number, ...args: Array<string | number>): unknown;
  eddyApplyOnce(keys: number, ...args: Array<string | number>): unknown;
};

type Op = [command: string, keyIndex: number, ...args: Array<string | number>];

/** The keys of one script call (KEYS[1] = the seen set), named by 1-based index in the events' specs. */
class ScriptKeys {
  readonly keys: string[];
  readonly events: Array<{ id: string; ops: Op[] }> = [];
  private readonly indexOf = new Map<string, number>();
  constructor(seen: string) {
    this.keys = [seen];
    this.indexOf.set(seen, 1);
  }
  /** The 1-based (Lua) index of `key`, added on first use. */
  index(key: string): number {
    let i = this.indexOf.get(key);
    if (i === undefined) {
      this.keys.push(key);
      this.indexOf.set(key, (i = this.keys.length));
    }
    return i;
  }
}

/**
 * Projects events into per-client Redis state (layout: common/keyspace.ts): the label set,
 * counters, last activity, feedback outcomes per day, and the decayed per-entity label history
 * behind the real-time features, and the request fields of the prediction record feedback refers to.
 *
 * One Lua script per event, all pipelined per call (one pipeline per client on a Redis Cluster,
 * where a pipeline must stay on one node): each script checks the event's id against
 * the client's seen set and applies the update in the same atomic step, so a redelivered or
 * replayed event never counts twice. For each LabeledExample the script returns the entity
 * state just before the update; the features computed from it (featurizer/realtime.ts, the code
 * the server uses) are written with the example to ClickHouse, so training sees what serving saw.
 * Offsets are committed after Redis applied and ClickHouse acknowledged the call's events.
 */
export class FeatureProcessor implements EventHandler {
  private readonly redis: FeatureRedis;
  /** Commands sent to Redis (scripts + index updates), for the benchmark's commands/event. */
  readonly stats = { redisCommands: 0, events: 0 };

  constructor(redis: RedisClient, private readonly inserter: BatchInserter, private readonly opts: FeatureProcessorOptions) {
    this.redis = withFeatureScripts(redis);
  }

  async handle(records: EventRecord[]): Promise<void> {
    const ticket = this.inserter.open();
    let rows: Row[];
    try {
      rows = await this.applyToRedis(records);
    } catch (err) {
      ticket.cancel();
      throw err;
    }
    await ticket.submit({ examples: rows });
  }

  private async applyToRedis(records: EventRecord[]): Promise<Row[]> {
    const { keyPrefix: p, seenTtlMs } = this.opts;
    // One pipeline on a single Redis; one per client on a cluster (a call spans many clients).
    const pipeline = new SlotPipelines<FeaturePipeline>(this.redis);
    // One script call per client: all its examples of this call in order (APPLY_EXAMPLES), and all
    // its other events in order (APPLY_ONCE). A call holds one topic, so there is no cross-order.
    const examplesByClient = new Map<string, Array<{ record: EventRecord; event: LabeledExample; entities: ReturnType<typeof entitiesOf> }>>();
    const onceByClient = new Map<string, ScriptKeys>();
    const clients = new Set<string>();
    let commands = 0;
    // Wall-clock time ages the seen set (event time is for the state itself, so replays match).
    const clock = Date.now();
    for (const r of records) {
      const ev = r.event;
      const { clientId, eventId, occurredAt } = ev.value as { clientId: string; eventId: string; occurredAt: number };
      clients.add(clientId);
      if (ev.name === 'LabeledExample') {
        const e = ev.value;
        let list = examplesByClient.get(clientId);
        if (!list) examplesByClient.set(clientId, (list = []));
        list.push({ record: r, event: e, entities: entitiesOf(e.metadata) });
        continue;
      }
      const seen = featureKeys.seen(p, clientId);
      const counts = featureKeys.counts(p, clientId);
      // keys[i - 1] is what op key index i names; remapped into the client's call-wide key list
      const once = (keys: string[], ops: Op[]) => {
        let call = onceByClient.get(clientId);
        if (!call) onceByClient.set(clientId, (call = new ScriptKeys(seen)));
        const c = call;
        c.events.push({ id: eventId, ops: ops.map(([cmd, i, ...args]) => [cmd, c.index(keys[i - 1]!), ...args]) });
      };
      switch (ev.name) {
        case 'LabelSetChanged': {
          const e = ev.value;
          const info = JSON.stringify({ description: e.description ?? '', keywords: e.keywords, updatedAt: occurredAt });
          // keys: 1 seen, 2 counts, 3 labels
          const ops: Op[] = [['HINCRBY', 2, 'label_changes', 1], ['MAXFIELD', 2, 'last_activity_ms', occurredAt]];
          if (e.change === 'REMOVED') ops.push(['HDEL', 3, e.label]);
          else {
            if (e.change === 'RENAMED' && e.previousLabel) ops.push(['HDEL', 3, e.previousLabel]);
            ops.push(['HSET', 3, e.label, info]);
          }
          once([seen, counts, featureKeys.labels(p, clientId)], ops);
          break;
        }
        case 'PredictionMade': {
          const e = ev.value;
          // keys: 1 seen, 2 counts, 3 quality bucket, 4 the prediction record
          const ops: Op[] = [
            ['HINCRBY', 2, 'predictions', 1],
            ['HINCRBY', 3, 'predictions', 1],
            ['HINCRBY', 3, `variant:${e.variant}`, 1],
            ['PEXPIRE', 3, QUALITY_BUCKET_TTL_MS],
          ];
          if (e.featuresDefaulted) ops.push(['HINCRBY', 3, 'defaulted', 1]);
          // Feedback is about what the user saw: a shadow prediction must not overwrite it.
          if (e.variant !== 'SHADOW') {
            ops.push(
              ['HSET', 4, 'text', e.text, 'md', JSON.stringify(e.metadata), 'l', e.label, 'v', e.modelVersion ?? BASELINE_VERSION, 'variant', e.variant, 't', occurredAt],
              ['PEXPIRE', 4, this.opts.predictionTtlMs],
            );
          }
          once([seen, counts, featureKeys.quality(p, clientId, occurredAt), predictionKey(p, clientId, e.requestId)], ops);
          break;
        }
        case 'PredictionFeedback': {
          const e = ev.value;
          once([seen, counts, featureKeys.quality(p, clientId, occurredAt)], [
            ['HINCRBY', 2, 'feedback', 1],
            ['HINCRBY', 3, `outcome:${e.outcome}`, 1],
            ['PEXPIRE', 3, QUALITY_BUCKET_TTL_MS],
            ['MAXFIELD', 2, 'last_activity_ms', occurredAt],
          ]);
          break;
        }
        default:
          break; // not a feature event (the runner only subscribes FEATURE_TOPICS)
      }
    }
    const exampleCalls: Array<{ index: number; list: NonNullable<ReturnType<typeof examplesByClient.get>> }> = [];
    for (const [clientId, list] of examplesByClient) {
      const call = new ScriptKeys(featureKeys.seen(p, clientId));
      call.index(featureKeys.counts(p, clientId)); // KEYS[2]
      const spec = list.map(({ event: e, entities }) => ({
        id: e.eventId, ts: e.occurredAt, label: e.label, source: e.source,
        snap: call.index(featureKeys.snapshot(p, clientId, e.eventId)),
        ents: entities.map((x) => call.index(featureKeys.entity(p, clientId, x.field, x.value))),
      }));
      exampleCalls.push({ index: commands, list });
      pipeline.queue(call.keys[0]!, (q) => q.eddyApplyExamples(call.keys.length, ...call.keys, seenTtlMs, FEATURE_DECAY.entityTtlMs, FEATURE_DECAY.halfLifeMs, clock, JSON.stringify(spec)));
      commands++;
    }
    for (const call of onceByClient.values()) {
      pipeline.queue(call.keys[0]!, (q) => q.eddyApplyOnce(call.keys.length, ...call.keys, clock, seenTtlMs, JSON.stringify(call.events)));
      commands++;
    }
    // The client index has no hash tag: one key, in a slot of its own, written once per call.
    pipeline.queue(featureKeys.clients(p), (q) => q.sadd(featureKeys.clients(p), ...clients));
    commands++;
    const results = await pipeline.exec('applying events to Redis');
    this.stats.redisCommands += commands;
    this.stats.events += records.length;
    const rows: Row[] = [];
    for (const { index, list } of exampleCalls) {
      const snapshots = results[index] as Array<string | null>;
      list.forEach(({ record, event, entities }, i) => {
        rows.push(exampleRow(record, event, this.featuresOf(entities, snapshots[i] ?? null, event.occurredAt)));
      });
    }
    return rows;
  }

  private featuresOf(entities: ReturnType<typeof entitiesOf>, snapshot: string | null, at: number): RealtimeFeatures {
    if (!snapshot || entities.length === 0) return {};
    const parsed = JSON.parse(snapshot) as unknown;
    // cjson encodes an empty Lua table as {}, so "no entities" may come back as an object.
    const states = Array.isArray(parsed) ? (parsed as Array<Record<string, string>>) : [];
    return featuresFromState(entities, states.map((s) => (Array.isArray(s) ? {} : s)), at);
  }
}
