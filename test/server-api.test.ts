import { randomUUID } from 'node:crypto';
import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { metricsRegistry } from '../common/metrics.ts';
import { featureKeys } from '../common/keyspace.ts';
import { FsModelStore } from '../models/store.ts';
import type { PredictionMade } from '../schemas/events.ts';
import { compiledOnFirstUse, compileEveryRouteSchema, createApp } from '../server/app.ts';
import { ModelAdmin } from '../models/lifecycle.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { principalOfKey } from '../server/http/plumbing.ts';
import { derivedId } from '../common/ids.ts';
import { modelPublished } from './server-fixtures.ts';
import { waitFor } from './helpers.ts';
import { caughtUp } from './processors-support.ts';
import { testStreams } from './helpers.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let srv: PredictionServer;
const predictions: PredictionMade[] = [];
const deadLetters: string[] = [];

async function call(method: string, path: string, opts: { key?: string; body?: unknown; raw?: string; contentType?: string; server?: PredictionServer } = {}): Promise<{ status: number; body: Json; text: string }> {
  const headers: Record<string, string> = {};
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.body !== undefined || opts.raw !== undefined) headers['content-type'] = opts.contentType ?? 'application/json';
  const res = await fetch(`${(opts.server ?? srv).url}${path}`, {
    method, headers, body: opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body)),
  });
  const text = await res.text();
  let body: Json = {};
  try {
    body = JSON.parse(text) as Json;
  } catch {
    // /metrics is text
  }
  return { status: res.status, body, text };
}

const acme = CLIENT_KEYS.acme!;
const globex = CLIENT_KEYS.globex!;

beforeAll(async () => {
  config = await serverTestConfig({
    EDDY_SERVER_MAX_TEXT_CHARS: '200',
    EDDY_SERVER_MAX_METADATA_ENTRIES: '4',
    EDDY_SERVER_MAX_METADATA_BYTES: '100',
    EDDY_SERVER_MAX_BATCH: '5',
    // Behaviour, not speed: a generous deadline so a busy shared CPU cannot make Redis look slow.
    EDDY_SERVER_FEATURE_TIMEOUT_MS: '1000',
  });
  streams = await serverTestStreams(config);
  const store = new FsModelStore(config.modelStoreDir);
  await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  // globex has label definitions but no model: the baseline answers it.
  const now = Date.now();
  const labelEvent = (label: string, description: string, keywords: string[]) => ({
    name: 'LabelSetChanged' as const,
    value: { eventId: randomUUID(), clientId: 'globex', occurredAt: now, change: 'ADDED' as const, label, previousLabel: null, description, keywords },
  });
  await streams.producer.sendAll([
    labelEvent('Facilities', 'Office building, desks, heating and cleaning', ['desk', 'heating']),
    labelEvent('Finance', 'Invoices and expense reports', ['invoice', 'expenses']),
    labelEvent('Security', 'Badges and access cards', ['badge']),
  ]);
  srv = await startServer(config);
  await srv.kafkaReady;
  const tail = streams.consumer({
    group: 'test-tail', topics: ['predictions', 'dead-letters'],
    handler: {
      async handle(records) {
        for (const r of records) {
          if (r.event.name === 'PredictionMade') predictions.push(r.event.value);
          if (r.event.name === 'DeadLetter') deadLetters.push(r.event.value.reason);
        }
      },
    },
  });
  await tail.start();
});

afterAll(async () => {
  await srv?.close();
  await streams?.cleanup();
  await config?.cleanupStore();
});

