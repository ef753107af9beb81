import type { Redis } from 'ioredis';
import type { Logger } from '../common/log.ts';
import type { CounterCell } from '../common/metrics.ts';
import type { RedisClient } from '../common/redis.ts';
import { featureKeys } from '../common/keyspace.ts';
import { TrackedStates, type KeptState } from './tracked-states.ts';

/**
 * Real-time features: what recent history says about the entities a request names in its
 * metadata (who asked, through which channel). For each entity the feature processor keeps a
 * time-decayed count per label in Redis; these functions turn that state into named numbers.
 *
 * The SAME code computes the features in two places, so training sees what serving sees:
 * - the feature processor, for each LabeledExample, reads the state as it was just BEFORE the
 *   example was counted (the label must not leak into its own features) at the example's time,
 *   and records the values with the example (ClickHouse `examples.features`);
 * - the prediction server, via `readRealtimeFeatures`, at request time.
 *
 * Feature names: `<field>.share:<label>` (share of the entity's decayed history with that
 * label, 0..1) and `<field>.log_count` (ln(1 + decayed number of examples)). A field absent from
 * the metadata, or an entity never seen, contributes no features (the model reads missing as 0).
 */
export type RealtimeFeatures = Record<string, number>;

/** Metadata fields whose values are entities with their own label history. */
export const REALTIME_ENTITY_FIELDS = ['requester', 'channel'] as const;

/** Half-life of the decayed counts: a week-old assignment weighs half as much as today's. */
export const REALTIME_HALF_LIFE_MS = 7 * 24 * 60 * 60 * 1000;

/** An entity unseen for this long ages out of Redis (its decayed counts would be ~1/20 anyway). */
export const REALTIME_ENTITY_TTL_MS = 30 * 24 * 60 * 60 * 1000;

/** Changes whenever names, fields, decay or TTL change: models record which features they saw. */
export const REALTIME_FEATURES_VERSION = 'rt1:requester,channel:hl7d';

/** The hash field holding the time (ms) the decayed counts are expressed at. */
export const DECAY_TIME_FIELD = '_t';

/** Does `metadata` name an entity with a label history (what entitiesOf would return something for)? */
function namesAnEntity(metadata: Record<string, string>): boolean {
  for (const field of REALTIME_ENTITY_FIELDS) {
    const value = metadata[field];
    if (value !== undefined && value !== '') return true;
  }
  return false;
}

/** The entities named in `metadata`, in a fixed order (the order of REALTIME_ENTITY_FIELDS). */
export function entitiesOf(metadata: Record<string, string>): Array<{ field: string; value: string }> {
  const out: Array<{ field: string; value: string }> = [];
  for (const field of REALTIME_ENTITY_FIELDS) {
    const value = metadata[field];
    if (value !== undefined && value !== '') out.push({ field, value });
  }
  return out;
}

/**
 * Features from the raw state of each entity (HGETALL results, one per entity of `entitiesOf`,
 * in that order) as of `nowMs`. Pure and deterministic: the processor and the server share it.
 */
export function featuresFromState(
  entities: ReadonlyArray<{ field: string }>,
  states: ReadonlyArray<Record<string, string>>,
  nowMs: number,
): RealtimeFeatures {
  const features: RealtimeFeatures = {};
  entities.forEach(({ field }, i) => {
    const state = states[i];
    if (state) Object.assign(features, entityFeatures(field, state, nowMs));
  });
  return features;
}

/** The features of one entity (`field`) from its raw state, as of `nowMs`. */
function entityFeatures(field: string, state: Record<string, string>, nowMs: number): RealtimeFeatures {
  const features: RealtimeFeatures = {};
  // Two passes over the state (the total first) instead of a list of (label, count) pairs: no
  // allocation per label on the server's request path.
  let total = 0;
  for (const name in state) {
    if (name === DECAY_TIME_FIELD) continue;
    const c = Number(state[name]);
    if (Number.isFinite(c) && c > 0) total += c;
  }
  if (total <= 0) return features;
  // Counts are stored as decayed to the reference time `_t` (events after `_t` weigh > 1), so
  // an update is one HINCRBYFLOAT. Shares do not change with uniform decay; only the total is
  // brought to `nowMs` (exact also for nowMs < _t).
  const at = Number(state[DECAY_TIME_FIELD] ?? nowMs);
  const decay = Math.pow(2, -(nowMs - at) / REALTIME_HALF_LIFE_MS);
  const names = namesOf(field);
  features[names.logCount] = round(Math.log1p(total * decay));
  for (const name in state) {
    if (name === DECAY_TIME_FIELD) continue;
    const c = Number(state[name]);
    if (Number.isFinite(c) && c > 0) features[names.share(name)] = round(c / total);
  }
  return features;
}

