import { randomUUID } from 'node:crypto';
import diagnostics from 'node:diagnostics_channel';
import { compatibilityPartitioner, Consumer, createRecordsBatch, createRecordsBatchByWriter, MessagesStreamModes, readRecordsBatchByReader, readRecordsBatches, Reader, stringDeserializers, Writer } from '@platformatic/kafka';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DependencyUnavailableError, EddyError, InvalidEventError } from '../common/errors.ts';
import type { DeadLetter, LabeledExample } from '../schemas/events.ts';
import type { EventRecord } from '../streams/index.ts';
import { coPartitionedAssignment } from '../streams/assigner.ts';
import { appendRecords } from '../streams/clients/platformatic.ts';
import { testStreams, waitFor } from './helpers.ts';

type TestStreams = Awaited<ReturnType<typeof testStreams>>;

function example(clientId: string, text: string, extra: Partial<LabeledExample> = {}): LabeledExample {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId: randomUUID(), text, label: 'it',
    source: 'ASSIGNMENT', metadata: { requester: 'ann' }, predictionId: null, ...extra,
  };
}

async function committedOffsets(s: TestStreams, groupId: string, topic: string): Promise<Map<number, bigint>> {
  const [t] = await s.withAdmin((admin) => admin.fetchOffsets({ groupId, topics: [topic] }));
  return new Map(t!.partitions.map((p) => [p.partition, BigInt(p.offset)]));
}

async function endOffsets(s: TestStreams, topic: string): Promise<Map<number, bigint>> {
  const offsets = await s.withAdmin((admin) => admin.fetchTopicOffsets(topic));
  return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
}

/** A client id for every partition (partition → client), found by the producer's partitioner. */
function oneClientPerPartition(s: TestStreams, prefix: string): Map<number, string> {
  const partitionOf = (clientId: string) => compatibilityPartitioner(undefined as never, Buffer.from(clientId)) % s.config.partitions;
  const byPartition = new Map<number, string>();
  for (let i = 0; byPartition.size < s.config.partitions; i++) if (!byPartition.has(partitionOf(`${prefix}${i}`))) byPartition.set(partitionOf(`${prefix}${i}`), `${prefix}${i}`);
  return byPartition;
}

/** Collects dead letters of this test's prefix. */
function collectDeadLetters(s: TestStreams): { letters: DeadLetter[]; start(): Promise<void> } {
  const letters: DeadLetter[] = [];
  const runner = s.consumer({
    group: 'dead-letter-reader', topics: ['dead-letters'],
    handler: { async handle(records) { for (const r of records) letters.push(r.event.value as DeadLetter); } },
  });
  return { letters, start: () => runner.start() };
}

describe('typed producer', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('refuses an invalid event with a message naming the field, and sends nothing', async () => {
    const bad = { ...example('acme', 'x'), text: 42 } as unknown as LabeledExample;
    const error = await s.producer.send('LabeledExample', bad).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(InvalidEventError);
    expect((error as InvalidEventError).paths).toEqual(['text']);
    expect((error as Error).message).toBe('invalid LabeledExample: text: expected string, got number 42');

    const wrongEnum = { ...example('acme', 'x'), source: 'GUESS' } as unknown as LabeledExample;
    await expect(s.producer.send('LabeledExample', wrongEnum)).rejects.toThrow(/source: expected one of DEFINITION\|ASSIGNMENT/);
    await expect(s.producer.send('LabeledExample', example('', 'no client'))).rejects.toThrow(/clientId: must not be empty/);

    const ends = await endOffsets(s, s.topics.physical('examples'));
    expect([...ends.values()].every((o) => o === 0n)).toBe(true);
  });

  it('keys every event by clientId so one client stays on one partition', async () => {
    await s.producer.sendAll(Array.from({ length: 20 }, (_, i) => ({ name: 'LabeledExample' as const, value: example('same-client', `t${i}`) })));
    const ends = await endOffsets(s, s.topics.physical('examples'));
    const nonEmpty = [...ends.values()].filter((o) => o > 0n);
    expect(nonEmpty).toEqual([20n]);
  });

  it('writes every event of sends that are in flight together, exactly once (idempotent producer)', async () => {
    const topic = s.topics.physical('feedback');
    const before = [...(await endOffsets(s, topic)).values()].reduce((a, b) => a + b, 0n);
    const event = (i: number) => ({
      name: 'PredictionFeedback' as const,
      value: { eventId: randomUUID(), clientId: `together-${i % 7}`, occurredAt: Date.now(), requestId: `r${i}`, outcome: 'ACCEPTED' as const, correctLabel: null, actor: null },
    });
    // Four callers share the process's producer, as runners and the publisher do.
    await Promise.all(Array.from({ length: 4 }, (_, k) => (async () => {
      for (let b = 0; b < 3; b++) await s.producer.sendAll(Array.from({ length: 250 }, (_, i) => event(k * 1000 + b * 250 + i)));
    })()));
    const after = [...(await endOffsets(s, topic)).values()].reduce((a, b) => a + b, 0n);
    expect(Number(after - before)).toBe(3000);
  });

  it('puts each client on the partition the Java client would (murmur2 of the clientId)', async () => {
    const clients = Array.from({ length: 40 }, (_, i) => `tenant-${i}`);
    await s.producer.sendAll(clients.map((c) => ({ name: 'LabeledExample' as const, value: example(c, 'where') })));
    const placed = new Map<string, number>();
    const runner = s.consumer({
      group: 'partitioner-test', topics: ['examples'],
      handler: { async handle(records) { for (const r of records) placed.set(r.key!, r.partition); } },
    });
    await runner.start();
    await waitFor('every client seen', () => clients.every((c) => placed.has(c)));
    await runner.stop();
    const partitions = s.config.partitions;
    expect(Object.fromEntries(clients.map((c) => [c, placed.get(c)]))).toEqual(Object.fromEntries(clients.map((c) => [c, javaPartition(c, partitions)])));
  });
});