describe('prediction API: answers', () => {
  it('predicts with the live model of a client', async () => {
    const r = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'my VPN keeps dropping', metadata: { channel: 'chat' } } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ label: 'Network', modelVersion: 'v1', variant: 'LIVE', featuresDefaulted: false, unsure: null });
    expect(r.body.scores).toHaveLength(3);
    expect(r.body.scores[0].score).toBeGreaterThanOrEqual(r.body.scores[1].score);
    expect(r.body.scores[1].score).toBeGreaterThanOrEqual(r.body.scores[2].score);
    expect(typeof r.body.requestId).toBe('string');
  });

  it('honours topK and a caller-chosen requestId', async () => {
    const r = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'laptop will not boot', topK: 1, requestId: 'req-42' } });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ label: 'Hardware', requestId: 'req-42' });
    expect(r.body.scores).toHaveLength(1);
  });

  it('answers a client without a model from its label definitions (BASELINE), else its majority label', async () => {
    const byKeyword = await call('POST', '/v1/clients/globex/predict', { key: globex, body: { text: 'The heating on floor 3 is broken' } });
    expect(byKeyword.status).toBe(200);
    expect(byKeyword.body).toMatchObject({ label: 'Facilities', variant: 'BASELINE', modelVersion: null });
    const byDescription = await call('POST', '/v1/clients/globex/predict', { key: globex, body: { text: 'question about my expense report' } });
    expect(byDescription.body.label).toBe('Finance');
    // No overlap at all, and no examples counted yet: the first label defined.
    const first = await call('POST', '/v1/clients/globex/predict', { key: globex, body: { text: 'zzz qqq' } });
    expect(first.body).toMatchObject({ label: 'Facilities', variant: 'BASELINE' });
    // Then the label with the most labelled examples, from the client's counters in Redis, as the
    // feature processor keeps them (test/processors-features.test.ts checks that side).
    const counts = featureKeys.counts(config.redisPrefix, 'globex');
    const redis = new Redis(config.redisUrl);
    try {
      await redis.hset(counts, { examples: '4', 'label:Security': '3', 'label:Finance': '1' });
      const none = await call('POST', '/v1/clients/globex/predict', { key: globex, body: { text: 'zzz qqq' } });
      expect(none.body).toMatchObject({ label: 'Security', variant: 'BASELINE' });
      expect(none.body.scores.map((s: Json) => s.label)).toEqual(['Security', 'Finance', 'Facilities']);
    } finally {
      await redis.del(counts);
      redis.disconnect();
    }
  });

  it('predicts a batch in order', async () => {
    const r = await call('POST', '/v1/clients/acme/predict/batch', {
      key: acme, body: { items: [{ text: 'wifi is slow' }, { text: 'my payslip is wrong' }, { text: 'keyboard broken', metadata: { requester: 'ann' } }] },
    });
    expect(r.status).toBe(200);
    expect(r.body.predictions.map((p: Json) => p.label)).toEqual(['Network', 'Payroll', 'Hardware']);
  });

  it('describes the client model (live, canary, shadow)', async () => {
    const r = await call('GET', '/v1/clients/acme/model', { key: acme });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ clientId: 'acme', live: { version: 'v1', pinned: false, metrics: { accuracy: 0.9 } }, canary: null, shadow: null, baseline: false });
    // The model builder's fields of ModelPublished: kind, configuration, CV score, backend, calibration.
    expect(r.body.live).toMatchObject({
      kind: 'sparse-linear', config: { kind: 'sparse-linear', params: { C: 10 }, charNgrams: [] }, cvMacroF1: 0.87, searched: true, backend: 'fixture',
      calibration: { temperature: 1.5, unsureBelow: 0.35, eceBefore: 0.12, eceAfter: 0.03 },
    });
    const g = await call('GET', '/v1/clients/globex/model', { key: globex });
    expect(g.body).toMatchObject({ live: null, baseline: true });
  });

  it('publishes every HTTP prediction as PredictionMade, and answers PredictionRequested on Kafka the same way', async () => {
    const http = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'internet is down', requestId: 'http-1' } });
    expect(http.status).toBe(200);
    const published = await waitFor('HTTP PredictionMade', () => predictions.find((p) => p.requestId === 'http-1'));
    expect(published).toMatchObject({ clientId: 'acme', label: 'Network', channel: 'HTTP', variant: 'LIVE', modelVersion: 'v1', text: 'internet is down' });
    // The same requestId again (a client retrying on another replica) logs under the same eventId: readers keep one.
    expect((await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'internet is down', requestId: 'http-1' } })).status).toBe(200);
    await waitFor('the repeated PredictionMade', () => predictions.filter((p) => p.requestId === 'http-1').length === 2);
    expect(new Set(predictions.filter((p) => p.requestId === 'http-1').map((p) => p.eventId))).toEqual(new Set([published.eventId]));

    const eventId = randomUUID();
    await streams.producer.send('PredictionRequested', { eventId, clientId: 'acme', occurredAt: Date.now(), requestId: 'kafka-1', text: 'bonus missing from salary', metadata: {} });
    const answer = await waitFor('KAFKA PredictionMade', () => predictions.find((p) => p.requestId === 'kafka-1'), 30_000);
    expect(answer).toMatchObject({ clientId: 'acme', label: 'Payroll', channel: 'KAFKA', variant: 'LIVE', modelVersion: 'v1' });
    expect(answer.latencyMs).toBeGreaterThan(0);

    // A request for a client nobody knows cannot be answered: dead-lettered with the reason, not dropped.
    await streams.producer.send('PredictionRequested', { eventId: randomUUID(), clientId: 'nobody', occurredAt: Date.now(), requestId: 'kafka-2', text: 'hello', metadata: {} });
    await waitFor('dead letter for unknown client', () => deadLetters.find((d) => d.includes("'nobody'")), 30_000);
    // The channel limits are the HTTP limits: too much metadata is refused (dead-lettered) too.
    await streams.producer.send('PredictionRequested', { eventId: randomUUID(), clientId: 'acme', occurredAt: Date.now(), requestId: 'kafka-3', text: 'hello', metadata: { a: '1', b: '2', c: '3', d: '4', e: '5' } });
    await waitFor('dead letter for too much metadata', () => deadLetters.find((d) => d.includes('metadata has 5 entries')), 30_000);
    // The runner sends a call's answers before its dead letters: once the reader has read all
    // that the predictions topic holds now, an answer to kafka-3 would be among them.
    await waitFor('the reader to read every answer sent', () => caughtUp(streams, 'test-tail', ['predictions', 'dead-letters']), 30_000);
    expect(predictions.find((p) => p.requestId === 'kafka-3')).toBeUndefined();
  });

  it('reads real-time features from Redis, and answers with defaults flagged when Redis is down', async () => {
    const redis = new Redis(config.redisUrl);
    try {
      await redis.hset(featureKeys.entity(config.redisPrefix, 'acme', 'requester', 'zoe'), { Payroll: '5', _t: String(Date.now()) });
      const up = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'hello there', metadata: { requester: 'zoe' } } });
      expect(up.status).toBe(200);
      expect(up.body.featuresDefaulted).toBe(false);
    } finally {
      await redis.del(featureKeys.entity(config.redisPrefix, 'acme', 'requester', 'zoe'));
      redis.disconnect();
    }
    // A replica whose Redis is unreachable still answers every prediction, with defaulted features.
    const down = await startServer({ ...config, redisUrl: 'redis://127.0.0.1:1', server: { ...config.server, replicaId: 'redisless' } }, { kafkaPredict: false });
    try {
      await down.ready;
      const before = await defaultedCount();
      const r = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'vpn down', metadata: { requester: 'zoe' } }, server: down });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ label: 'Network', featuresDefaulted: true, variant: 'LIVE' });
      expect(await defaultedCount()).toBe(before + 1);
    } finally {
      await down.close();
    }
  });

  it('exports Prometheus metrics to the admin key', async () => {
    const r = await call('GET', '/metrics', { key: ADMIN_KEY });
    expect(r.status).toBe(200);
    for (const name of ['eddy_server_request_seconds_bucket', 'eddy_server_predictions_total', 'eddy_server_model_loads_total', 'eddy_server_model_cache_total', 'eddy_server_errors_total']) {
      expect(r.text).toContain(name);
    }
  });

  it('counts every prediction and request in what /metrics serves (request-path counters are flushed when read)', async () => {
    const sum = (text: string, series: RegExp) => text.split('\n').filter((l) => series.test(l)).reduce((a, l) => a + Number(l.split(' ').at(-1)), 0);
    const read = async () => {
      const text = (await call('GET', '/metrics', { key: ADMIN_KEY })).text;
      return {
        predictions: sum(text, /^eddy_server_predictions_total\{channel="HTTP",variant="(LIVE|CANARY|BASELINE)"\}/),
        requests: sum(text, /^eddy_server_requests_total\{route="\/v1\/clients\/:clientId\/predict",status="200"\}/),
      };
    };
    const before = await read();
    for (let i = 0; i < 3; i++) expect((await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'my laptop will not boot' } })).status).toBe(200);
    const after = await read();
    expect(after.predictions - before.predictions).toBe(3);
    expect(after.requests - before.requests).toBe(3);
  });

  it('reports health and readiness', async () => {
    expect((await call('GET', '/healthz')).body).toEqual({ status: 'ok' });
    const ready = await call('GET', '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.status).toBe('ready');
  });
});