/**
 * The feature names of one entity field, each built once: the server names ~20 features per
 * prediction, and a name built per request is a string to allocate and hash into the features
 * object's keys every time. Bounded: labels are per client, so the set of names is cleared when
 * it grows past what a server's clients would need.
 */
function namesOf(field: string): { logCount: string; share(label: string): string } {
  let names = fieldNames.get(field);
  if (!names) {
    const shares = new Map<string, string>();
    names = {
      logCount: `${field}.log_count`,
      share(label) {
        let name = shares.get(label);
        if (name === undefined) {
          if (shares.size >= MAX_CACHED_NAMES) shares.clear();
          shares.set(label, (name = `${field}.share:${label}`));
        }
        return name;
      },
    };
    fieldNames.set(field, names);
  }
  return names;
}
const fieldNames = new Map<string, { logCount: string; share(label: string): string }>();
const MAX_CACHED_NAMES = 50_000;

/** Rounded so that values survive JSON and ClickHouse round trips bit for bit. */
function round(x: number): number {
  return Math.round(x * 1e6) / 1e6;
}

/** Parses an ioredis HGETALL-style flat [k, v, k, v] array into an object. */
export function pairsToObject(flat: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < flat.length; i += 2) out[flat[i]!] = flat[i + 1]!;
  return out;
}

/** The answer when Redis is down or late (shared: callers only read it). */
const DEFAULTED: { features: RealtimeFeatures; defaulted: boolean } = Object.freeze({ features: Object.freeze({}), defaulted: true });
/** The answer for a request that names no entity. */
const NONE: { features: RealtimeFeatures; defaulted: boolean } = Object.freeze({ features: Object.freeze({}), defaulted: false });

/**
 * HGETALL of every key, in one command: the entity states of one event-loop turn's requests. On
 * Redis Cluster a call holds one client's keys only: they share its `{clientId}` hash tag, so the
 * script stays in one slot.
 */
const READ_STATES_LUA = "local out = {} for i = 1, #KEYS do out[i] = redis.call('HGETALL', KEYS[i]) end return out";
const READ_STATES = 'eddyReadEntityStates';

interface PendingRead {
  /** This read's entities: `Flush.readEntities[start, start + count)` (REALTIME_ENTITY_FIELDS order). */
  start: number;
  count: number;
  /** Where the answer goes: a lone read's resolve, or slot `slot` of a batch's (readMany). */
  resolve: ((r: { features: RealtimeFeatures; defaulted: boolean }) => void) | undefined;
  batch: PendingBatch | undefined;
  slot: number;
  settled: boolean;
}

/** The reads of one readMany call: one promise for all, resolved when the last one is answered. */
interface PendingBatch {
  out: Array<{ features: RealtimeFeatures; defaulted: boolean }>;
  waiting: number;
  resolve: (out: Array<{ features: RealtimeFeatures; defaulted: boolean }>) => void;
}

function answer(r: PendingRead, a: { features: RealtimeFeatures; defaulted: boolean }): void {
  if (r.batch) {
    r.batch.out[r.slot] = a;
    if (--r.batch.waiting === 0) r.batch.resolve(r.batch.out);
  } else {
    r.resolve!(a);
  }
}

/** An entity named in a turn: its Redis key, client, field (index in REALTIME_ENTITY_FIELDS) and value. */
interface Entity {
  key: string;
  clientId: string;
  fi: number;
}

/**
 * One event-loop turn's reads and the entities they name, without repeats. A turn usually holds
 * one or two requests: repeats are found by a scan while there are few entities, by a map beyond
 * that (a batch's items), so the common turn allocates three arrays and no map.
 */
class Flush {
  readonly entities: Entity[] = [];
  /** Each entity's state as Redis answered it (undefined: not answered). */
  readonly states: Array<Record<string, string> | undefined> = [];
  /** The deadline (set when the reads are sent, or start waiting for a call in flight). */
  timer: NodeJS.Timeout | undefined;
  /** Every read has been answered (finish ran). */
  done = false;
  /** The entities of every read, concatenated (see PendingRead). */
  readonly readEntities: number[] = [];
  readonly reads: PendingRead[] = [];
  /** Key -> entity, once there are more than SCAN_ENTITIES. */
  private index: Map<string, number> | undefined;

