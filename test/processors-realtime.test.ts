import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { featureKeys } from '../common/keyspace.ts';
import { featuresFromState, readRealtimeFeatures, RealtimeFeatureReader, REALTIME_HALF_LIFE_MS } from '../featurizer/realtime.ts';
import { freePort, privateRedis, type PrivateServer } from './processors-support.ts';
import { waitFor } from './helpers.ts';

// A private Redis: the test blocks it with a spinning script, which must never happen to the shared one.
let server: PrivateServer;
let redis: Redis;

beforeAll(async () => {
  server = await privateRedis();
  await server.start();
  redis = new Redis(server.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
  redis.on('error', () => undefined);
  await new Promise((r) => redis.once('ready', r));
}, 60_000);

afterAll(async () => {
  redis?.disconnect();
  await server?.cleanup();
});

/** What `read` returns, and the keys of each script call the connection sent meanwhile (they reach the real Redis unchanged). */
async function scriptCalls<T>(connection: Redis, read: () => Promise<T>): Promise<{ got: T; calls: string[][] }> {
  const calls: string[][] = [];
  const send = connection.sendCommand.bind(connection);
  connection.sendCommand = ((command: { name: string; args: unknown[] }, stream?: unknown) => {
    if (command.name === 'evalsha') calls.push(command.args.slice(2, 2 + Number(command.args[1])).map(String));
    return send(command as never, stream as never);
  }) as typeof connection.sendCommand;
  try {
    return { got: await read(), calls };
  } finally {
    connection.sendCommand = send;
  }
}

/**
 * Blocks the private Redis with a script spinning for `ms` (DEBUG SLEEP is disabled by default in
 * Redis 7); resolves once Redis is blocked (a PING from a third connection gets no answer in
 * 20 ms: no fixed sleep), with a promise of the spin's end.
 */
async function blockRedis(ms: number): Promise<{ over: Promise<void> }> {
  const blocker = new Redis(server.url);
  blocker.on('error', () => undefined);
  const spin = `local s = redis.call('TIME') local t0 = s[1] * 1000000 + s[2] repeat s = redis.call('TIME') until s[1] * 1000000 + s[2] - t0 > ${ms * 1000} return 1`;
  const over = blocker.eval(spin, 0).catch(() => undefined).then(() => blocker.disconnect());
  const probe = new Redis(server.url);
  probe.on('error', () => undefined);
  await waitFor('the spin to block Redis', async () =>
    (await Promise.race([probe.ping().then(() => 'answered'), new Promise((r) => setTimeout(() => r('blocked'), 20))])) === 'blocked', 5_000, 0);
  probe.disconnect();
  return { over };
}

/** Lets the event loop run one turn (the reader sends what a turn gathered in its check phase). */
const nextTurn = () => new Promise((r) => setImmediate(r));

describe('readRealtimeFeatures (the server side of contract 2)', () => {
  it('reads the features the processor computes, from the same state', async () => {
    const now = Date.UTC(2026, 10, 1);
    await redis.hset(featureKeys.entity('rt', 'c1', 'requester', 'ann'), { _t: String(now - REALTIME_HALF_LIFE_MS), Network: '3', Hardware: '1' });
    const r = await readRealtimeFeatures(redis, 'rt', 'c1', { requester: 'ann', channel: 'never-seen', other: 'x' }, { timeoutMs: 1000, nowMs: now });
    expect(r.defaulted).toBe(false);
    expect(r.features).toEqual({ 'requester.share:Network': 0.75, 'requester.share:Hardware': 0.25, 'requester.log_count': expect.closeTo(Math.log1p(2), 5) });
    expect(r.features).toEqual(featuresFromState([{ field: 'requester' }], [{ _t: String(now - REALTIME_HALF_LIFE_MS), Network: '3', Hardware: '1' }], now));
    expect(await readRealtimeFeatures(redis, 'rt', 'c1', {}, { timeoutMs: 1000 })).toEqual({ features: {}, defaulted: false });
  });

  it('never throws: a slow Redis or a dead one gives defaults within the timeout', async () => {
    // 2 s: long enough that the read below still meets a blocked Redis when a loaded machine sees
    // the block late (with 500 ms, a fresh-clone CI once saw the spin over before the read was sent).
    const { over } = await blockRedis(2_000);
    const r = await readRealtimeFeatures(redis, 'rt', 'c1', { requester: 'ann' }, { timeoutMs: 30 });
    expect(r).toEqual({ features: {}, defaulted: true });
    await over;

    const dead = new Redis(await freePort(), '127.0.0.1', { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true, retryStrategy: () => null });
    dead.on('error', () => undefined);
    expect(await readRealtimeFeatures(dead, 'rt', 'c1', { requester: 'ann' }, { timeoutMs: 200 })).toEqual({ features: {}, defaulted: true });
    dead.disconnect();
  });

  it('uses an answer that arrived in time even when this process was too busy to read it before the deadline', async () => {
    const now = Date.UTC(2026, 10, 1);
    await redis.hset(featureKeys.entity('rt', 'c2', 'requester', 'bob'), { _t: String(now), Network: '1' });
    await redis.ping(); // connected and warm
    const read = readRealtimeFeatures(redis, 'rt', 'c2', { requester: 'bob' }, { timeoutMs: 5, nowMs: now });
    // The event loop is busy for 60 ms (a GC pause, a burst of requests): Redis answers within a
    // millisecond, but the reply is read only after the loop is free, when the deadline has passed.
    const until = performance.now() + 60;
    while (performance.now() < until) { /* busy */ }
    const r = await read;
    expect(r.defaulted).toBe(false);
    expect(r.features['requester.share:Network']).toBe(1);
  });

  it('coalesces the reads of one event-loop turn: one Redis command (one per client on a cluster), each entity read once, each request its own features', async () => {
    const now = Date.UTC(2026, 10, 1);
    await redis.hset(featureKeys.entity('co', 'c1', 'requester', 'ann'), { _t: String(now), Network: '3', Hardware: '1' });
    await redis.hset(featureKeys.entity('co', 'c1', 'channel', 'chat'), { _t: String(now), Hardware: '2' });
    await redis.hset(featureKeys.entity('co', 'c2', 'requester', 'ann'), { _t: String(now), Printing: '5' });
    const requests: Array<[string, Record<string, string>]> = [
      ['c1', { requester: 'ann', channel: 'chat' }],
      ['c1', { requester: 'ann' }],
      ['c2', { requester: 'ann', channel: 'chat' }],
      ['c1', { requester: 'bob', channel: 'chat' }],
      ['c1', {}],
    ];
    const key = (client: string, field: string, value: string) => featureKeys.entity('co', client, field, value);
    const readThrough = (connection: Redis) => scriptCalls(connection, () => {
      const reader = new RealtimeFeatureReader(connection, 'co', { timeoutMs: 1000, nowMs: () => now });
      return Promise.all(requests.map(([client, metadata]) => reader.read(client, metadata)));
    });

    const { got, calls } = await readThrough(redis);
    expect(calls).toEqual([[key('c1', 'requester', 'ann'), key('c1', 'channel', 'chat'), key('c2', 'requester', 'ann'), key('c2', 'channel', 'chat'), key('c1', 'requester', 'bob')]]);
    // Each answer is what a read of its own gives.
    for (const [i, [client, metadata]] of requests.entries()) {
      expect(got[i]).toEqual(await readRealtimeFeatures(redis, 'co', client, metadata, { timeoutMs: 1000, nowMs: now }));
    }
    expect(got[0]!.features).toEqual({ 'requester.log_count': expect.any(Number), 'requester.share:Network': 0.75, 'requester.share:Hardware': 0.25, 'channel.log_count': expect.any(Number), 'channel.share:Hardware': 1 });
    expect(got[2]!.features).toEqual({ 'requester.log_count': expect.any(Number), 'requester.share:Printing': 1 });
    expect(got[4]).toEqual({ features: {}, defaulted: false });
    // A restarted Redis has forgotten the script: the read loads it again instead of defaulting.
    await redis.script('FLUSH');
    expect((await readThrough(redis)).got).toEqual(got);

    // A cluster client (ioredis's Cluster says isCluster): one command per client, each within one hash tag.
    const clustered = redis.duplicate();
    clustered.on('error', () => undefined);
    Object.defineProperty(clustered, 'isCluster', { value: true });
    try {
      await new Promise((r) => clustered.once('ready', r));
      const perClient = await readThrough(clustered);
      expect(perClient.calls).toEqual([
        [key('c1', 'requester', 'ann'), key('c1', 'channel', 'chat'), key('c1', 'requester', 'bob')],
        [key('c2', 'requester', 'ann'), key('c2', 'channel', 'chat')],
      ]);
      expect(perClient.got).toEqual(got);
    } finally {
      clustered.disconnect();
    }
  });

  it('readMany answers a batch in order, with one command, items that name no entity included', async () => {
    const now = Date.UTC(2026, 10, 1);
    await redis.hset(featureKeys.entity('rm', 'c1', 'requester', 'ann'), { _t: String(now), Network: '3', Hardware: '1' });
    await redis.hset(featureKeys.entity('rm', 'c1', 'channel', 'chat'), { _t: String(now), Hardware: '2' });
    const reader = new RealtimeFeatureReader(redis, 'rm', { timeoutMs: 1000, nowMs: () => now });
    const items: Array<Record<string, string>> = [{ requester: 'ann', channel: 'chat' }, {}, { requester: 'bob' }, { channel: 'chat', other: 'x' }, { requester: 'ann' }];
    const before = Number((await redis.info('commandstats')).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0);
    const got = await reader.readMany('c1', items);
    const after = Number((await redis.info('commandstats')).match(/cmdstat_evalsha:calls=(\d+)/)?.[1] ?? 0);
    expect(after - before).toBe(1);
    expect(got).toHaveLength(items.length);
    for (const [i, metadata] of items.entries()) {
      expect(got[i]).toEqual(await readRealtimeFeatures(redis, 'rm', 'c1', metadata, { timeoutMs: 1000, nowMs: now }));
    }
    expect(got[1]).toEqual({ features: {}, defaulted: false });
    expect(got[2]).toEqual({ features: {}, defaulted: false });
    expect(got[0]!.features['requester.share:Network']).toBe(0.75);
    expect(await reader.readMany('c1', [{}, {}])).toEqual([{ features: {}, defaulted: false }, { features: {}, defaulted: false }]);
  });

  it('readMany names each entity once in its command, also in a batch naming more entities than a turn scans for repeats, and answers items naming the same entities alike', async () => {
    const now = Date.UTC(2026, 10, 1);
    // 120 items over 20 requesters and 3 channels, repeated in an order that crosses the 16 entities
    // the reader compares one by one before it indexes them; every combination twice (items naming
    // the same entities share one answer), every 8th item names its requester only.
    const items = Array.from({ length: 120 }, (_, i): Record<string, string> => (i % 8 === 7 ? { requester: `r${(i * 7) % 20}` } : { requester: `r${(i * 7) % 20}`, channel: `ch${i % 3}` }));
    for (let r = 0; r < 20; r += 2) await redis.hset(featureKeys.entity('rb', 'c1', 'requester', `r${r}`), { _t: String(now), Network: String(r + 1), Hardware: '1' });
    await redis.hset(featureKeys.entity('rb', 'c1', 'channel', 'ch1'), { _t: String(now), Printing: '2' });
    const { got, calls } = await scriptCalls(redis, () => new RealtimeFeatureReader(redis, 'rb', { timeoutMs: 1000, nowMs: () => now }).readMany('c1', items));
    expect(calls).toHaveLength(1);
    expect(calls[0]).toHaveLength(23);
    expect(new Set(calls[0]).size).toBe(23);
    for (const [i, metadata] of items.entries()) {
      expect(got[i]).toEqual(await readRealtimeFeatures(redis, 'rb', 'c1', metadata, { timeoutMs: 1000, nowMs: now }));
    }
    expect(got[1]!.features['channel.share:Printing']).toBe(1);
  });

  it('builds each entity key once per reader: later turns name the same keys, per client and field, and a value too long to keep is named right each time', async () => {
    const now = Date.UTC(2026, 10, 1);
    await redis.hset(featureKeys.entity('kc', 'c1', 'requester', 'ann'), { _t: String(now), Network: '3' });
    await redis.hset(featureKeys.entity('kc', 'c2', 'requester', 'ann'), { _t: String(now), Printing: '1' });
    const reader = new RealtimeFeatureReader(redis, 'kc', { timeoutMs: 1000, nowMs: () => now });
    const key = (client: string, field: string, value: string) => featureKeys.entity('kc', client, field, value);
    const long = 'x'.repeat(150);
    // One turn each: the first builds the keys, the later ones find them (c2's ann, and ann as a channel, are other keys).
    const turns: Array<[string, Record<string, string>, string[]]> = [
      ['c1', { requester: 'ann', channel: long }, [key('c1', 'requester', 'ann'), key('c1', 'channel', long)]],
      ['c1', { requester: 'ann', channel: long }, [key('c1', 'requester', 'ann'), key('c1', 'channel', long)]],
      ['c2', { requester: 'ann' }, [key('c2', 'requester', 'ann')]],
      ['c1', { channel: 'ann' }, [key('c1', 'channel', 'ann')]],
      ['c1', { requester: 'ann' }, [key('c1', 'requester', 'ann')]],
    ];
    for (const [client, metadata, keys] of turns) {
      const { got, calls } = await scriptCalls(redis, () => reader.read(client, metadata));
      expect(calls).toEqual([keys]);
      expect(got).toEqual(await readRealtimeFeatures(redis, 'kc', client, metadata, { timeoutMs: 1000, nowMs: now }));
    }
  });

  it('an entity value with lone surrogates names the key its UTF-8 round trip names, also when the 200-character cut splits a pair', async () => {
    const now = Date.UTC(2026, 10, 1);
    // What the feature processor keys after Avro (UTF-8) turned the lone surrogate into U+FFFD.
    await redis.hset(featureKeys.entity('ws', 'c1', 'requester', 'a\ufffdb'), { _t: String(now), Network: '1' });
    const r = await readRealtimeFeatures(redis, 'ws', 'c1', { requester: 'a\ud800b' }, { timeoutMs: 1000, nowMs: now });
    expect(r).toEqual({ features: { 'requester.log_count': expect.any(Number), 'requester.share:Network': 1 }, defaulted: false });
    expect(featureKeys.entity('ws', 'c1', 'requester', 'a\ud800b')).toBe(featureKeys.entity('ws', 'c1', 'requester', 'a\ufffdb'));
    // 199 characters, then an astral character: the cut at 200 leaves half of it.
    const long = `${'x'.repeat(199)}😀tail`;
    expect(() => featureKeys.entity('ws', 'c1', 'requester', long)).not.toThrow();
    expect((await readRealtimeFeatures(redis, 'ws', 'c1', { requester: long, channel: '\udc00' }, { timeoutMs: 1000, nowMs: now })).defaulted).toBe(false);
  });

  it('sends the reads of later turns together while a command is unanswered, and each gets its own answer', async () => {
    const now = Date.UTC(2026, 10, 1);
    const key = (value: string) => featureKeys.entity('fl', 'c1', 'requester', value);
    for (const name of ['ann', 'bob', 'cat']) await redis.hset(key(name), { _t: String(now), [`Team-${name}`]: '1' });
    const reader = new RealtimeFeatureReader(redis, 'fl', { timeoutMs: 10_000, nowMs: () => now, maxInFlight: 1 });
    const { got, calls } = await scriptCalls(redis, async () => {
      const { over } = await blockRedis(300);
      // ann's command is sent and waits in the blocked Redis; bob and cat come in later turns.
      const ann = reader.read('c1', { requester: 'ann' });
      await nextTurn();
      const bob = reader.read('c1', { requester: 'bob' });
      await nextTurn();
      const cat = reader.read('c1', { requester: 'cat' });
      await over;
      return Promise.all([ann, bob, cat]);
    });
    expect(calls).toEqual([[key('ann')], [key('bob'), key('cat')]]);
    for (const [i, name] of ['ann', 'bob', 'cat'].entries()) {
      expect(got[i]).toEqual({ features: { 'requester.log_count': expect.any(Number), [`requester.share:Team-${name}`]: 1 }, defaulted: false });
    }
  });

  it('a read waiting behind an unanswered command is defaulted at its own deadline and never sent; reads after it are sent', async () => {
    const now = Date.UTC(2026, 10, 1);
    const key = (value: string) => featureKeys.entity('fd', 'c1', 'requester', value);
    await redis.hset(key('dan'), { _t: String(now), Network: '1' });
    const reader = new RealtimeFeatureReader(redis, 'fd', { timeoutMs: 50, nowMs: () => now, maxInFlight: 1 });
    const { got, calls } = await scriptCalls(redis, async () => {
      const { over } = await blockRedis(1_500);
      const first = reader.read('c1', { requester: 'ann' });
      await nextTurn();
      const waiting = reader.read('c1', { requester: 'bob' });
      const t = performance.now();
      const answers = await Promise.all([first, waiting]);
      const waited = performance.now() - t;
      await over;
      // Once Redis answered the first command, a new read is sent and answered from Redis.
      const later = await reader.read('c1', { requester: 'dan' });
      return { answers, waited, later };
    });
    expect(got.answers).toEqual([{ features: {}, defaulted: true }, { features: {}, defaulted: true }]);
    expect(got.waited).toBeLessThan(1_000); // at its deadline (50 ms), not when Redis was free again (1.5 s)
    expect(got.later).toEqual({ features: { 'requester.log_count': expect.any(Number), 'requester.share:Network': 1 }, defaulted: false });
    expect(calls).toEqual([[key('ann')], [key('dan')]]);
  });

  describe('kept entity states (client-side caching with CLIENT TRACKING)', () => {
    const now = Date.UTC(2026, 10, 1);
    const key = (prefix: string, value: string) => featureKeys.entity(prefix, 'c1', 'requester', value);
    /** A reader keeping states, once tracking is set up; closed by the caller. */
    const cachingReader = async (prefix: string) => {
      const reader = new RealtimeFeatureReader(redis, prefix, { timeoutMs: 1000, nowMs: () => now, cacheEntries: 100 });
      await waitFor('tracking to be set up', async () => reader.caching, 5_000, 10);
      return reader;
    };
    /** A read, and the script calls it sent. */
    const readOnce = (reader: RealtimeFeatureReader, metadata: Record<string, string>) => scriptCalls(redis, () => reader.read('c1', metadata));

    it('answers a read of known entities without Redis, and reads them again once Redis announces a change, an expiry or a flush', async () => {
      const writer = redis.duplicate();
      await redis.hset(key('kk', 'ann'), { _t: String(now), Network: '1' });
      const reader = await cachingReader('kk');
      try {
        const first = await readOnce(reader, { requester: 'ann', channel: 'chat' }); // chat: never seen (kept as missing)
        expect(first.calls).toEqual([[key('kk', 'ann'), featureKeys.entity('kk', 'c1', 'channel', 'chat')]]);
        const again = await readOnce(reader, { requester: 'ann', channel: 'chat' });
        expect(again.calls).toEqual([]);
        expect(again.got).toEqual(first.got);
        // Changes by another connection (a feature processor): the next read after the announcement sees them.
        const fresh = async (metadata: Record<string, string>) =>
          readRealtimeFeatures(redis, 'kk', 'c1', metadata, { timeoutMs: 1000, nowMs: now });
        await writer.hset(key('kk', 'ann'), { Hardware: '3' });
        await waitFor('the change to be read', async () => JSON.stringify(await reader.read('c1', { requester: 'ann' })) === JSON.stringify(await fresh({ requester: 'ann' })), 2_000, 5);
        expect((await reader.read('c1', { requester: 'ann' })).features['requester.share:Hardware']).toBe(0.75);
        await writer.hset(featureKeys.entity('kk', 'c1', 'channel', 'chat'), { _t: String(now), Printing: '1' });
        await waitFor('the new entity to be read', async () => (await reader.read('c1', { channel: 'chat' })).features['channel.share:Printing'] === 1, 2_000, 5);
        await writer.pexpire(key('kk', 'ann'), 1);
        await waitFor('the expiry to be read', async () => Object.keys((await reader.read('c1', { requester: 'ann' })).features).length === 0, 2_000, 5);
        // A flush announces no keys (a null message): nothing kept survives it. (This test's Redis is private.)
        expect((await readOnce(reader, { channel: 'chat' })).calls).toEqual([]);
        await writer.flushdb();
        await waitFor('the flush to be read', async () => Object.keys((await reader.read('c1', { channel: 'chat' })).features).length === 0, 2_000, 5);
        expect(reader.cacheCounts.hits).toBeGreaterThan(0);
      } finally {
        reader.close();
        writer.disconnect();
      }
    });

    it('answers a batch from kept states: each item as a read from Redis would, items naming the same states sharing one answer', async () => {
      const channel = (value: string) => featureKeys.entity('kb', 'c1', 'channel', value);
      await redis.hset(key('kb', 'ann'), { _t: String(now), Network: '3', Hardware: '1' });
      await redis.hset(key('kb', 'bob'), { _t: String(now), Printing: '2' });
      await redis.hset(channel('chat'), { _t: String(now), Hardware: '2' });
      const reader = await cachingReader('kb');
      try {
        const items: Array<Record<string, string>> = [
          { requester: 'ann', channel: 'chat' }, { requester: 'ann', channel: 'chat' }, { requester: 'bob', channel: 'chat' },
          { requester: 'ann' }, { requester: 'bob' }, { requester: 'ann', channel: 'chat' }, { channel: 'chat' },
        ];
        await reader.readMany('c1', items); // keeps them
        const { got, calls } = await scriptCalls(redis, () => reader.readMany('c1', items));
        expect(calls).toEqual([]);
        for (const [i, metadata] of items.entries()) {
          expect(got[i]).toEqual(await readRealtimeFeatures(redis, 'kb', 'c1', metadata, { timeoutMs: 1000, nowMs: now }));
        }
        expect(got[1]).toBe(got[0]);
        expect(got[2]).not.toEqual(got[0]);
      } finally {
        reader.close();
      }
    });

    it('does not keep what a read in flight answered for a key whose change was announced meanwhile', async () => {
      await redis.hset(key('kr', 'bob'), { _t: String(now), Network: '1' });
      const reader = await cachingReader('kr');
      try {
        const { over } = await blockRedis(300);
        const read = reader.read('c1', { requester: 'bob' });
        await nextTurn(); // sent, waiting in the blocked Redis
        // The order a real race can take but a test cannot force: a change made after Redis read the
        // key is announced on the other connection before this process reads the answer.
        const subscriber = (reader as unknown as { cache: { subscriber: Redis } }).cache.subscriber;
        subscriber.emit('messageBuffer', Buffer.from('__redis__:invalidate'), [Buffer.from(key('kr', 'bob'))]);
        await over;
        expect((await read).defaulted).toBe(false); // the answer is used...
        expect((await readOnce(reader, { requester: 'bob' })).calls).toEqual([[key('kr', 'bob')]]); // ...but not kept
        expect((await readOnce(reader, { requester: 'bob' })).calls).toEqual([]);
      } finally {
        reader.close();
      }
    });

    it('keeps nothing across a Redis that dies (killed for real) and tracks again on the restarted one', async () => {
      const writer = redis.duplicate();
      writer.on('error', () => undefined);
      await redis.hset(key('kx', 'eve'), { _t: String(now), Network: '1' });
      const reader = await cachingReader('kx');
      try {
        await reader.read('c1', { requester: 'eve' });
        expect((await readOnce(reader, { requester: 'eve' })).calls).toEqual([]);
        await server.kill();
        await waitFor('the reader to stop keeping states', async () => !reader.caching, 5_000, 5);
        // Down: no kept state answers (Redis is where the truth is); the read defaults.
        expect(await reader.read('c1', { requester: 'eve' })).toEqual({ features: {}, defaulted: true });
        await server.start(); // its append-only file brings the state back
        await waitFor('tracking to be set up on the restarted Redis', async () => reader.caching, 15_000, 20);
        await waitFor('eve to be read from the restarted Redis', async () => (await reader.read('c1', { requester: 'eve' })).features['requester.share:Network'] === 1, 5_000, 10);
        await waitFor('the writer to reconnect', async () => writer.status === 'ready', 15_000, 20);
        await writer.hset(key('kx', 'eve'), { Printing: '1' });
        await waitFor('the change to be read', async () => (await reader.read('c1', { requester: 'eve' })).features['requester.share:Printing'] === 0.5, 2_000, 5);
      } finally {
        reader.close();
        writer.disconnect();
      }
    });

    it('keeps nothing, reads Redis every time and says so when Redis refuses client tracking (its CLIENT command disabled)', async () => {
      const locked = await privateRedis({ args: ['--rename-command', 'CLIENT', ''] });
      await locked.start();
      const connection = new Redis(locked.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
      connection.on('error', () => undefined);
      const warnings: string[] = [];
      const logger = pino({ level: 'warn' }, { write: (line: string) => warnings.push(String(JSON.parse(line).msg)) });
      try {
        await new Promise((r) => connection.once('ready', r));
        await connection.hset(key('kl', 'fay'), { _t: String(now), Network: '1' });
        const reader = new RealtimeFeatureReader(connection, 'kl', { timeoutMs: 1000, nowMs: () => now, cacheEntries: 100, logger });
        try {
          await waitFor('the refusal to be logged', async () => warnings.some((m) => m.includes('refused client tracking')), 5_000, 10);
          expect(reader.caching).toBe(false);
          for (let i = 0; i < 2; i++) {
            const { got, calls } = await scriptCalls(connection, () => reader.read('c1', { requester: 'fay' }));
            expect(calls).toEqual([[key('kl', 'fay')]]);
            expect(got).toEqual({ features: { 'requester.log_count': expect.any(Number), 'requester.share:Network': 1 }, defaulted: false });
          }
        } finally {
          reader.close();
        }
      } finally {
        connection.disconnect();
        await locked.cleanup();
      }
    });

    it('keeps nothing while either connection is down, and tracks again once both are back', async () => {
      const writer = redis.duplicate();
      await redis.hset(key('kd', 'cat'), { _t: String(now), Network: '1' });
      const reader = await cachingReader('kd');
      try {
        await reader.read('c1', { requester: 'cat' });
        // The invalidation connection dies: changes made meanwhile are announced to no one.
        await writer.client('KILL', 'TYPE', 'pubsub');
        await waitFor('the reader to stop keeping states', async () => !reader.caching, 5_000, 5);
        await writer.hset(key('kd', 'cat'), { Hardware: '1' });
        const during = await readOnce(reader, { requester: 'cat' });
        expect(during.calls).toEqual([[key('kd', 'cat')]]);
        expect(during.got.features['requester.share:Hardware']).toBe(0.5);
        // Both reconnect (ioredis retries): tracking is set up again on the new connections.
        await waitFor('tracking to be set up again', async () => reader.caching, 10_000, 10);
        await reader.read('c1', { requester: 'cat' });
        expect((await readOnce(reader, { requester: 'cat' })).calls).toEqual([]);
        await writer.hset(key('kd', 'cat'), { Printing: '2' });
        await waitFor('the change to be read', async () => (await reader.read('c1', { requester: 'cat' })).features['requester.share:Printing'] === 0.5, 2_000, 5);
        // The reading connection itself reconnects: a new connection has no tracking until it is set up again.
        const readerId = String(await redis.client('ID'));
        await writer.client('KILL', 'ID', readerId);
        await waitFor('tracking to be set up on the new reading connection', async () => redis.status === 'ready' && reader.caching && String(await redis.client('ID')) !== readerId, 10_000, 10);
        await reader.read('c1', { requester: 'cat' });
        await writer.hset(key('kd', 'cat'), { Network: '5' });
        await waitFor('the change to be read', async () => (await reader.read('c1', { requester: 'cat' })).features['requester.share:Network'] === 0.625, 2_000, 5);
      } finally {
        reader.close();
        writer.disconnect();
      }
    });
  });
});