/**
 * The Java client's partitioner (Utils.murmur2, then toPositive, mod partitions): what kafkajs and
 * librdkafka's murmur2 partitioner compute, so a client's events keep their partition whichever
 * client library (or language) produced them.
 */
function javaPartition(key: string, partitions: number): number {
  const data = Buffer.from(key);
  const m = 0x5bd1e995;
  let h = 0x9747b28c ^ data.length;
  const whole = data.length & ~3;
  for (let i = 0; i < whole; i += 4) {
    let k = data.readInt32LE(i);
    k = Math.imul(k, m);
    k ^= k >>> 24;
    k = Math.imul(k, m);
    h = Math.imul(h, m) ^ k;
  }
  const rest = data.length & 3;
  if (rest === 3) h ^= data[whole + 2]! << 16;
  if (rest >= 2) h ^= data[whole + 1]! << 8;
  if (rest >= 1) h = Math.imul(h ^ data[whole]!, m);
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return (h & 0x7fffffff) % partitions;
}

describe('consumer runner', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('dead-letters garbage bytes and unknown schema ids with the reason, and processes the good messages around them', async () => {
    const topic = s.topics.physical('examples');
    await s.producer.send('LabeledExample', example('c1', 'before'));
    await s.producer.sendMessages([{ topic, messages: [
      { key: 'c1', value: Buffer.from('not avro at all') },
      { key: 'c1', value: Buffer.from([0, 0x7f, 0xff, 0xff, 0x01, 2, 3]) },
      { key: 'c1', value: null },
    ] }]);
    await s.producer.send('LabeledExample', example('c1', 'after'));

    const seen: string[] = [];
    const dead = collectDeadLetters(s);
    await dead.start();
    const runner = s.consumer({
      group: 'dlq-test', topics: ['examples'],
      handler: { async handle(records) { for (const r of records) seen.push((r.event.value as LabeledExample).text); } },
    });
    await runner.start();
    await waitFor('good messages and three dead letters', () => seen.length === 2 && dead.letters.length === 3);
    expect(seen).toEqual(['before', 'after']);
    const byCode = dead.letters.map((d) => [d.errorCode, d.reason, d.sourceTopic, d.clientId]);
    expect(byCode).toEqual([
      ['UNDECODABLE', 'magic byte is 110, expected 0 (not Confluent wire format)', topic, 'c1'],
      ['UNKNOWN_SCHEMA', expect.stringMatching(/^schema id 2147483393 is not known to the registry/), topic, 'c1'],
      ['UNDECODABLE', 'message of 0 bytes is shorter than the 5-byte Confluent header', topic, 'c1'],
    ]);
    expect(dead.letters.map((d) => d.offset)).toEqual([1, 2, 3]);
    expect(dead.letters[0]!.value?.toString()).toBe('not avro at all');
    expect(dead.letters.every((d) => d.consumerGroup === runner.groupId)).toBe(true);
    await runner.stop();
    const committed = await committedOffsets(s, runner.groupId, topic);
    expect([...committed.values()].reduce((a, b) => a + (b > 0n ? b : 0n), 0n)).toBe(5n);
  });
});