  /** The index of the entity with this Redis key, or -1 when this turn has not named it yet. */
  find(key: string): number {
    const n = this.entities.length;
    if (n <= SCAN_ENTITIES) {
      for (let i = 0; i < n; i++) if (this.entities[i]!.key === key) return i;
      return -1;
    }
    if (!this.index) {
      this.index = new Map();
      this.entities.forEach((e, i) => this.index!.set(e.key, i));
    }
    return this.index.get(key) ?? -1;
  }

  add(entity: Entity): number {
    const i = this.entities.push(entity) - 1;
    this.index?.set(entity.key, i);
    return i;
  }

  /** The entities of each client (on Redis Cluster a script call holds one client's keys: one slot). */
  byClient(indexes: readonly number[]): number[][] {
    const groups = new Map<string, number[]>();
    for (const i of indexes) {
      const clientId = this.entities[i]!.clientId;
      const group = groups.get(clientId);
      if (group) group.push(i);
      else groups.set(clientId, [i]);
    }
    return [...groups.values()];
  }
}

/** A batch's answers from kept states: by the first entity's state, then the second's (undefined: none). */
type KeptAnswers = Map<KeptState, Map<KeptState | undefined, { features: RealtimeFeatures; defaulted: boolean }>>;

/** keyOf keeps the keys of values up to this long, and at most this many (~200 bytes each: a few MB). */
const MAX_CACHED_VALUE_LENGTH = 100;
const MAX_CACHED_KEYS = 20_000;

/**
 * Script calls of one reader unanswered at once; reads asked for meanwhile wait for a reply and
 * then go together, so a slow Redis is not sent a call per event-loop turn. One call in flight
 * batched more (~4.8 requests per call instead of ~3.6) and saved CPU at max throughput, but on an
 * overloaded machine a waiting read's deadline covers two round trips and more reads defaulted;
 * with entity states kept (TrackedStates) calls are few. Four: rarely reached while Redis keeps
 * up, a bound when it does not (docs/benchmarks/server.md, "One script call in flight").
 */
const DEFAULT_MAX_IN_FLIGHT = 4;

/** Entities per turn found by a scan; a turn naming more (a batch) indexes them in a map. */
const SCAN_ENTITIES = 16;

/**
 * Reads the real-time features of requests at serving time. With `cacheEntries`, entity states
 * are kept between reads while Redis announces their changes (./tracked-states.ts): a read whose
 * entities are all kept is answered at once. The rest is coalesced: every read asked for in one
 * event-loop turn (the requests parsed from all sockets in one poll, the items of a batch) goes
 * to Redis as one script call (one per client on Redis Cluster), over the entities they name
 * without repeats and not kept, and shares one deadline timer; while DEFAULT_MAX_IN_FLIGHT calls
 * are unanswered, the reads of later turns wait for a reply and then go together. Per request
 * that was two ioredis commands, their promises, reply transforms and a timer pair: ~55 µs of CPU
 * and 13 KB allocated per prediction on the 2-core machine, the largest stage of the predict path
 * (docs/benchmarks/server.md).
 *
 * Never throws: when Redis is down or slower than `timeoutMs`, a read returns no features and
 * `defaulted: true` (the model then predicts from the text alone, and the prediction records that
 * it did). The deadline measures Redis, not this process: when the timer fires, the answer may
 * already be in the socket, unread, because the event loop was busy (a GC pause, a burst of
 * requests); timers run before the loop polls sockets. So the deadline takes effect one loop turn
 * later (setImmediate runs after the poll phase), and an answer that had arrived in time is used.
 * Measured at 5,000 req/s on the 2-core machine: 6–14 % of predictions defaulted without this.
 */
export class RealtimeFeatureReader {
  /** The reads being gathered (this turn's, or every turn's since the command in flight was sent). */
  private flush: Flush | undefined;
  /** A send() is scheduled for `flush` (setImmediate). */
  private sendScheduled = false;
  /** Script calls sent and not yet answered (a flush's calls count as one). */
  private inFlight = 0;
  private readonly maxInFlight: number;
  /** Entity states kept between reads (opts.cacheEntries; not on Redis Cluster). */
  private readonly cache: TrackedStates | undefined;
  /** One read's entity keys, fields and kept states (reused: at most one entity per field). */
  private readonly readKeys: string[] = [];
  private readonly readFields: number[] = [];
  private readonly readStates: Array<KeptState | undefined> = [];
  /** Entity keys built so far: client -> field index -> value -> key (see keyOf). */
  private readonly keys = new Map<string, Array<Map<string, string> | undefined>>();
  private cachedKeys = 0;
  /** On Redis Cluster one command per client (one slot each); otherwise one command per turn. */
  private readonly perClient: boolean;

