import type { Redis } from 'ioredis';
import type { CounterCell } from '../common/metrics.ts';
import type { Logger } from '../common/log.ts';
import { errorMessage } from '../common/errors.ts';
import { duplicateRedis } from '../common/redis.ts';

/**
 * No kept state is used after this long, invalidated or not (defence in depth: a lost invalidation
 * is stale at most this long; decay is applied at read time, so only a new example counts late).
 * 10 s re-read ~8 % of the benchmark's states at 3,000 req/s over 5,000 entities.
 */
const MAX_STATE_AGE_MS = 60_000;

/** An entity state kept between reads, and its features as of the last read's clock (a batch's items read it in the same millisecond). */
export interface KeptState {
  state: Record<string, string>;
  /** When it was read from Redis (Date.now()). */
  at: number;
  /** entityFeatures of the state as of `featuresAt` (epoch ms); never handed to callers, only copied. */
  features: Record<string, number> | undefined;
  featuresAt: number;
}

/** What a script call in flight needs to know when it is answered: may its states be kept? */
interface CallMark {
  /** The cache's epoch when the call was sent while tracking was on (-1: it was not). */
  epoch: number;
  /** Keys invalidated while the call was in flight (a change after Redis read them may be announced before the answer is read). */
  invalidated: Set<string> | undefined;
  /** Everything was invalidated meanwhile (FLUSHDB, or a message that named no keys). */
  all: boolean;
}

/**
 * Entity states kept in this process between reads, for as long as Redis announces every change
 * to them: server-assisted client-side caching in its RESP2 form. The reading connection has
 * CLIENT TRACKING on, redirecting invalidations to a second connection subscribed to
 * `__redis__:invalidate`; every key a read names is then tracked (keys read by the script
 * included, missing keys too) and its first change after the read (a processor's update, expiry,
 * deletion, a flush) sends its name, so the state is dropped and the next read goes to Redis.
 * While either connection is down, or not yet set up again after a reconnection (a new
 * connection has no tracking, and invalidations sent meanwhile are lost), nothing is kept or
 * used. Bounded: the oldest state goes past `maxEntries`, and none is used past MAX_STATE_AGE_MS.
 */
export class TrackedStates {
  private readonly states = new Map<string, KeptState>();
  /** Tracking is on and its invalidations arrive: states may be kept and used. */
  live = false;
  /** Bumped whenever tracking may have lapsed: answers to calls sent before are not kept. */
  private epoch = 0;
  private readonly subscriber: Redis;
  private readonly open = new Set<CallMark>();
  private closed = false;
  /** The invalidation connection's client id once it is subscribed (per connection: a reconnection is a new client). */
  private subscriberId: string | undefined;
  private readonly onClose = () => this.reset();
  /** One setup at a time (both connections come back together after a Redis restart); a 'ready' meanwhile runs it again after. */
  private settingUp = false;
  private setUpAgain = false;
  private readonly onReady = () => {
    if (this.settingUp) {
      this.setUpAgain = true;
      return;
    }
    this.settingUp = true;
    void this.setup().finally(() => {
      this.settingUp = false;
      if (this.setUpAgain) {
        this.setUpAgain = false;
        this.onReady();
      }
    });
  };

  constructor(
    private readonly redis: Redis, private readonly maxEntries: number, readonly counts: { hit: CounterCell; miss: CounterCell },
    private readonly logger?: Logger,
  ) {
    // Resubscribed by setup (CLIENT ID first: a subscribed RESP2 connection cannot ask for it).
    this.subscriber = duplicateRedis(redis, { autoResubscribe: false, enableOfflineQueue: false, maxRetriesPerRequest: 0 }) as Redis;
    this.subscriber.on('error', () => undefined); // the reading connection's owner logs Redis errors
    this.subscriber.on('messageBuffer', (_channel: Buffer, message: unknown) => this.invalidate(message));
    this.subscriber.on('close', () => (this.subscriberId = undefined));
    for (const connection of [redis, this.subscriber]) {
      connection.on('close', this.onClose);
      connection.on('ready', this.onReady);
    }
    this.subscriber.connect().catch(() => undefined); // retried by ioredis; setup runs on 'ready'
  }

  /** The kept state of `key`, if there is one that may be used. */
  get(key: string, now: number): KeptState | undefined {
    const kept = this.states.get(key);
    if (kept === undefined) return undefined;
    if (now - kept.at < MAX_STATE_AGE_MS) return kept;
    this.states.delete(key);
    return undefined;
  }

  beginCall(): CallMark {
    const mark: CallMark = { epoch: this.live ? this.epoch : -1, invalidated: undefined, all: false };
    this.open.add(mark);
    return mark;
  }

  /** Keeps what a call read for `key`, unless tracking lapsed or the key changed since the call was sent. */
  keep(mark: CallMark, key: string, state: Record<string, string>, now: number): void {
    if (!this.live || mark.epoch !== this.epoch || mark.all || mark.invalidated?.has(key)) return;
    if (this.states.size >= this.maxEntries && !this.states.has(key)) this.states.delete(this.states.keys().next().value!);
    this.states.set(key, { state, at: now, features: undefined, featuresAt: 0 });
  }

  endCall(mark: CallMark): void {
    this.open.delete(mark);
  }

  private invalidate(message: unknown): void {
    if (!Array.isArray(message)) {
      // A flush (null) or a shape not understood: nothing kept can be trusted.
      this.states.clear();
      for (const mark of this.open) mark.all = true;
      return;
    }
    for (const name of message) {
      const key = String(name);
      this.states.delete(key);
      for (const mark of this.open) (mark.invalidated ??= new Set()).add(key);
    }
  }

  private reset(): void {
    this.live = false;
    this.epoch++;
    this.states.clear();
  }

  /** Once both connections are ready: subscribe, turn tracking on for the reading connection, then use kept states. */
  private async setup(): Promise<void> {
    this.reset();
    const epoch = this.epoch;
    if (this.closed || this.redis.status !== 'ready' || this.subscriber.status !== 'ready') return;
    try {
      // The subscriber's id, asked once per connection (a subscribed RESP2 connection cannot answer CLIENT ID).
      if (this.subscriberId === undefined) {
        const id = String(await this.subscriber.client('ID'));
        await this.subscriber.subscribe(INVALIDATIONS);
        this.subscriberId = id;
      }
      await this.redis.call('CLIENT', 'TRACKING', 'on', 'REDIRECT', this.subscriberId);
      if (epoch === this.epoch && !this.closed) this.live = true;
    } catch (err) {
      // Stays off until the next 'ready' of either connection (reads go to Redis meanwhile). A
      // Redis older than 6, or one whose CLIENT command is disabled, refuses every time: say so.
      if (!this.closed && this.redis.status === 'ready' && this.subscriber.status === 'ready') {
        this.logger?.warn({ err: errorMessage(err) }, 'entity states are not kept: Redis refused client tracking (every feature read goes to Redis)');
      }
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    this.redis.off('close', this.onClose);
    this.redis.off('ready', this.onReady);
    // The reading connection is its owner's: it stops collecting keys for announcements no one hears.
    if (this.redis.status === 'ready') this.redis.call('CLIENT', 'TRACKING', 'off').catch(() => undefined);
    this.subscriber.disconnect();
  }
}

const INVALIDATIONS = '__redis__:invalidate';