describe('consumer runner: partitions in turn', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('works on one partition at a time in turn: a partition that always has records waiting does not starve the others', async () => {
    // One client per partition; the first is the busy one.
    const [busy, ...others] = [...oneClientPerPartition(s, 'c').entries()];
    const handled: number[] = [];
    let fed = 0;
    const runner = s.consumer({
      group: 'in-turn', topics: ['examples'], // one batch in hand at a time (the default), as the trainer
      fetch: { minBytes: 1 }, // and, as the trainer, a fetch answered as soon as a record is there
      handler: {
        async handle(records) {
          handled.push(records[0]!.partition);
          if (records[0]!.partition !== busy![0] || fed >= 6) return;
          // The busy partition gets its next record while this batch is in hand, and the batch ends
          // well after the fetch (answered at once) has queued it: it is waiting whenever its turn ends.
          fed++;
          await s.producer.send('LabeledExample', example(busy![1], `more ${fed}`));
          await new Promise((r) => setTimeout(r, 600));
        },
      },
    });
    await s.producer.send('LabeledExample', example(busy![1], 'first'));
    await runner.start();
    await waitFor('the busy partition served once', () => handled.length > 0);
    // Its queue is now the oldest; the other partitions' records arrive while it is being served.
    for (const [, clientId] of others) await s.producer.send('LabeledExample', example(clientId, 'waiting'));
    await waitFor('every partition served and the feed done', () => others.every(([p]) => handled.includes(p)) && fed >= 6, 60_000);
    await runner.stop();
    // In turn: each other partition is served before the busy one's fourth batch (the batches in
    // hand or fetched when their records arrived). Before, they waited for all six.
    const fourthBusy = handled.map((p, i) => (p === busy![0] ? i : -1)).filter((i) => i >= 0)[3]!;
    for (const [p] of others) expect(handled.indexOf(p), `partition ${p} in ${handled.join(',')}`).toBeLessThan(fourthBusy);
  });
});

describe('consumer runner: the fetch window', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('lets a fetch fill for up to its wait when traffic is low, so a trickle arrives in a few calls, and with minBytes 1 answers each event as it comes', async () => {
    const calls = { window: [] as number[], immediate: [] as number[] };
    const runner = (name: keyof typeof calls, fetch: { minBytes: number; maxWaitMs: number }) => s.consumer({
      group: name, topics: ['examples'], fetch,
      handler: { async handle(records) { calls[name].push(records.length); } },
    });
    // A window far larger than the trickle: only the wait ends a fetch.
    const windowed = runner('window', { minBytes: 1_048_576, maxWaitMs: 2_500 });
    const immediate = runner('immediate', { minBytes: 1, maxWaitMs: 2_500 });
    const joined = [windowed.waitForAssignment(30_000), immediate.waitForAssignment(30_000)];
    await windowed.start();
    await immediate.start();
    await Promise.all(joined);
    // Eight events of one client (one partition), 150 ms apart: 1.05 s from the first to the last.
    for (let i = 0; i < 8; i++) {
      await s.producer.send('LabeledExample', example('trickle', `event ${i}`));
      await new Promise((r) => setTimeout(r, 150));
    }
    const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0);
    await waitFor('both groups handled all eight', () => sum(calls.window) === 8 && sum(calls.immediate) === 8, 30_000);
    await windowed.stop();
    await immediate.stop();
    // The windowed group saw them in at most two fetches (each held up to 2.5 s); the other one
    // fetch per event, or nearly (a slow turn of the loop may join two).
    expect(calls.window.length, `windowed calls ${calls.window.join(',')}`).toBeLessThanOrEqual(2);
    expect(calls.immediate.length, `immediate calls ${calls.immediate.join(',')}`).toBeGreaterThanOrEqual(5);
  });

  it('takes at most 1 MiB of a partition per fetch, so a backlog larger than a whole fetch is worked on in all its partitions at once', async () => {
    // Two partitions with ~12 MiB each, more than one fetch holds (10 MiB): were a fetch allowed its
    // whole size from one partition, the first ten calls would all be that partition's.
    const [first, second] = [...oneClientPerPartition(s, 'backlog').values()];
    const text = 'x'.repeat(4_000);
    for (let i = 0; i < 60; i++) { // sends of ~400 KB (a request is limited to 1 MB)
      await s.producer.sendAll(Array.from({ length: 100 }, (_, j) => ({ name: 'LabeledExample' as const, value: example(j % 2 === 0 ? first! : second!, text) })));
    }
    const calls: number[] = [];
    let handled = 0;
    const runner = s.consumer({
      group: 'backlog', topics: ['examples'], partitionsConsumedConcurrently: 2, maxRecordsPerCall: 250, fetch: { minBytes: 1 },
      handler: {
        async handle(records) {
          // The topic also holds the test above's events: only the backlog's count.
          const backlog = records.filter((r) => r.key === first || r.key === second).length;
          if (backlog === 0) return;
          calls.push(records[0]!.partition);
          handled += backlog;
          await new Promise((r) => setTimeout(r, 5));
        },
      },
    });
    await runner.start();
    await waitFor('the backlog handled', () => handled === 6_000, 60_000);
    await runner.stop();
    expect(new Set(calls.slice(0, 4)).size, `partitions of the calls in order: ${calls.join(',')}`).toBe(2);
  });
});