  constructor(
    private readonly redis: RedisClient,
    private readonly keyPrefix: string,
    private readonly opts: {
      timeoutMs: number; nowMs?: () => number; maxInFlight?: number;
      /** Entity states kept between reads (TrackedStates); 0 or absent: none. */
      cacheEntries?: number;
      /** Where entity lookups are counted while states are kept: answered from a kept state, or asked of Redis. */
      cacheCounts?: { hit: CounterCell; miss: CounterCell };
      /** Told when Redis refuses client tracking (states are then not kept). */
      logger?: Logger;
    },
  ) {
    this.maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
    this.perClient = (redis as { isCluster?: boolean }).isCluster === true;
    if (opts.cacheEntries && !this.perClient) {
      this.cache = new TrackedStates(redis as Redis, opts.cacheEntries, opts.cacheCounts ?? { hit: { n: 0 }, miss: { n: 0 } }, opts.logger);
    }
    if (typeof (redis as unknown as Record<string, unknown>)[READ_STATES] !== 'function') {
      redis.defineCommand(READ_STATES, { lua: READ_STATES_LUA });
    }
  }

  read(clientId: string, metadata: Record<string, string>): Promise<{ features: RealtimeFeatures; defaulted: boolean }> {
    if (!namesAnEntity(metadata)) return Promise.resolve(NONE);
    return new Promise((resolve) => this.enqueue(clientId, metadata, resolve, undefined, 0));
  }

  /** The features of several requests of one client (a batch's items), in order: one promise for all. */
  readMany(clientId: string, metadatas: ReadonlyArray<Record<string, string>>): Promise<Array<{ features: RealtimeFeatures; defaulted: boolean }>> {
    const out: Array<{ features: RealtimeFeatures; defaulted: boolean }> = new Array(metadatas.length);
    let waiting = 0;
    for (let i = 0; i < metadatas.length; i++) {
      if (namesAnEntity(metadatas[i]!)) waiting++;
      else out[i] = NONE;
    }
    if (waiting === 0) return Promise.resolve(out);
    return new Promise((resolve) => {
      const batch: PendingBatch = { out, waiting, resolve };
      const shared: KeptAnswers | undefined = this.cache?.live ? new Map() : undefined;
      for (let i = 0; i < metadatas.length; i++) {
        if (out[i] !== NONE) this.enqueue(clientId, metadatas[i]!, undefined, batch, i, shared);
      }
    });
  }

  private enqueue(
    clientId: string, metadata: Record<string, string>, resolve: PendingRead['resolve'], batch: PendingBatch | undefined, slot: number,
    shared?: KeptAnswers,
  ): void {
    const read: PendingRead = { start: 0, count: 0, resolve, batch, slot, settled: false };
    const cache = this.cache?.live ? this.cache : undefined;
    const wall = cache ? Date.now() : 0;
    let n = 0;
    let kept = 0;
    for (let fi = 0; fi < REALTIME_ENTITY_FIELDS.length; fi++) {
      const value = metadata[REALTIME_ENTITY_FIELDS[fi]!];
      if (value === undefined || value === '') continue;
      let key: string;
      try {
        key = this.keyOf(clientId, fi, value);
      } catch {
        // Never throws (a read must not fail a prediction): a key that cannot be built defaults the read.
        read.settled = true;
        answer(read, DEFAULTED);
        return;
      }
      const state = cache?.get(key, wall);
      if (state) kept++;
      this.readKeys[n] = key;
      this.readFields[n] = fi;
      this.readStates[n++] = state;
    }
    if (cache) {
      cache.counts.hit.n += kept;
      cache.counts.miss.n += n - kept;
      if (kept === n) {
        // Every entity's state is kept and current: answered now, no call, no wait.
        read.settled = true;
        answer(read, this.keptAnswer(n, this.opts.nowMs?.() ?? wall, shared));
        return;
      }
    }
    let f = this.flush;
    // A flush past its deadline (it waited for a reply that did not come) takes no more reads.
    if (!f || f.done) {
      f = this.flush = new Flush();
      this.scheduleSend();
    }
    read.start = f.readEntities.length;
    for (let j = 0; j < n; j++) {
      const key = this.readKeys[j]!;
      // The turn's entities are told apart by key (the reader's own key strings, mostly the same instances).
      let i = f.find(key);
      if (i < 0) {
        i = f.add({ key, clientId, fi: this.readFields[j]! });
        // A kept state is not asked for again.
        const kept = this.readStates[j];
        if (kept) f.states[i] = kept.state;
      }
      f.readEntities.push(i);
    }
    read.count = n;
    f.reads.push(read);
  }

