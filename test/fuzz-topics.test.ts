import { randomUUID } from 'node:crypto';
import avro from 'avsc';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { predictionKey } from '../common/keyspace.ts';
import { PROCESSORS } from '../processors/registry.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { loadSchema } from '../schemas/index.ts';
import type { DeadLetter, EventName } from '../schemas/events.ts';
import type { TopicName } from '../streams/index.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { caughtUp, cleanupProcessorsTest, example, feedback, labelAdded, prediction, testStreamsRetrying } from './processors-support.ts';

/**
 * Hostile messages on every topic the processors consume, generated (fast-check, fixed seed; set
 * FUZZ_SEED to vary): garbage, empty and short values, a foreign magic byte, unknown schema ids,
 * truncated Avro after a valid header, a record type that does not belong on the topic, an empty
 * clientId; and decodable but odd events (NUL and unpaired surrogates, 100k-character texts,
 * thousands of metadata entries, empty labels, a key that is another tenant's). Every processor
 * must dead-letter each message it cannot decode, with a code and a reason, once per consumer
 * group; consume everything else; reach the end of every topic (no crash, no stall); and never let
 * one tenant's feedback touch another tenant's prediction.
 */
const config = testConfig({ EDDY_FEEDBACK_MAX_WAITS: '2' });
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
const letters: DeadLetter[] = [];
const SEED = Number(process.env.FUZZ_SEED ?? 20261127);
const PER_KIND = 12;

const EVENT_OF_TOPIC: Partial<Record<TopicName, EventName>> = {
  examples: 'LabeledExample', labels: 'LabelSetChanged', predictions: 'PredictionMade', feedback: 'PredictionFeedback',
};
const TOPICS = [...new Set(PROCESSORS.flatMap((p) => p.topics))];
const groupsOf = (topic: TopicName) => PROCESSORS.filter((p) => p.topics.includes(topic)).map((p) => `processors.${p.name}`);

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
  procs = await startProcessors(config, { waitForAssignment: true });
  const reader = streams.consumer({
    group: 'fuzz-dead-letters', topics: ['dead-letters'],
    handler: { async handle(records) { for (const r of records) letters.push(r.event.value as DeadLetter); } },
  });
  await reader.start();
  afterAllStops.push(() => reader.stop());
}, 120_000);

const afterAllStops: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const stop of afterAllStops) await stop();
  await procs?.stop();
  await cleanupProcessorsTest(config, streams);
});

function validEvent(name: EventName, clientId: string): Record<string, unknown> {
  switch (name) {
    case 'LabeledExample': return { ...example(clientId, 'Network') };
    case 'LabelSetChanged': return { ...labelAdded(clientId, 'Network') };
    case 'PredictionMade': return { ...prediction(clientId, randomUUID(), 'Network') };
    default: return { ...feedback(clientId, randomUUID(), 'ACCEPTED') };
  }
}

function header(schemaId: number): Buffer {
  const h = Buffer.alloc(5);
  h.writeInt32BE(schemaId, 1);
  return h;
}