describe('consumer runner: commits', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it("hands a fetch's records of a partition over in one call, and commits the calls of several partitions in one request", async () => {
    const clients = oneClientPerPartition(s, 'k');
    // Three records on every partition, all there before the consumer's first fetch.
    await s.producer.sendAll([...clients.values()].flatMap((c) => [1, 2, 3].map((n) => ({ name: 'LabeledExample' as const, value: example(c, `${c} ${n}`) }))));
    const calls: Array<{ partition: number; records: number }> = [];
    const runner = s.consumer({
      group: 'commits', topics: ['examples'], partitionsConsumedConcurrently: s.config.partitions,
      handler: {
        async handle(records) {
          calls.push({ partition: records[0]!.partition, records: records.length });
          await new Promise((r) => setTimeout(r, 300)); // the partitions' calls end together
        },
      },
    });
    // Every commit request of this group, as the library's diagnostics channel reports it.
    const requests: number[] = [];
    const channel = diagnostics.channel('tracing:plt:kafka:consumer:commits:start');
    const onStart = (message: unknown) => {
      const ctx = message as { client?: { groupId?: string }; options?: { offsets?: unknown[] } };
      if (ctx.client?.groupId === runner.groupId) requests.push(ctx.options?.offsets?.length ?? 0);
    };
    channel.subscribe(onStart);
    try {
      await runner.start();
      const topic = s.topics.physical('examples');
      await waitFor('every partition committed at its end', async () => {
        const committed = await committedOffsets(s, runner.groupId, topic);
        return [...clients.keys()].every((p) => committed.get(p) === 3n);
      }, 30_000);
      await runner.stop();
    } finally {
      channel.unsubscribe(onStart);
    }
    // One call per partition with its three records (not the first record alone, then the rest).
    expect(calls.map((c) => c.records), JSON.stringify(calls)).toEqual(calls.map(() => 3));
    expect(new Set(calls.map((c) => c.partition)).size).toBe(s.config.partitions);
    // Fewer requests than calls: a request carried the offsets of several partitions.
    expect(requests.length, `offsets per request: ${requests.join(',')}`).toBeLessThan(calls.length);
    expect(Math.max(...requests)).toBeGreaterThan(1);
  });
});

describe('consumer runner: failures', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('retries a transient failure without committing, then processes everything exactly in order', async () => {
    const texts = Array.from({ length: 10 }, (_, i) => `m${i}`);
    await s.producer.sendAll(texts.map((t) => ({ name: 'LabeledExample' as const, value: example('ordered', t) })));
    const topic = s.topics.physical('examples');
    let failuresLeft = 3;
    let committedDuringOutage: Map<number, bigint> | undefined;
    const handled: string[] = [];
    const runner = s.consumer({
      group: 'retry-test', topics: ['examples'], retry: { initialMs: 50, maxMs: 200 },
      handler: {
        async handle(records: EventRecord[]) {
          if (failuresLeft > 0) {
            failuresLeft--;
            if (failuresLeft === 0) committedDuringOutage = await committedOffsets(s, runner.groupId, topic);
            throw new DependencyUnavailableError('redis', 'redis is down (simulated by the handler)');
          }
          for (const r of records) handled.push((r.event.value as LabeledExample).text);
        },
      },
    });
    await runner.start();
    await waitFor('all ten handled', () => handled.length === 10);
    expect(handled).toEqual(texts);
    // While the handler kept failing nothing was committed (no offset, or -1 for "none").
    expect([...committedDuringOutage!.values()].every((o) => o <= 0n)).toBe(true);
    await waitFor('offsets committed', async () => [...(await committedOffsets(s, runner.groupId, topic)).values()].some((o) => o === 10n));
    await runner.stop();
  });

  it('isolates a poison record: it is dead-lettered with the handler error, the others are processed', async () => {
    await s.producer.sendAll(['ok1', 'poison', 'ok2'].map((t) => ({ name: 'LabeledExample' as const, value: example('poison-client', t) })));
    const dead = collectDeadLetters(s);
    await dead.start();
    const handled: string[] = [];
    const runner = s.consumer({
      group: 'poison-test', topics: ['examples'],
      handler: {
        async handle(records) {
          if (records.some((r) => (r.event.value as LabeledExample).text === 'poison')) {
            if (records.length === 1) throw new EddyError('BAD_EXAMPLE', 'cannot handle poison');
            throw new EddyError('BAD_BATCH', 'batch contains poison');
          }
          for (const r of records) handled.push((r.event.value as LabeledExample).text);
        },
      },
    });
    await runner.start();
    await waitFor('poison dead-lettered', () => dead.letters.some((d) => d.errorCode === 'HANDLER_FAILED'));
    await waitFor('good records handled', () => handled.includes('ok1') && handled.includes('ok2'));
    const letter = dead.letters.find((d) => d.errorCode === 'HANDLER_FAILED')!;
    expect(letter.reason).toBe('cannot handle poison');
    expect(letter.clientId).toBe('poison-client');
    await runner.stop();
  });

  it('stops gracefully: finishes the records in hand, commits them, and leaves the group', async () => {
    const topic = s.topics.physical('labels');
    await s.producer.sendAll(Array.from({ length: 30 }, (_, i) => ({
      name: 'LabelSetChanged' as const,
      value: { eventId: randomUUID(), clientId: `g${i % 3}`, occurredAt: Date.now(), change: 'ADDED' as const, label: `L${i}`, previousLabel: null, description: null, keywords: [] },
    })));
    let handled = 0;
    let stopRequested: Promise<void> | undefined;
    const runner = s.consumer({
      group: 'graceful-test', topics: ['labels'], maxRecordsPerCall: 5,
      handler: {
        async handle(records) {
          await new Promise((r) => setTimeout(r, 20));
          handled += records.length;
          stopRequested ??= runner.stop(); // a signal arrives while a batch is in flight
        },
      },
    });
    await runner.start();
    await waitFor('stop requested', () => stopRequested !== undefined);
    await stopRequested;
    const committed = [...(await committedOffsets(s, runner.groupId, topic)).values()].reduce((a, b) => a + (b > 0n ? b : 0n), 0n);
    expect(Number(committed)).toBe(handled);
    expect(handled).toBeGreaterThan(0);
    const description = await s.withAdmin((admin) => admin.describeGroups([runner.groupId]));
    expect(description[0]!.members).toEqual([]);
  });
});