  /**
   * The answer of a read whose `n` entities (readStates) are all kept, as of `now`. Each kept
   * state's features are computed once per clock tick (a batch's items name the same few
   * requesters and channels), and within one batch (`shared`) items naming the same kept states
   * share one answer, which callers only read (as within a turn). A state read again from Redis
   * is a new KeptState, so nothing computed from the old one is reused.
   */
  private keptAnswer(n: number, now: number, shared: KeptAnswers | undefined): { features: RealtimeFeatures; defaulted: boolean } {
    const first = this.readStates[0]!;
    const second = n === 2 ? this.readStates[1]! : undefined;
    // Keyed by at most two states (REALTIME_ENTITY_FIELDS has two fields).
    if (n > 2) shared = undefined;
    const byFirst = shared?.get(first);
    const known = byFirst?.get(second);
    if (known) return known;
    const features: RealtimeFeatures = {};
    for (let j = 0; j < n; j++) {
      const kept = this.readStates[j]!;
      if (kept.features === undefined || kept.featuresAt !== now) {
        kept.features = entityFeatures(REALTIME_ENTITY_FIELDS[this.readFields[j]!]!, kept.state, now);
        kept.featuresAt = now;
      }
      for (const name in kept.features) features[name] = kept.features[name]!;
    }
    const a = { features, defaulted: false };
    if (shared) {
      if (byFirst) byFirst.set(second, a);
      else shared.set(first, new Map([[second, a]]));
    }
    return a;
  }

  /**
   * The Redis key of an entity, built once: a key is a few concatenations and an
   * encodeURIComponent (~300 bytes per request for its two entities), and the same requesters
   * and channels come back all day. Bounded: only short values are kept, and the whole cache is
   * dropped once it holds MAX_CACHED_KEYS of them.
   */
  private keyOf(clientId: string, fi: number, value: string): string {
    let byField = this.keys.get(clientId);
    const known = byField?.[fi]?.get(value);
    if (known !== undefined) return known;
    const key = featureKeys.entity(this.keyPrefix, clientId, REALTIME_ENTITY_FIELDS[fi]!, value);
    if (value.length > MAX_CACHED_VALUE_LENGTH) return key;
    if (this.cachedKeys >= MAX_CACHED_KEYS) {
      this.keys.clear();
      this.cachedKeys = 0;
      byField = undefined;
    }
    if (!byField) this.keys.set(clientId, (byField = []));
    (byField[fi] ??= new Map()).set(value, key);
    this.cachedKeys++;
    return key;
  }

  /**
   * Sends the gathered reads after this turn (setImmediate: the requests parsed from every socket
   * of this poll join them), unless maxInFlight calls are unanswered: then the reply of the
   * oldest sends them (Redis answers one connection's commands in order, so they would have
   * waited behind it there anyway; here they share one call and one write instead of one each).
   */
  private scheduleSend(): void {
    if (this.sendScheduled) return;
    this.sendScheduled = true;
    setImmediate(() => {
      this.sendScheduled = false;
      const f = this.flush;
      if (!f || f.done) return;
      if (this.inFlight < this.maxInFlight) this.send();
      // Waiting for Redis to answer the call in flight: Redis's time, so the deadline runs.
      else this.startDeadline(f);
    });
  }

  /**
   * The deadline of `f`'s reads, from when they are sent (or wait for Redis): it measures Redis,
   * not this process. It takes effect a turn later (setImmediate): an answer already in the
   * socket is read first (class comment).
   */
  private startDeadline(f: Flush): void {
    f.timer ??= setTimeout(() => setImmediate(() => this.finish(f)), this.opts.timeoutMs);
  }