async function defaultedCount(): Promise<number> {
  const m = await metricsRegistry.getSingleMetric('eddy_server_features_defaulted_total')?.get();
  return m?.values[0]?.value ?? 0;
}

describe('prediction API: authentication, tenant isolation and limits', () => {
  const expectError = (r: { status: number; body: Json; text: string }, status: number, code: string) => {
    expect(r.status).toBe(status);
    expect(r.body.error?.code).toBe(code);
    expect(typeof r.body.error?.message).toBe('string');
    expect(r.text).not.toMatch(/\n\s+at |stack/); // never a stack trace
  };

  it('401 without a key or with an unknown key', async () => {
    expectError(await call('POST', '/v1/clients/acme/predict', { body: { text: 'x' } }), 401, 'UNAUTHENTICATED');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: 'not-a-real-key-0000000000', body: { text: 'x' } }), 401, 'UNAUTHENTICATED');
    expectError(await call('GET', '/v1/clients/acme/model'), 401, 'UNAUTHENTICATED');
    // Authentication comes before validation: no hints about the API without a key.
    expectError(await call('POST', '/v1/clients/acme/predict', { body: { nonsense: true } }), 401, 'UNAUTHENTICATED');
  });

  it('a key stands for the admin, a client, or nobody; the admin key wins over a client key equal to it', () => {
    const apiKeys = new Map([['k-acme', 'acme'], ['k-globex', 'globex'], ['k-admin', 'acme']]);
    const config = { adminKey: 'k-admin', apiKeys };
    expect(principalOfKey(config, 'k-admin')).toEqual({ kind: 'admin' });
    expect(principalOfKey(config, 'k-acme')).toEqual({ kind: 'client', clientId: 'acme' }); // acme's other key: compared, not the admin's
    expect(principalOfKey(config, 'k-globex')).toEqual({ kind: 'client', clientId: 'globex' });
    expect(principalOfKey(config, 'k-admin-')).toBeUndefined();
    expect(principalOfKey(config, '')).toBeUndefined();
    expect(principalOfKey({ adminKey: '', apiKeys }, 'k-admin')).toEqual({ kind: 'client', clientId: 'acme' }); // no admin key configured
    expect(principalOfKey({ adminKey: 'k-root', apiKeys }, 'k-root')).toEqual({ kind: 'admin' });
    expect(principalOfKey({ adminKey: 'k-root', apiKeys }, 'k-acme')).toEqual({ kind: 'client', clientId: 'acme' });
  });

  it('403 when a key acts for another client, or a client key calls an admin endpoint', async () => {
    expectError(await call('POST', '/v1/clients/globex/predict', { key: acme, body: { text: 'x' } }), 403, 'FORBIDDEN');
    expectError(await call('POST', '/v1/clients/globex/predict/batch', { key: acme, body: { items: [{ text: 'x' }] } }), 403, 'FORBIDDEN');
    expectError(await call('GET', '/v1/clients/globex/model', { key: acme }), 403, 'FORBIDDEN');
    expectError(await call('POST', '/v1/admin/clients/acme/promote', { key: acme, body: { version: 'v1' } }), 403, 'FORBIDDEN');
    expectError(await call('POST', '/v1/admin/clients/acme/rollback', { key: acme, body: {} }), 403, 'FORBIDDEN');
    expectError(await call('POST', '/v1/admin/clients/acme/pin', { key: acme, body: {} }), 403, 'FORBIDDEN');
  });

  it('the admin key may act for any client', async () => {
    const r = await call('POST', '/v1/clients/globex/predict', { key: ADMIN_KEY, body: { text: 'desk is wobbly' } });
    expect(r.status).toBe(200);
    expect(r.body.label).toBe('Facilities');
  });

  it('404 for an unknown client, route or version', async () => {
    expectError(await call('POST', '/v1/clients/nobody/predict', { key: ADMIN_KEY, body: { text: 'x' } }), 404, 'CLIENT_UNKNOWN');
    expectError(await call('GET', '/v1/clients/nobody/model', { key: ADMIN_KEY }), 404, 'CLIENT_UNKNOWN');
    expectError(await call('POST', '/v1/clients/initech/predict', { key: CLIENT_KEYS.initech, body: { text: 'x' } }), 404, 'CLIENT_UNKNOWN');
    expectError(await call('GET', '/v2/nothing'), 404, 'NOT_FOUND');
    expectError(await call('POST', '/v1/admin/clients/acme/promote', { key: ADMIN_KEY, body: { version: 'v99' } }), 404, 'VERSION_UNKNOWN');
  });

  it('400 for invalid bodies, naming the problem', async () => {
    const missing = await call('POST', '/v1/clients/acme/predict', { key: acme, body: {} });
    expectError(missing, 400, 'INVALID_REQUEST');
    expect(missing.body.error.message).toMatch(/text/);
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 42 } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: '' } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x', extra: 1 } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x', metadata: { n: 5 } } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x', topK: 0 } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, raw: '{"text": "unterminated' }), 400, 'INVALID_JSON');
    expectError(await call('POST', '/v1/clients/acme/predict/batch', { key: acme, body: { items: [] } }), 400, 'INVALID_REQUEST');
    expectError(await call('POST', '/v1/admin/clients/acme/promote', { key: ADMIN_KEY, body: { version: 'v1', share: 2 } }), 400, 'INVALID_REQUEST');
  });

  it('compiles every route\'s schemas, which the server compiles only on a route\'s first use', async () => {
    // Every route of the running server (predict, admin, review, dashboard): a schema that did not
    // compile would fail here, as it would have failed the start before schemas compiled lazily.
    expect(compileEveryRouteSchema(srv.app)).toBeGreaterThan(40);
    // On first use: a schema that cannot compile fails only when its route first validates.
    const { compilersFactory } = compiledOnFirstUse();
    const compile = compilersFactory.buildValidator!({}, { customOptions: {} } as never) as unknown as (route: object) => (data: unknown) => unknown;
    const validate = compile({ schema: { type: 'no such type' }, method: 'POST', url: '/x', httpPart: 'body' });
    expect(() => validate({})).toThrow(/type/);
    // And validates as Fastify's own: same verdict, same errors.
    const strict = compile({ schema: { type: 'object', properties: { n: { type: 'number', minimum: 0 } } }, method: 'POST', url: '/x', httpPart: 'body' }) as ((data: unknown) => boolean) & { errors?: unknown };
    expect(strict({ n: 1 })).toBe(true);
    expect(strict({ n: -1 })).toBe(false);
    expect(strict.errors).toEqual([expect.objectContaining({ instancePath: '/n', keyword: 'minimum' })]);
  });

  it('answers Fastify\'s own refusals in the documented envelope too: 415 for a non-JSON body, 400 for an over-long path parameter', async () => {
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, raw: 'my laptop will not boot', contentType: 'text/plain' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, raw: '<text>x</text>', contentType: 'application/xml' }), 415, 'UNSUPPORTED_MEDIA_TYPE');
    // Longer than a client id may be (200): the schema answers, naming the parameter.
    const long = await call('GET', `/v1/clients/${'c'.repeat(5000)}/model`, { key: ADMIN_KEY });
    expectError(long, 400, 'INVALID_REQUEST');
    const huge = await call('GET', `/v1/clients/${'c'.repeat(300)}/model`, { key: ADMIN_KEY });
    expectError(huge, 400, 'INVALID_REQUEST');
    expect(huge.body.error.details?.[0]?.path).toBe('/clientId');
    // A malformed percent-encoding in the path is the router's to refuse.
    expectError(await call('GET', '/v1/clients/%E0%A4%A/model', { key: ADMIN_KEY }), 400, 'INVALID_REQUEST');
  });

  it('413 beyond the text, metadata, batch and body limits', async () => {
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'a'.repeat(201) } }), 413, 'TEXT_TOO_LONG');
    expect((await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'a'.repeat(200) } })).status).toBe(200);
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x', metadata: { a: '1', b: '2', c: '3', d: '4', e: '5' } } }), 413, 'METADATA_TOO_LARGE');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x', metadata: { a: 'v'.repeat(100) } } }), 413, 'METADATA_TOO_LARGE');
    expectError(await call('POST', '/v1/clients/acme/predict/batch', { key: acme, body: { items: Array.from({ length: 6 }, () => ({ text: 'x' })) } }), 413, 'BATCH_TOO_LARGE');
    expectError(await call('POST', '/v1/clients/acme/predict/batch', { key: acme, body: { items: [{ text: 'ok' }, { text: 'b'.repeat(201) }] } }), 413, 'TEXT_TOO_LONG');
    expectError(await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'x'.repeat(2_000_000) } }), 413, 'PAYLOAD_TOO_LARGE');
  });

  it('503 with Retry-After until the registry caught up', async () => {
    const notReady = createApp({
      config: config.server,
      service: srv.service, registry: srv.registry, manager: srv.manager, publisher: srv.publisher,
      admin: new ModelAdmin(srv.registry, streams.producer), isReady: () => false, logger: srv.logger,
    });
    try {
      const r = await notReady.inject({ method: 'POST', url: '/v1/clients/acme/predict', headers: { authorization: `Bearer ${acme}` }, payload: { text: 'x' } });
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBe('1');
      expect(r.json().error.code).toBe('NOT_READY');
      expect((await notReady.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(503);
      expect((await notReady.inject({ method: 'GET', url: '/healthz' })).statusCode).toBe(200);
    } finally {
      await notReady.close();
    }
  });
});