describe('consumer runner: record batches', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('resumes in the middle of a record batch: a member that starts at a committed offset sees each later record once, none before it', async () => {
    // Ten events in one send: one Kafka record batch. A fetch from an offset inside a batch is
    // answered with the whole batch; the records before the offset must not be handed over again.
    await s.producer.sendAll(Array.from({ length: 10 }, (_, i) => ({ name: 'LabeledExample' as const, value: example('one-batch', `r${i}`) })));
    const seen: Array<{ text: string; offset: string; timestamp: number }> = [];
    let stopping: Promise<void> | undefined;
    const first = s.consumer({
      group: 'mid-batch', topics: ['examples'], maxRecordsPerCall: 4,
      handler: {
        async handle(records) {
          for (const r of records) seen.push({ text: (r.event.value as LabeledExample).text, offset: r.offset, timestamp: r.timestamp });
          stopping ??= first.stop(); // this call is committed, nothing after it
        },
      },
    });
    await first.start();
    await waitFor('the first member stopped', () => stopping !== undefined);
    await stopping;
    expect(seen.map((r) => r.text)).toEqual(['r0', 'r1', 'r2', 'r3']);
    const base = BigInt(seen[0]!.offset);
    const topic = s.topics.physical('examples');
    const partition = [...(await committedOffsets(s, first.groupId, topic))].find(([, o]) => o > 0n);
    expect(partition?.[1]).toBe(base + 4n);

    const rest: typeof seen = [];
    const second = s.consumer({
      group: 'mid-batch', topics: ['examples'],
      handler: { async handle(records) { for (const r of records) rest.push({ text: (r.event.value as LabeledExample).text, offset: r.offset, timestamp: r.timestamp }); } },
    });
    await second.start();
    await waitFor('the rest read', () => rest.length >= 6);
    await new Promise((r) => setTimeout(r, 300)); // nothing more arrives
    await second.stop();
    expect(rest.map((r) => r.text)).toEqual(['r4', 'r5', 'r6', 'r7', 'r8', 'r9']);
    expect(rest.map((r) => r.offset)).toEqual([4n, 5n, 6n, 7n, 8n, 9n].map((d) => String(base + d)));
    for (const r of [...seen, ...rest]) expect(Math.abs(r.timestamp - Date.now())).toBeLessThan(60_000);
  });

  it('turns a record batch into messages: offsets from the first offset and each delta, exact beyond 2^53, and the batch commit for each', () => {
    const commit = () => undefined;
    const records = [0, 1, 5].map((d) => ({ offsetDelta: d, timestampDelta: BigInt(d * 10), key: Buffer.from(`k${d}`), value: d === 5 ? null : Buffer.from(`v${d}`) }));
    const messages: Parameters<typeof appendRecords>[0] = [];
    const commits: Parameters<typeof appendRecords>[1] = [];
    appendRecords(messages, commits, { topic: 't', partition: 0, firstOffset: 41n, firstTimestamp: 1_700_000_000_000n, records, commit });
    expect(messages).toEqual([
      { key: Buffer.from('k0'), value: Buffer.from('v0'), offset: '41', timestamp: 1_700_000_000_000 },
      { key: Buffer.from('k1'), value: Buffer.from('v1'), offset: '42', timestamp: 1_700_000_000_010 },
      { key: Buffer.from('k5'), value: null, offset: '46', timestamp: 1_700_000_000_050 },
    ]);
    expect(commits).toEqual([commit, commit, commit]);
    // Offsets past Number's exact range are added as BigInts.
    const big = 2n ** 60n;
    appendRecords(messages, commits, { topic: 't', partition: 0, firstOffset: big, firstTimestamp: 0n, records: records.slice(2), commit });
    expect(messages.at(-1)!.offset).toBe((big + 5n).toString());
  });
});