  private send(): void {
    const f = this.flush!;
    this.flush = undefined;
    // The entities whose state is not kept (see TrackedStates).
    const asked: number[] = [];
    for (let i = 0; i < f.entities.length; i++) if (f.states[i] === undefined) asked.push(i);
    // Defaulted at its deadline while it waited for a reply, or nothing to ask: answered as it is.
    if (f.done || asked.length === 0) {
      this.finish(f);
      return;
    }
    this.startDeadline(f);
    // One script call with every key, or one per client on Redis Cluster.
    const groups = this.perClient ? f.byClient(asked) : [asked];
    let pending = groups.length;
    const command = (this.redis as unknown as Record<string, (...args: unknown[]) => Promise<string[][]>>)[READ_STATES]!;
    const cache = this.cache;
    const mark = cache?.beginCall();
    this.inFlight++;
    const settled = () => {
      if (--pending > 0) return;
      this.inFlight--;
      if (mark) cache!.endCall(mark);
      this.finish(f);
      if (this.flush) this.scheduleSend();
    };
    const call = (indexes: number[]) => {
      const keys = indexes.map((i) => f.entities[i]!.key);
      try {
        // A late failure after the deadline is swallowed by the same handler (never unhandled).
        command.call(this.redis, keys.length, ...keys).then((replies) => {
          const at = mark ? Date.now() : 0;
          for (let j = 0; j < keys.length; j++) {
            const state = pairsToObject(replies[j] ?? []);
            f.states[indexes[j]!] = state;
            if (mark) cache!.keep(mark, keys[j]!, state, at);
          }
          settled();
        }, settled);
      } catch {
        settled();
      }
    };
    for (const indexes of groups) call(indexes);
  }

  /** Whether entity states are kept between reads now (opts.cacheEntries, tracking set up). */
  get caching(): boolean {
    return this.cache?.live ?? false;
  }

  /** Entity lookups answered from kept states and asked of Redis while states were kept (since start). */
  get cacheCounts(): { hits: number; misses: number } {
    return { hits: this.cache?.counts.hit.n ?? 0, misses: this.cache?.counts.miss.n ?? 0 };
  }

  /** Stops keeping states (closes the invalidation connection; the reading connection is the caller's). */
  close(): void {
    this.cache?.close();
  }

  /** Answers every read of `f` not answered yet: from the states read, defaulted where one is missing. Once. */
  private finish(f: Flush): void {
    if (f.done) return;
    f.done = true;
    clearTimeout(f.timer);
    const states = f.states;
    const now = this.opts.nowMs?.() ?? Date.now();
    // Entities shared by several requests are turned into features once, and requests naming
    // the same entities (a batch's items, mostly) share one answer: callers only read it.
    const perKey: Array<RealtimeFeatures | undefined> = new Array(f.entities.length);
    let shared: Map<number, { features: RealtimeFeatures; defaulted: boolean }> | undefined;
    const n = f.entities.length;
    const entities = f.readEntities;
    for (const r of f.reads) {
      if (r.settled) continue;
      r.settled = true;
      const end = r.start + r.count;
      let missing = false;
      for (let j = r.start; j < end; j++) if (states[entities[j]!] === undefined) missing = true;
      if (missing) {
        answer(r, DEFAULTED);
        continue;
      }
      // Which entities (at most one per field, in field order): a number, for up to two fields.
      const combination = r.count === 1 ? entities[r.start]! : r.count === 2 ? n + entities[r.start]! * n + entities[r.start + 1]! : -1;
      const known = combination >= 0 ? shared?.get(combination) : undefined;
      if (known) {
        answer(r, known);
        continue;
      }
      const features: RealtimeFeatures = {};
      for (let j = r.start; j < end; j++) {
        const i = entities[j]!;
        const own = perKey[i] ?? (perKey[i] = entityFeatures(REALTIME_ENTITY_FIELDS[f.entities[i]!.fi]!, states[i]!, now));
        for (const name in own) features[name] = own[name]!;
      }
      const a = { features, defaulted: false };
      if (combination >= 0 && f.reads.length > 1) (shared ??= new Map()).set(combination, a);
      answer(r, a);
    }
  }

}

/**
 * Reads the real-time features of one request (tests, tools): a reader of its own, so nothing
 * is coalesced with other callers. The server keeps one RealtimeFeatureReader.
 */
export function readRealtimeFeatures(
  redis: RedisClient,
  keyPrefix: string,
  clientId: string,
  metadata: Record<string, string>,
  opts: { timeoutMs: number; nowMs?: number },
): Promise<{ features: RealtimeFeatures; defaulted: boolean }> {
  const at = opts.nowMs;
  return new RealtimeFeatureReader(redis, keyPrefix, { timeoutMs: opts.timeoutMs, nowMs: at === undefined ? undefined : () => at }).read(clientId, metadata);
}