/** Messages no consumer can decode: each must come back as one dead letter per consumer group. */
function undecodable(topic: TopicName): Array<{ key: string; value: Buffer | null; kind: string }> {
  const name = EVENT_OF_TOPIC[topic] ?? 'LabeledExample';
  const type = avro.Type.forSchema(loadSchema(name) as avro.Schema);
  const id = streams.codec.schemaId(name);
  const foreign = topic === 'examples' ? 'PredictionMade' : 'LabeledExample'; // a type that does not belong here
  const out: Array<{ key: string; value: Buffer | null; kind: string }> = [];
  const sample = <T>(arb: fc.Arbitrary<T>, n = PER_KIND) => fc.sample(arb, { numRuns: n, seed: SEED + out.length });
  const add = (kind: string, values: Array<Buffer | null>) => values.forEach((value, i) => out.push({ key: `fuzz-${topic}-${kind}-${i}`, value, kind }));
  add('null', [null]);
  add('short', sample(fc.uint8Array({ maxLength: 4 })).map((b) => Buffer.from(b)));
  // A first byte other than 0 is not the Confluent wire format, whatever follows.
  add('magic', sample(fc.tuple(fc.integer({ min: 1, max: 255 }), fc.uint8Array({ minLength: 4, maxLength: 300 }))).map(([m, b]) => Buffer.concat([Buffer.from([m]), Buffer.from(b)])));
  add('unknown-id', sample(fc.tuple(fc.integer({ min: 2_000_000_000, max: 2 ** 31 - 1 }), fc.uint8Array({ maxLength: 100 }))).map(([sid, b]) => Buffer.concat([header(sid), Buffer.from(b)])));
  add('truncated', sample(fc.double({ min: 0.05, max: 0.6, noNaN: true })).map((share) => {
    const body = type.toBuffer(validEvent(name, 'acme'));
    return Buffer.concat([header(id), body.subarray(0, Math.floor(body.length * share))]);
  }));
  add('wrong-type', [streams.codec.encode(foreign as 'LabeledExample', validEvent(foreign, 'acme') as never)]);
  add('empty-client', [Buffer.concat([header(id), type.toBuffer({ ...validEvent(name, 'acme'), clientId: '' })])]);
  return out;
}

/** Decodable events with hostile content: consumed (or dead-lettered with a reason), never a crash or a stall. */
function oddEvents(topic: TopicName): Array<{ key: string; value: Buffer }> {
  const name = EVENT_OF_TOPIC[topic];
  if (!name) return [];
  const hostile = fc.oneof(
    fc.string({ unit: 'binary', minLength: 1, maxLength: 60 }),
    fc.constantFrom('\u0000', 'a\u0000b', '\uD800', 'x\uDFFFy', '\u202Eevil', 'x'.repeat(100_000)),
  );
  const values = fc.sample(fc.record({ text: hostile, label: fc.oneof(hostile, fc.constant('')), client: fc.constantFrom('acme', 'globex', 'z'.repeat(2_000)), meta: fc.integer({ min: 0, max: 3_000 }) }), { numRuns: PER_KIND, seed: SEED + 7 });
  return values.map((v, i) => {
    const event = validEvent(name, v.client);
    if ('text' in event) event.text = v.text;
    if ('label' in event) event.label = v.label;
    if ('metadata' in event) event.metadata = Object.fromEntries(Array.from({ length: v.meta }, (_, j) => [`k${j}`, v.text.slice(0, 50)]));
    // The key says globex, the event says otherwise: the event's clientId is what counts.
    return { key: i % 3 === 0 ? 'globex' : v.client, value: streams.codec.encode(name, event as never) };
  });
}