describe('producing record batches (the library patch)', () => {
  const batchHeaderBytes = 61; // firstOffset … record count (Kafka's RecordBatch v2)
  /** Kafka's unsigned varint (the zigzag of a varint/varlong is decoded by the caller). */
  const readVarint = (b: Buffer, pos: number): { value: bigint; pos: number } => {
    let value = 0n;
    for (let shift = 0n; ; shift += 7n) {
      const byte = b[pos++]!;
      value |= BigInt(byte & 0x7f) << shift;
      if ((byte & 0x80) === 0) return { value, pos };
    }
  };
  const unZigZag = (z: bigint) => (z >> 1n) ^ -(z & 1n);

  it("writes every batch byte for byte as the library's own record writer does, keys, values and headers of every size, null or absent, with or without compression", () => {
    let seed = 7;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rnd(256)));
    const sizes = [0, 1, 63, 64, 127, 128, 300, 8191, 8192, 20_000]; // around each varint length step
    const field = () => { const r = rnd(20); return r === 0 ? null : r === 1 ? undefined : bytes(sizes[rnd(sizes.length)]!); };
    for (let t = 0; t < 400; t++) {
      const now = 1_700_000_000_000n + BigInt(t);
      const messages = Array.from({ length: 1 + rnd(t % 10 === 0 ? 200 : 8) }, () => ({
        key: field(), value: field(), topic: 't', partition: 0,
        headers: rnd(5) === 0 ? undefined : new Map(Array.from({ length: rnd(4) }, () => [bytes(rnd(20)), rnd(10) === 0 ? null : bytes(rnd(200))] as [Buffer, Buffer])),
        timestamp: now + BigInt(rnd(2_000_000_000) - 1_000_000_000),
      }));
      const options = { producerId: BigInt(rnd(1000)), producerEpoch: rnd(5), compression: (['none', 'none', 'gzip', 'snappy', 'lz4'] as const)[rnd(5)]! };
      const copy = () => messages.map((m) => ({ ...m })) as Parameters<typeof createRecordsBatch>[0];
      expect(createRecordsBatch(copy(), options).buffer.equals(createRecordsBatchByWriter(copy(), options).buffer), `batch ${t}`).toBe(true);
    }
  });

  it("writes a timestamp delta beyond 32 bits as Kafka's zigzag varlong", () => {
    const first = 1_700_000_000_000n;
    for (const delta of [2n ** 31n, 2n ** 40n + 12345n, -(2n ** 40n) - 7n]) {
      const batch = createRecordsBatch([
        { key: Buffer.from('a'), value: Buffer.from('b'), topic: 't', partition: 0, timestamp: first },
        { key: Buffer.from('a'), value: Buffer.from('b'), topic: 't', partition: 0, timestamp: first + delta },
      ], { compression: 'none' }).buffer;
      const firstLength = readVarint(batch, batchHeaderBytes);
      const second = readVarint(batch, firstLength.pos + Number(unZigZag(firstLength.value)));
      const timestampDelta = readVarint(batch, second.pos + 1); // after the record's attributes byte
      expect(unZigZag(timestampDelta.value)).toBe(delta);
    }
  });

  describe('reading them back (the consuming half of the patch)', () => {
    let seed = 11;
    const rnd = (n: number) => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed % n; };
    const bytes = (n: number) => Buffer.from(Array.from({ length: n }, () => rnd(256)));
    const sizes = [0, 1, 63, 64, 127, 128, 300, 8191, 8192];
    const field = () => { const r = rnd(20); return r === 0 ? null : bytes(sizes[rnd(sizes.length)]!); };
    /** Several batches back to back, as a fetch response holds them. */
    const fetchedBytes = (batches: number, spread: bigint) => Buffer.concat(Array.from({ length: batches }, () => {
      const now = 1_700_000_000_000n;
      const messages = Array.from({ length: 1 + rnd(rnd(10) === 0 ? 200 : 8) }, () => ({
        key: field(), value: field(), topic: 't', partition: 0,
        headers: rnd(5) === 0 ? undefined : new Map(Array.from({ length: rnd(4) }, () => [bytes(rnd(20)), rnd(10) === 0 ? null : bytes(rnd(200))] as [Buffer, Buffer])),
        timestamp: now + BigInt(rnd(1000)) * spread,
      })) as Parameters<typeof createRecordsBatch>[0];
      return createRecordsBatch(messages, { compression: (['none', 'none', 'none', 'gzip', 'snappy', 'lz4'] as const)[rnd(6)]! }).buffer;
    }));
    /** A reader over `b` cut into chunks at random places, as the socket delivers a response. */
    const chunked = (b: Buffer) => {
      const w = Writer.create();
      for (let at = 0; at < b.length;) {
        const n = 1 + rnd(rnd(10) === 0 ? 50 : 8_000);
        w.append(b.subarray(at, at + n));
        at += n;
      }
      return Reader.from(w);
    };
    const byReader = (b: Buffer) => {
      const r = chunked(b);
      const out = [];
      while (r.remaining >= 12 && r.remaining - 12 >= r.peekInt32(r.position + 8)) out.push(readRecordsBatchByReader(r));
      return out;
    };
    /** Batches as plain strings and numbers: vitest compares Buffers byte by byte, ~100× slower. */
    const plain = (v: unknown): unknown => {
      if (Buffer.isBuffer(v)) return `bytes:${v.toString('base64')}`;
      if (typeof v === 'bigint') return `${v}n`;
      if (Array.isArray(v)) return v.map(plain);
      if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, plain(x)]));
      return v;
    };
    const outcome = (read: () => unknown) => {
      try {
        return { batches: plain(read()) };
      } catch (err) {
        return { error: String(err) };
      }
    };

    it("reads every batch as the library's own reader does, from a response in chunks of any size, compressed or not, timestamp deltas up to 2^60 ms", () => {
      for (let t = 0; t < 150; t++) {
        // Timestamp deltas of up to ~1,000 ms, ~2^50 ms and ~2^60 ms (varlongs longer than a double holds exactly).
        const b = fetchedBytes(1 + rnd(4), [1n, 2n ** 40n + 7n, 2n ** 50n + 12_345n][t % 3]!);
        const batches = readRecordsBatches(chunked(b));
        expect(batches.length, `response ${t}`).toBeGreaterThan(0);
        expect(plain(batches), `response ${t}`).toEqual(plain(byReader(b)));
      }
    });

    it('stops where the library stops on a truncated response, and fails as it fails on a malformed batch', () => {
      for (let t = 0; t < 40; t++) {
        const b = fetchedBytes(2, 1n);
        const cut = b.subarray(0, 12 + rnd(b.length - 12));
        expect(plain(readRecordsBatches(chunked(cut))), `truncated ${t}`).toEqual(plain(byReader(cut)));
        // A record's bytes damaged after the batch header: whatever the library makes of it, the patch makes too.
        const bad = Buffer.from(b);
        bad[61 + rnd(Math.min(40, b.readInt32BE(8) - 49))] = 0xff;
        expect(outcome(() => readRecordsBatches(chunked(bad))), `damaged ${t}`).toEqual(outcome(() => byReader(bad)));
      }
    });
  });

  describe('through Kafka', () => {
    let s: TestStreams;
    beforeAll(async () => { s = await testStreams(); });
    afterAll(async () => { await s.cleanup(); });

    it('gives each message of a send the headers it was given, when many share one headers object and others have their own', async () => {
      const topic = s.topics.physical('examples');
      const shared = { 'eddy-event': 'LabeledExample', origin: 'shared' };
      const messages = Array.from({ length: 60 }, (_, i) => ({
        key: `hdr-${i % 13}`, value: `v${i}`,
        headers: i % 10 === 9 ? { 'eddy-event': 'LabeledExample', origin: `own-${i}` } : shared,
      }));
      await s.producer.sendMessages([{ topic, messages }]);
      const consumer = new Consumer({
        clientId: `${s.config.topicPrefix}headers`, groupId: `${s.config.topicPrefix}headers`, bootstrapBrokers: [...s.config.kafkaBrokers],
        deserializers: stringDeserializers,
      });
      const seen = new Map<string, Record<string, string>>();
      try {
        const stream = await consumer.consume({ topics: [topic], mode: MessagesStreamModes.EARLIEST, autocommit: false });
        for await (const m of stream) {
          seen.set(m.value as string, Object.fromEntries(m.headers as Map<string, string>));
          if (seen.size === messages.length) break;
        }
        await stream.close();
      } finally {
        await consumer.close(true);
      }
      for (const [i, m] of messages.entries()) expect(seen.get(`v${i}`), `v${i}`).toEqual(m.headers);
    });
  });
});

