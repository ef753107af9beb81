import fs from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { SchemaRegistry, COMPATIBILITY } from '@kafkajs/confluent-schema-registry';
import { keyPattern } from '../common/keyspace.ts';
import { FsModelStore } from '../models/store.ts';
import { readReviewQueue, reviewItemId } from '../models/review.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import type { LabeledExample, PredictionMade } from '../schemas/events.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import type { AnyEvent, EventRecord, Streams } from '../streams/index.ts';
import { uniqueName, waitFor } from './helpers.ts';
import { collect } from './monitor-support.ts';
import { feedback, prediction } from './processors-support.ts';
import { CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/** The review queue: the processor (through Kafka), the API, the REVIEW source and its schema evolution. */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let procs: RunningProcessors;
let server: PredictionServer;
let seen: AnyEvent[];
const redis = new Redis();

beforeAll(async () => {
  config = await serverTestConfig({ EDDY_REVIEW_UNSURE_BELOW: '0.6', EDDY_REVIEW_CONFIDENT_ABOVE: '0.8', EDDY_REVIEW_MAX_ITEMS: '50' });
  streams = await serverTestStreams(config);
  seen = await collect(streams, ['examples', 'dead-letters']);
  procs = await startProcessors(config, { only: ['review'], waitForAssignment: true });
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
}, 120_000);

afterAll(async () => {
  await server?.close();
  await procs?.stop();
  await streams?.cleanup();
  await config?.cleanupStore();
  if (config) {
    const keys = await redis.keys(keyPattern(config.redisPrefix));
    if (keys.length) await redis.del(...keys);
  }
  redis.disconnect();
});

const queue = (clientId: string) => readReviewQueue(redis, config.redisPrefix, clientId, { limit: 100, offset: 0 });
const served = (clientId: string, text: string, top: number, over: Partial<PredictionMade> = {}): PredictionMade =>
  prediction(clientId, randomUUID(), 'Network', { text, scores: [{ label: 'Network', score: top }, { label: 'Hardware', score: 1 - top }], ...over });

async function api(method: string, p: string, body?: unknown, key = CLIENT_KEYS.acme!): Promise<{ status: number; body: Json }> {
  const res = await fetch(server.url + p, { method, headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Json };
}

describe('review processor', () => {
  it('queues unsure predictions, least sure first, and not the confident ones', async () => {
    const c = 'unsure-co';
    await streams.producer.sendAll([served(c, 'printer is odd', 0.55), served(c, 'something about the vpn maybe', 0.35), served(c, 'vpn down', 0.95)]
      .map((value) => ({ name: 'PredictionMade' as const, value })));
    const q = await waitFor('two unsure items', async () => ((await queue(c)).total === 2 ? queue(c) : undefined));
    expect(q.items.map((i) => [i.text, i.reasons.map((r) => r.reason)])).toEqual([['something about the vpn maybe', ['UNSURE']], ['printer is odd', ['UNSURE']]]);
    expect(q.items[0]!.priority).toBeCloseTo(0.65, 9);
    expect(q.items[0]!.scores).toHaveLength(2);
  });

  it('de-duplicates: one item per normalised text, redeliveries counted once', async () => {
    const c = 'dedup-co';
    const first = served(c, 'Réseau en panne', 0.4);
    await streams.producer.sendAll([first, first, served(c, 'RESEAU EN PANNE', 0.45), served(c, 'reseau   en panne', 0.5)].map((value) => ({ name: 'PredictionMade' as const, value })));
    const item = await waitFor('three requests of one text', async () => (await queue(c)).items.find((i) => i.occurrences === 3));
    expect((await queue(c)).total).toBe(1);
    expect(item.itemId).toBe(reviewItemId('Réseau en panne'));
    // Three requests of one text are worth more than one: +0.02 per further request.
    expect(item.priority).toBeCloseTo(1 - 0.5 + 0.04, 9);
  });

  it('queues a confidently wrong answer above everything unsure, also when the feedback came first', async () => {
    const c = 'wrong-co';
    const sure = served(c, 'my laptop screen is black', 0.93);
    const sureToo = served(c, 'keyboard types nothing', 0.9);
    const accepted = served(c, 'wifi gone', 0.97);
    const unsure = served(c, 'hmm', 0.3);
    await streams.producer.sendAll([
      { name: 'PredictionFeedback', value: feedback(c, sureToo.requestId, 'REJECTED') },
      ...[sure, sureToo, accepted, unsure].map((value) => ({ name: 'PredictionMade' as const, value })),
      { name: 'PredictionFeedback', value: feedback(c, sure.requestId, 'REASSIGNED', 'Hardware') },
      { name: 'PredictionFeedback', value: feedback(c, accepted.requestId, 'ACCEPTED') },
    ]);
    const q = await waitFor('two confidently wrong and one unsure', async () => ((await queue(c)).total === 3 ? queue(c) : undefined));
    expect(q.items.map((i) => i.text)).toEqual(['my laptop screen is black', 'keyboard types nothing', 'hmm']);
    expect(q.items[0]).toMatchObject({ reasons: [{ reason: 'CONFIDENTLY_WRONG' }], feedback: { outcome: 'REASSIGNED', correctLabel: 'Hardware' } });
    expect(q.items[0]!.reasons[0]!.score).toBeCloseTo(1.93, 9);
    expect(q.items[1]).toMatchObject({ reasons: [{ reason: 'CONFIDENTLY_WRONG' }], feedback: { outcome: 'REJECTED', correctLabel: null } });
    expect(q.items[1]!.reasons[0]!.score).toBeCloseTo(1.9, 9);
  });

  it('queues requests the shadow version answered differently', async () => {
    const c = 'shadow-co';
    const live = served(c, 'salary or vpn?', 0.85);
    const shadow: PredictionMade = { ...live, eventId: randomUUID(), label: 'Payroll', scores: [{ label: 'Payroll', score: 0.7 }], modelVersion: 'v2', variant: 'SHADOW' };
    const agreeLive = served(c, 'vpn vpn', 0.9);
    const agreeShadow: PredictionMade = { ...agreeLive, eventId: randomUUID(), modelVersion: 'v2', variant: 'SHADOW' };
    await streams.producer.sendAll([live, shadow, agreeLive, agreeShadow].map((value) => ({ name: 'PredictionMade' as const, value })));
    const q = await waitFor('the disagreement', async () => ((await queue(c)).total === 1 ? queue(c) : undefined));
    expect(q.items[0]).toMatchObject({ text: 'salary or vpn?', predicted: { label: 'Network', version: 'v1' }, shadow: { label: 'Payroll', version: 'v2', score: 0.7 } });
    expect(q.items[0]!.reasons.map((r) => r.reason)).toEqual(['DISAGREEMENT']);
    expect(q.items[0]!.reasons[0]!.score).toBeCloseTo(1.35, 9);
  });
});

describe('review API', () => {
  it('lists, labels (a LabeledExample with source REVIEW) and skips; closed items are not queued again', async () => {
    const texts = ['vpn or laptop, not sure', 'payslip and screen', 'something odd'];
    const made = texts.map((t) => served('acme', t, 0.4, { metadata: { channel: 'email' } }));
    await streams.producer.sendAll(made.map((value) => ({ name: 'PredictionMade' as const, value })));
    const list = await waitFor('three items', async () => {
      const r = await api('GET', '/v1/clients/acme/review?limit=10');
      return r.body.total === 3 ? r : undefined;
    });
    expect(list.status).toBe(200);
    expect(list.body.labels).toEqual(['Hardware', 'Network', 'Payroll']);
    const [a, b, cItem] = list.body.items as [Json, Json, Json];

    expect((await api('POST', `/v1/clients/acme/review/${a.itemId}/label`, { label: 'Sales' })).body.error.code).toBe('LABEL_UNKNOWN');
    const labelled = await api('POST', `/v1/clients/acme/review/${a.itemId}/label`, { label: 'Hardware', reviewer: 'ann' });
    expect(labelled.status).toBe(200);
    expect(labelled.body).toMatchObject({ itemId: a.itemId, label: 'Hardware', exampleId: `review:${a.itemId}` });
    const example = await waitFor('the LabeledExample', () => seen.find((e) => e.value.eventId === labelled.body.eventId));
    expect(example.value as LabeledExample).toMatchObject({
      clientId: 'acme', text: a.text, label: 'Hardware', source: 'REVIEW', exampleId: `review:${a.itemId}`,
      metadata: { channel: 'email', reviewer: 'ann' }, predictionId: a.requestId,
    });
    expect((await api('POST', `/v1/clients/acme/review/${b.itemId}/skip`, {})).body).toEqual({ itemId: b.itemId, skipped: true });
    expect((await api('POST', `/v1/clients/acme/review/${b.itemId}/skip`, {})).body.error.code).toBe('REVIEW_ITEM_UNKNOWN');
    expect((await api('POST', `/v1/clients/acme/review/${a.itemId}/label`, { label: 'Network' })).status).toBe(404);
    const after = await api('GET', '/v1/clients/acme/review');
    expect(after.body.items.map((i: Json) => i.itemId)).toEqual([cItem.itemId]);

    // The same texts asked again: labelled and skipped texts stay out of the queue.
    const again = texts.map((t) => served('acme', t, 0.3));
    const marker = served('acme', 'a fresh question', 0.3);
    await streams.producer.sendAll([...again, marker].map((value) => ({ name: 'PredictionMade' as const, value })));
    const final = await waitFor('the fresh question', async () => {
      const r = await api('GET', '/v1/clients/acme/review');
      return r.body.items.some((i: Json) => i.text === 'a fresh question') ? r : undefined;
    });
    expect(final.body.items.map((i: Json) => i.text).sort()).toEqual(['a fresh question', 'something odd']);
    expect(final.body.items.find((i: Json) => i.text === 'something odd').occurrences).toBe(2);
  });

  it('keeps each queue bounded: the least worth a label goes first', async () => {
    const c = 'bounded-co';
    const many = Array.from({ length: 55 }, (_, i) => served(c, `question ${i}`, 0.5 - i / 1000));
    await streams.producer.sendAll(many.map((value) => ({ name: 'PredictionMade' as const, value })));
    await waitFor('the last one processed', async () => (await queue(c)).items.some((i) => i.text === 'question 54'));
    const q = await queue(c);
    expect(q.total).toBe(50);
    expect(q.items.map((i) => i.text)).not.toContain('question 0');
    expect(await redis.exists(`${config.redisPrefix}:{${c}}:r:i:${reviewItemId('question 0')}`)).toBe(0);
  });
});

describe('the REVIEW source: a backward-compatible schema change', () => {
  const current = JSON.parse(fs.readFileSync('schemas/avro/LabeledExample.avsc', 'utf8')) as Json;
  /** LabeledExample as every build before the review queue had it (byte for byte what they registered). */
  const previous: Json = {
    type: 'record', name: 'LabeledExample', namespace: 'eddy.events',
    doc: 'A text that belongs to a label (team) of one client. The latest event per exampleId wins.',
    fields: [
      { name: 'eventId', type: 'string', doc: 'Unique id of this event; consumers use it to make processing idempotent.' },
      { name: 'clientId', type: 'string', doc: 'The tenant this event belongs to; also the Kafka message key.' },
      { name: 'occurredAt', type: { type: 'long', logicalType: 'timestamp-millis' }, doc: 'When it happened, epoch milliseconds.' },
      { name: 'exampleId', type: 'string', doc: 'Stable id of the labelled thing (ticket, request); a later event with the same id replaces the label.' },
      { name: 'text', type: 'string' },
      { name: 'label', type: 'string' },
      { name: 'source', type: { type: 'enum', name: 'ExampleSource', symbols: ['DEFINITION', 'ASSIGNMENT', 'REASSIGNMENT', 'IMPORT'] } },
      { name: 'metadata', type: { type: 'map', values: 'string' }, default: {}, doc: 'Free-form attributes such as requester or channel.' },
      { name: 'predictionId', type: ['null', 'string'], default: null, doc: 'Set when the example was derived from feedback on a prediction.' },
    ],
  };

  it('is accepted after the previous schema under BACKWARD by the real registry, which refuses a breaking one', async () => {
    const registry = new SchemaRegistry({ host: config.schemaRegistryUrl });
    const subject = `${uniqueName('compat')}.LabeledExample`;
    const opts = { subject, compatibility: COMPATIBILITY.BACKWARD };
    const v1 = await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(previous) }, opts);
    const v2 = await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(current) }, opts);
    expect(v2.id).not.toBe(v1.id);
    // The check is real: dropping a symbol would break readers of old events, and is refused.
    const breaking = structuredClone(current);
    breaking.fields.find((f: Json) => f.name === 'source').type.symbols = ['DEFINITION', 'ASSIGNMENT', 'REVIEW'];
    await expect(registry.register({ type: 'AVRO' as never, schema: JSON.stringify(breaking) }, opts)).rejects.toThrow();
  });

  it('a reader on the previous schema survives REVIEW examples: it dead-letters what it cannot read, with the reason, and goes on', async () => {
    // The previous build: this build's streams/, common/ and schemas/, with the previous LabeledExample.
    const dir = path.resolve('test-results', uniqueName('previous-build'));
    for (const folder of ['streams', 'common', 'schemas']) fs.cpSync(folder, path.join(dir, folder), { recursive: true });
    // Its own metrics library, as a separate process has (prom-client keeps one global registry per copy).
    fs.cpSync('node_modules/prom-client', path.join(dir, 'node_modules', 'prom-client'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'schemas', 'avro', 'LabeledExample.avsc'), JSON.stringify(previous, null, 2));
    // The previous build registered its schemas when they were current. A registry that never saw
    // the previous LabeledExample (a fresh one) refuses it now, after REVIEW was added, so that build
    // registers under subjects of its own; decoding is by schema id either way.
    const subjectPrefix = `eddy.test.${uniqueName('previous')}.`;
    const codecFile = path.join(dir, 'streams', 'codec.ts');
    fs.writeFileSync(codecFile, fs.readFileSync(codecFile, 'utf8').replace("DEFAULT_SUBJECT_PREFIX = 'eddy.events.'", `DEFAULT_SUBJECT_PREFIX = '${subjectPrefix}'`));
    const old = (await import(pathToFileURL(path.join(dir, 'streams', 'index.ts')).href)) as typeof import('../streams/index.ts');
    const oldStreams: Streams = await old.connectStreams(config, 'previous-build', { ensureTopics: false });
    const read: EventRecord[] = [];
    const runner = oldStreams.consumer({ group: `previous-reader-${randomUUID().slice(0, 6)}`, topics: ['examples'], handler: { async handle(records) { read.push(...records); } } });
    try {
      const assigned = runner.waitForAssignment();
      await runner.start();
      await assigned;
      const review: LabeledExample = { eventId: randomUUID(), clientId: 'compat', occurredAt: Date.now(), exampleId: 'r1', text: 'vpn', label: 'Network', source: 'REVIEW', metadata: {}, predictionId: null };
      const byOld: LabeledExample = { ...review, eventId: randomUUID(), exampleId: 'o1', source: 'ASSIGNMENT' };
      await streams.producer.send('LabeledExample', review);
      await oldStreams.producer.send('LabeledExample', byOld);
      await waitFor('the previous reader to read its own build\'s example', () => read.some((r) => r.event.value.eventId === byOld.eventId), 30_000);
      const dead = await waitFor('the REVIEW example dead-lettered', () => seen.find((e) => e.name === 'DeadLetter' && e.value.consumerGroup.includes('previous-reader')), 30_000);
      // Not retriable (it never will be readable by that build), so it is kept with the reason, not retried forever.
      expect(dead.value).toMatchObject({ sourceTopic: expect.stringContaining('examples'), errorCode: 'UNDECODABLE' });
      expect((dead.value as { reason: string }).reason).toMatch(/LabeledExample.*cannot be read by this build's schema/);
      expect(read.some((r) => r.event.value.eventId === review.eventId)).toBe(false);
      expect(runner.isRunning).toBe(true);
    } finally {
      await oldStreams.close();
      fs.rmSync(dir, { recursive: true, force: true });
      const subjects = (await (await fetch(`${config.schemaRegistryUrl}/subjects`)).json()) as string[];
      for (const subject of subjects.filter((x) => x.startsWith(subjectPrefix))) await fetch(`${config.schemaRegistryUrl}/subjects/${subject}`, { method: 'DELETE' });
    }
  });
});