describe('hostile messages on every consumed topic (generated)', () => {
  it('dead-letters every undecodable message once per consumer group with a code and a reason, consumes the odd ones, reaches the end of every topic', async () => {
    const expected = new Map<string, string>(); // `${topic}/${key}/${group}` -> kind
    for (const topic of TOPICS) {
      const bad = undecodable(topic);
      const odd = oddEvents(topic);
      await streams.producer.sendMessages([{ topic: streams.topics.physical(topic), messages: [...bad, ...odd].map((m) => ({ key: m.key, value: m.value })) }]);
      for (const m of bad) for (const g of groupsOf(topic)) expected.set(`${streams.topics.physical(topic)}/${m.key}/${streams.topics.group(g)}`, m.kind);
    }
    // A valid event after the storm, per topic: consumption must have continued past everything.
    await streams.producer.sendAll([
      { name: 'LabelSetChanged', value: labelAdded('sentinel', 'Network') },
      { name: 'LabeledExample', value: example('sentinel', 'Network') },
    ]);
    await waitFor('every processor at the end of every topic', async () => {
      for (const p of PROCESSORS) if (!(await caughtUp(streams, `processors.${p.name}`, p.topics))) return false;
      return true;
    }, 90_000, 250);
    await waitFor('the dead letters read', () => [...expected.keys()].every((k) => letters.some((d) => `${d.sourceTopic}/${d.clientId}/${d.consumerGroup}` === k)), 30_000);

    for (const d of letters) {
      expect(['UNDECODABLE', 'UNKNOWN_SCHEMA', 'UNEXPECTED_TYPE', 'INVALID', 'HANDLER_FAILED']).toContain(d.errorCode);
      expect(d.reason.length, JSON.stringify(d)).toBeGreaterThan(10);
    }
    // Exactly once per group for each undecodable message (a redelivery would show twice).
    const perMessage = new Map<string, number>();
    for (const d of letters) perMessage.set(`${d.sourceTopic}/${d.clientId}/${d.consumerGroup}`, (perMessage.get(`${d.sourceTopic}/${d.clientId}/${d.consumerGroup}`) ?? 0) + 1);
    for (const k of expected.keys()) expect(perMessage.get(k), k).toBe(1);
    const codes = new Map<string, string>();
    for (const d of letters) codes.set(`${d.sourceTopic}/${d.clientId}/${d.consumerGroup}`, d.errorCode);
    const codeOf = (kind: string) => [...expected].filter(([, k]) => k === kind).map(([key]) => codes.get(key));
    expect(new Set(codeOf('magic'))).toEqual(new Set(['UNDECODABLE']));
    expect(new Set(codeOf('unknown-id'))).toEqual(new Set(['UNKNOWN_SCHEMA']));
    expect(new Set(codeOf('wrong-type'))).toEqual(new Set(['UNEXPECTED_TYPE']));
    expect(new Set(codeOf('empty-client'))).toEqual(new Set(['INVALID']));
    // The sentinel was processed: its example counted by the features processor.
    const counts = await procs.redis.hgetall(`${config.redisPrefix}:{sentinel}:f:counts`);
    expect(Number(counts.examples)).toBe(1);
  }, 180_000);

  it("one tenant's feedback naming another tenant's request never reaches the other tenant", async () => {
    const requestId = `fuzz-${randomUUID()}`;
    await streams.producer.send('PredictionMade', prediction('globex', requestId, 'Network', { text: 'globex only' }));
    // The record is written by two processors (features: the text; monitor: the join's fields), so it is
    // complete only once every processor reading PredictionMade has committed past it.
    const writers = PROCESSORS.filter((x) => x.topics.includes('predictions'));
    expect(writers.map((x) => x.name)).toEqual(expect.arrayContaining(['features', 'monitor']));
    await waitFor("globex's prediction record, written by every processor", async () => {
      for (const p of writers) {
        if (!(await caughtUp(streams, `processors.${p.name}`, ['predictions']))) return false;
      }
      return (await procs.redis.exists(predictionKey(config.redisPrefix, 'globex', requestId))) === 1;
    }, 60_000, 250);
    const before = await procs.redis.hgetall(predictionKey(config.redisPrefix, 'globex', requestId));
    const forged = feedback('acme', requestId, 'REASSIGNED', 'Payroll');
    await streams.producer.send('PredictionFeedback', forged);
    // acme has no such prediction: after its bounded waits the feedback is dead-lettered, under acme.
    const dead = await waitFor('the forged feedback dead-lettered', () => letters.find((d) => d.value && d.clientId === 'acme' && d.consumerGroup === streams.topics.group('processors.feedback') && d.value.includes(Buffer.from(requestId))), 60_000);
    expect(dead.reason).toMatch(/prediction|unknown|not/i);
    expect(await procs.redis.hgetall(predictionKey(config.redisPrefix, 'globex', requestId))).toEqual(before);
    expect(await procs.redis.exists(predictionKey(config.redisPrefix, 'acme', requestId))).toBe(0);
  }, 120_000);
});