describe('process shutdown', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('on SIGTERM a consumer process finishes its records, commits them, leaves the group and exits 0', async () => {
    const { spawn } = await import('node:child_process');
    await s.producer.sendAll(Array.from({ length: 200 }, (_, i) => ({ name: 'LabeledExample' as const, value: example('sig', `s${i}`) })));
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/slow-consumer.ts'], {
      env: { ...process.env, EDDY_TOPIC_PREFIX: s.config.topicPrefix, EDDY_PARTITIONS: '3', EDDY_LOG_LEVEL: 'error' },
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    await waitFor('the child to handle some records', () => /handled \d+/.test(stdout), 30_000);
    child.kill('SIGTERM');
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    const handled = Number(/closed after (\d+)/.exec(stdout)?.[1]);
    expect(handled).toBeGreaterThan(0);
    expect(handled).toBeLessThan(200); // it really stopped early rather than draining the topic
    const committed = [...(await committedOffsets(s, s.topics.group('slow-consumer'), s.topics.physical('examples'))).values()]
      .reduce((a, b) => a + (b > 0n ? b : 0n), 0n);
    expect(Number(committed)).toBe(handled);
    const description = await s.withAdmin((admin) => admin.describeGroups([s.topics.group('slow-consumer')]));
    expect(description[0]!.members).toEqual([]);
  });
});