describe('prediction server: readiness, slow dependencies, redelivery', () => {
  it('is ready only once every model event already in the log has been applied', async () => {
    const before = srv.registry.size;
    await streams.producer.sendAll(Array.from({ length: 300 }, (_, i) => ({
      name: 'ModelPublished' as const,
      value: modelPublished({ clientId: `bulk${i}`, version: 'v1', uri: `eddy-store://sha256/${'0'.repeat(64)}`, sha256: '0'.repeat(64), labels: ['A'] }),
    })));
    const late = await startServer({ ...config, server: { ...config.server, replicaId: 'late' } }, { kafkaPredict: false });
    try {
      expect(late.follower.ready).toBe(false);
      // Poll from the start: every answer is either 503 NOT_READY, or ready with the whole log
      // applied (readyz reports the registry's size in the same answer that says ready).
      const answers: number[] = [];
      for (;;) {
        const r = await call('GET', '/readyz', { server: late });
        answers.push(r.status);
        if (r.status === 200) {
          expect(r.body.clients).toBeGreaterThanOrEqual(before + 300);
          break;
        }
        expect(r.status).toBe(503);
        expect(r.body.error.code).toBe('NOT_READY');
      }
      expect(answers.at(-1)).toBe(200);
      await late.ready;
      expect(late.registry.size).toBeGreaterThanOrEqual(before + 300);
      expect(late.registry.get('bulk299')?.live).toBe('v1');
    } finally {
      await late.close();
    }
  });

  it('answers with defaulted features when Redis is slower than the deadline', async () => {
    // Real Redis behind a proxy that delays every request by 50 ms (the deadline is 5 ms).
    const target = new URL(config.redisUrl);
    const sockets = new Set<net.Socket>();
    const proxy = net.createServer((client) => {
      const upstream = net.connect(Number(target.port || 6379), target.hostname);
      sockets.add(client).add(upstream);
      client.on('data', (d) => setTimeout(() => upstream.write(d), 50));
      upstream.on('data', (d) => client.write(d));
      const end = () => { client.destroy(); upstream.destroy(); };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    const port = (proxy.address() as net.AddressInfo).port;
    const slow = await startServer(
      { ...config, redisUrl: `redis://127.0.0.1:${port}`, server: { ...config.server, replicaId: 'slow-redis', featureTimeoutMs: 5 } },
      { kafkaPredict: false },
    );
    try {
      await slow.ready;
      await waitFor('redis connected through the proxy', () => slow.redis.status === 'ready');
      const r = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'wifi broken', metadata: { requester: 'zoe' } }, server: slow });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ label: 'Network', featuresDefaulted: true, modelVersion: 'v1' });
      // Without entities in the metadata nothing is read, so nothing is defaulted.
      const none = await call('POST', '/v1/clients/acme/predict', { key: acme, body: { text: 'wifi broken' }, server: slow });
      expect(none.body.featuresDefaulted).toBe(false);
    } finally {
      await slow.close();
      for (const sock of sockets) sock.destroy();
      await new Promise((r) => proxy.close(r));
    }
  });

  it('answers a Kafka request for a client that signed up just before it, while the registry is still behind the log, instead of dead-lettering it', async () => {
    // A backlog on the labels topic keeps the server's registry behind for a while; the new
    // client's labels come last, and its first request right after them.
    const now = Date.now();
    const label = (clientId: string, name: string) => ({
      name: 'LabelSetChanged' as const,
      value: { eventId: randomUUID(), clientId, occurredAt: now, change: 'ADDED' as const, label: name, previousLabel: null, description: `${name} team`, keywords: [] },
    });
    for (let i = 0; i < 8; i++) await streams.producer.sendAll(Array.from({ length: 5000 }, (_, k) => label(`filler-${i}-${k}`, 'Team')));
    await streams.producer.sendAll([label('newcomer', 'Payroll'), label('newcomer', 'Network')]);
    await streams.producer.send('PredictionRequested', { eventId: randomUUID(), clientId: 'newcomer', occurredAt: Date.now(), requestId: 'newcomer-1', text: 'my salary is late', metadata: {} });
    const answer = await waitFor('the newcomer answered', () => predictions.find((p) => p.requestId === 'newcomer-1') ?? (deadLetters.some((d) => d.includes("'newcomer'")) ? 'dead-lettered' : undefined), 60_000);
    expect(answer).not.toBe('dead-lettered');
    expect(answer).toMatchObject({ clientId: 'newcomer', channel: 'KAFKA', modelVersion: null });
  }, 90_000);

  it('answers the requests of one call together per client, each with its own answer, in request order', async () => {
    // One sendAll: acme's three requests share a partition (keyed by client), so they reach the
    // handler in one call and are predicted together (predictMany), interleaved with globex's.
    const request = (clientId: string, requestId: string, text: string) => ({
      name: 'PredictionRequested' as const, value: { eventId: randomUUID(), clientId, occurredAt: Date.now(), requestId, text, metadata: {} },
    });
    await streams.producer.sendAll([
      request('acme', 'mix-1', 'the vpn is down again'),
      request('globex', 'mix-2', 'my badge does not open the door'),
      request('acme', 'mix-3', 'where is my payslip'),
      request('globex', 'mix-4', 'invoice for the expenses'),
      request('acme', 'mix-5', 'laptop screen is black'),
    ]);
    await waitFor('five answers', () => ['mix-1', 'mix-2', 'mix-3', 'mix-4', 'mix-5'].every((id) => predictions.some((p) => p.requestId === id)), 30_000);
    const answer = (id: string) => predictions.find((p) => p.requestId === id)!;
    expect(answer('mix-1')).toMatchObject({ clientId: 'acme', label: 'Network', variant: 'LIVE', channel: 'KAFKA', text: 'the vpn is down again' });
    expect(answer('mix-3')).toMatchObject({ clientId: 'acme', label: 'Payroll', variant: 'LIVE', text: 'where is my payslip' });
    expect(answer('mix-5')).toMatchObject({ clientId: 'acme', label: 'Hardware', variant: 'LIVE', text: 'laptop screen is black' });
    expect(answer('mix-2')).toMatchObject({ clientId: 'globex', label: 'Security', variant: 'BASELINE' });
    expect(answer('mix-4')).toMatchObject({ clientId: 'globex', label: 'Finance', variant: 'BASELINE' });
    // acme's answers share one partition of the predictions topic: read in the order asked.
    expect(predictions.filter((p) => p.requestId?.startsWith('mix-') && p.clientId === 'acme').map((p) => p.requestId)).toEqual(['mix-1', 'mix-3', 'mix-5']);
  });

  it('answers a redelivered PredictionRequested with the same event id (consumers dedupe on it)', async () => {
    const request = { eventId: randomUUID(), clientId: 'acme', occurredAt: Date.now(), requestId: 'dup-1', text: 'vpn', metadata: {} };
    await streams.producer.send('PredictionRequested', request);
    await streams.producer.send('PredictionRequested', request);
    await waitFor('two answers', () => predictions.filter((p) => p.requestId === 'dup-1').length === 2, 30_000);
    const answers = predictions.filter((p) => p.requestId === 'dup-1');
    expect(answers[0]!.eventId).toBe(answers[1]!.eventId);
    expect(answers[0]!.eventId).toBe(derivedId(`${request.eventId}:made`));
  });
});