describe('consumer runner: fail policy', () => {
  let s: TestStreams;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it("with onUndecodable: 'fail' an undecodable message stops the consumer instead of being skipped", async () => {
    const topic = s.topics.physical('feedback');
    await s.producer.sendMessages([{ topic, messages: [{ key: 'c', value: Buffer.from('garbage') }] }]);
    const runner = s.consumer({ group: 'strict', topics: ['feedback'], onUndecodable: 'fail', handler: { async handle() {} } });
    await runner.start();
    await waitFor('the consumer to stop', () => runner.crashError !== undefined);
    expect(runner.crashError!.message).toMatch(/^magic byte is 103, expected 0 .*feedback\/\d@0\)$/);
    expect(runner.isRunning).toBe(false);
    const committed = await committedOffsets(s, runner.groupId, topic);
    expect([...committed.values()].every((o) => o <= 0n)).toBe(true);
    await runner.stop();
  });
});

describe('consumer groups over several topics: co-partitioned assignment', () => {
  it('assigns partition p of every topic to one member, among the members subscribed to it', () => {
    const partitions: Record<string, number[]> = { a: [0, 1, 2, 3], b: [0, 1, 2, 3], c: [0, 1] };
    const members = [{ memberId: 'm2', topics: ['a', 'b', 'c'] }, { memberId: 'm1', topics: ['a', 'b'] }, { memberId: 'm3', topics: ['a', 'b', 'c'] }];
    const byMember = Object.fromEntries(coPartitionedAssignment(members, ['a', 'b', 'c'], (t) => partitions[t]!));
    // Sorted m1, m2, m3: partition p of a and b goes to member p mod 3; c only to its subscribers m2, m3.
    expect(byMember).toEqual({ m1: { a: [0, 3], b: [0, 3] }, m2: { a: [1], b: [1], c: [0] }, m3: { a: [2], b: [2], c: [1] } });
  });

  let s: Awaited<ReturnType<typeof testStreams>>;
  beforeAll(async () => { s = await testStreams(); });
  afterAll(async () => { await s.cleanup(); });

  it('gives two processes of one group the same partition numbers of every topic (a client has one owner)', async () => {
    const group = `copart-${randomUUID()}`;
    const handler = { async handle() {} };
    const one = s.consumer({ group, topics: ['examples', 'models'], handler });
    const two = s.consumer({ group, topics: ['examples', 'models'], handler });
    await one.start();
    await two.start();
    const all = [0, 1, 2];
    const owned = (r: typeof one, t: string) => [...(r.assignment[t] ?? [])];
    await waitFor('both members hold disjoint shares of every partition', () =>
      ['examples', 'models'].every((t) => {
        const a = owned(one, t);
        const b = owned(two, t);
        return a.length > 0 && b.length > 0 && [...a, ...b].sort().join() === all.join();
      }), 60_000);
    expect(owned(one, 'examples')).toEqual(owned(one, 'models'));
    expect(owned(two, 'examples')).toEqual(owned(two, 'models'));
    await Promise.all([one.stop(), two.stop()]);
  });
});
