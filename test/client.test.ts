import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ERRORS, type ApiErrorCode } from '../common/api-errors.ts';
import { FsModelStore } from '../models/store.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import type { AnyEvent } from '../streams/codec.ts';
import {
  EddyApiError, EddyAuthError, EddyClient, EddyConflictError, EddyInvalidEventError, EddyNotFoundError, EddyRequestError,
  EddyServerError, EddyTimeoutError, EddyUnavailableError, UPSTREAM_EVENTS,
} from '../client/index.ts';
import { waitFor } from './helpers.ts';
import { collect } from './monitor-support.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/** The typed client (client/) against the real server and Kafka; error mapping also against a server that answers any code. */
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let server: PredictionServer;
let seen: AnyEvent[];
let client: EddyClient;

beforeAll(async () => {
  config = await serverTestConfig({ EDDY_SERVER_MAX_TEXT_CHARS: '200', EDDY_SERVER_MAX_BATCH: '3' });
  streams = await serverTestStreams(config);
  seen = await collect(streams, ['examples', 'labels', 'prediction-requests', 'feedback']);
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
  client = new EddyClient({
    url: server.url, apiKey: CLIENT_KEYS.acme, timeoutMs: 5000,
    kafka: { brokers: config.kafkaBrokers, schemaRegistryUrl: config.schemaRegistryUrl, topicPrefix: config.topicPrefix },
  });
}, 120_000);

afterAll(async () => {
  await client?.close();
  await server?.close();
  await streams?.cleanup();
  await config?.cleanupStore();
});

/** A throwaway HTTP server: `answer` decides each response (for what the real server cannot be made to do on demand). */
async function fakeApi(answer: (req: http.IncomingMessage, res: http.ServerResponse, n: number) => void): Promise<{ url: string; requests: () => number; close(): Promise<void> }> {
  let n = 0;
  const s = http.createServer((req, res) => {
    req.resume();
    answer(req, res, ++n);
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`,
    requests: () => n,
    close: () => new Promise<void>((r) => { s.closeAllConnections(); s.close(() => r()); }),
  };
}

const caught = async (p: Promise<unknown>): Promise<unknown> => p.then(() => { throw new Error('expected a rejection'); }, (err: unknown) => err);

describe('typed event producers', () => {
  it('round-trip every upstream event type through Kafka, completed with ids, times and defaults', async () => {
    expect(UPSTREAM_EVENTS).toEqual(['LabeledExample', 'LabelSetChanged', 'PredictionRequested', 'PredictionFeedback']);
    const sent = [
      await client.sendLabeledExample({ clientId: 'acme', exampleId: 'ex-1', text: 'vpn is down', label: 'Network', source: 'ASSIGNMENT' }),
      await client.sendLabelSetChanged({ clientId: 'acme', change: 'ADDED', label: 'Facilities', description: 'desks and heating', keywords: ['heating'] }),
      await client.requestPrediction({ clientId: 'acme', text: 'my laptop will not boot', metadata: { channel: 'email' } }),
      await client.sendFeedback({ clientId: 'acme', requestId: 'r-1', outcome: 'REASSIGNED', correctLabel: 'Hardware', actor: 'ann' }),
    ];
    expect(sent[0]).toMatchObject({ metadata: {}, predictionId: null, eventId: expect.any(String), occurredAt: expect.any(Number) });
    expect(sent[2]).toMatchObject({ requestId: sent[2]!.eventId });
    const received = await waitFor('all four on their topics', () => {
      const mine = sent.map((e) => seen.find((r) => r.value.eventId === e.eventId));
      return mine.every(Boolean) ? mine : undefined;
    }, 20_000);
    expect(received.map((r) => r!.name)).toEqual(UPSTREAM_EVENTS);
    received.forEach((r, i) => expect(r!.value).toEqual(sent[i]));
  });

  it('is idempotent: the same idempotency key gives the same event id, so consumers deduplicate a retry', async () => {
    const input = { clientId: 'acme', requestId: 'r-2', outcome: 'ACCEPTED' as const, idempotencyKey: 'ticket-77-accepted' };
    const a = await client.sendFeedback(input);
    const b = await client.sendFeedback(input);
    expect(a.eventId).toBe(b.eventId);
    const other = await client.sendFeedback({ ...input, idempotencyKey: 'ticket-78-accepted' });
    expect(other.eventId).not.toBe(a.eventId);
  });

  it('refuses an invalid event before sending it, naming the field', async () => {
    const missing = await caught(client.sendFeedback({ clientId: 'acme', requestId: 'r-3', outcome: 'REASSIGNED' }));
    expect(missing).toBeInstanceOf(EddyInvalidEventError);
    expect(missing).toMatchObject({ code: 'INVALID_EVENT', paths: ['correctLabel'] });
    const wrongType = await caught(client.sendLabeledExample({ clientId: 'acme', exampleId: 'ex-2', text: 42 as unknown as string, label: 'Network', source: 'ASSIGNMENT' }));
    expect(wrongType).toMatchObject({ code: 'INVALID_EVENT', paths: ['text'] });
    const badEnum = await caught(client.sendLabeledExample({ clientId: 'acme', exampleId: 'ex-3', text: 'x', label: 'Network', source: 'GUESS' as 'ASSIGNMENT' }));
    expect(badEnum).toMatchObject({ code: 'INVALID_EVENT', paths: ['source'] });
    // Nothing of them reached Kafka: a valid event sent after them arrives, they never do.
    const marker = await client.sendLabeledExample({ clientId: 'acme', exampleId: 'ex-4', text: 'marker', label: 'Network', source: 'IMPORT' });
    await waitFor('the marker', () => seen.some((r) => r.value.eventId === marker.eventId));
    expect(seen.filter((r) => r.name === 'LabeledExample' && ['ex-2', 'ex-3'].includes((r.value as { exampleId: string }).exampleId))).toEqual([]);
    expect(seen.some((r) => r.name === 'PredictionFeedback' && (r.value as { requestId: string }).requestId === 'r-3')).toBe(false);
  });
});

describe('predictions over HTTP', () => {
  it('predicts, predicts in batch and explains', async () => {
    const p = await client.predict('acme', { text: 'my VPN keeps dropping' });
    expect(p).toMatchObject({ clientId: 'acme', label: 'Network', modelVersion: 'v1', variant: 'LIVE' });
    expect(p.explanation).toBeUndefined();
    const batch = await client.predictBatch('acme', [{ text: 'salary missing' }, { text: 'screen flickers', requestId: 'mine-1' }], { topK: 1 });
    expect(batch.map((x) => [x.label, x.scores.length])).toEqual([['Payroll', 1], ['Hardware', 1]]);
    expect(batch[1]!.requestId).toBe('mine-1');
    const e = await client.explain('acme', { text: 'my VPN keeps dropping' });
    expect(e.explanation.labels[0]!.terms[0]).toMatchObject({ term: 'VPN', spans: [[3, 6]] });
  });

  it("maps the real server's refusals to typed errors carrying the API's codes", async () => {
    const cases: Array<[Promise<unknown>, new (...a: never[]) => EddyApiError, ApiErrorCode, number]> = [
      [new EddyClient({ url: server.url, apiKey: 'nobody-0123456789abcdef' }).predict('acme', { text: 'x' }), EddyAuthError, 'UNAUTHENTICATED', 401],
      [new EddyClient({ url: server.url }).predict('acme', { text: 'x' }), EddyAuthError, 'UNAUTHENTICATED', 401],
      [client.predict('globex', { text: 'x' }), EddyAuthError, 'FORBIDDEN', 403],
      [new EddyClient({ url: server.url, apiKey: ADMIN_KEY }).predict('nobody', { text: 'x' }), EddyNotFoundError, 'CLIENT_UNKNOWN', 404],
      [client.predict('acme', { text: 'x'.repeat(201) }), EddyRequestError, 'TEXT_TOO_LONG', 413],
      [client.predictBatch('acme', [{ text: 'a' }, { text: 'b' }, { text: 'c' }, { text: 'd' }]), EddyRequestError, 'BATCH_TOO_LARGE', 413],
      [client.predict('acme', { text: 'x' }, { topK: 0 }), EddyRequestError, 'INVALID_REQUEST', 400],
      [client.skipReviewItem('acme', 'no-such-item'), EddyNotFoundError, 'REVIEW_ITEM_UNKNOWN', 404],
    ];
    for (const [promise, Cls, code, status] of cases) {
      const err = await caught(promise);
      expect(err, code).toBeInstanceOf(Cls);
      expect(err, code).toMatchObject({ code, status, message: expect.any(String) });
    }
    const invalid = (await caught(client.predict('acme', { text: 'x' }, { topK: 0 }))) as EddyApiError;
    expect(invalid.details).toEqual([expect.objectContaining({ path: '/topK' })]);
  });
});

describe('error codes, retries and timeouts', () => {
  it("maps every code of the API's table to its typed error", async () => {
    const api = await fakeApi((req, res) => {
      const code = decodeURIComponent(req.url!.split('/')[3]!) as ApiErrorCode;
      res.writeHead(API_ERRORS[code], { 'content-type': 'application/json' })
        .end(JSON.stringify({ error: { code, message: `planted ${code}`, ...(code === 'INVALID_REQUEST' ? { details: [{ path: '/text', message: 'is required' }] } : {}) } }));
    });
    const c = new EddyClient({ url: api.url, apiKey: 'k', retries: 0 });
    const classOf: Record<number, new (...a: never[]) => EddyApiError> = {
      400: EddyRequestError, 401: EddyAuthError, 403: EddyAuthError, 404: EddyNotFoundError, 409: EddyConflictError, 413: EddyRequestError,
      415: EddyRequestError, 422: EddyRequestError, 500: EddyServerError, 503: EddyUnavailableError,
    };
    try {
      for (const [code, status] of Object.entries(API_ERRORS) as Array<[ApiErrorCode, number]>) {
        const err = await caught(c.predict(code, { text: 'x' }));
        expect(err, code).toBeInstanceOf(classOf[status]!);
        expect(err, code).toMatchObject({ code, status, message: `planted ${code}` });
      }
      expect(((await caught(c.predict('INVALID_REQUEST', { text: 'x' }))) as EddyApiError).details).toEqual([{ path: '/text', message: 'is required' }]);
    } finally {
      await api.close();
    }
  });

  it('retries a 503 as Retry-After says, then answers; gives up typed after the last attempt', async () => {
    const flaky = await fakeApi((_req, res, n) => {
      if (n <= 2) return res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' }).end(JSON.stringify({ error: { code: 'NOT_READY', message: 'catching up' } }));
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ requestId: 'r', clientId: 'acme', label: 'Network', scores: [], modelVersion: 'v1', variant: 'LIVE', featuresDefaulted: false, latencyMs: 1 }));
    });
    const down = await fakeApi((_req, res) => res.writeHead(503, { 'content-type': 'application/json', 'retry-after': '0' }).end(JSON.stringify({ error: { code: 'REDIS_UNAVAILABLE', message: 'Redis is away' } })));
    try {
      const ok = await new EddyClient({ url: flaky.url, retries: 3, backoff: { initialMs: 1, maxMs: 5 } }).predict('acme', { text: 'x' });
      expect(ok.label).toBe('Network');
      expect(flaky.requests()).toBe(3);
      const err = await caught(new EddyClient({ url: down.url, retries: 2, backoff: { initialMs: 1, maxMs: 5 } }).predict('acme', { text: 'x' }));
      expect(err).toBeInstanceOf(EddyUnavailableError);
      expect(err).toMatchObject({ code: 'REDIS_UNAVAILABLE', status: 503, attempts: 3 });
      expect(down.requests()).toBe(3);
    } finally {
      await flaky.close();
      await down.close();
    }
  });

  it('times out every attempt; repeats only what is safe to repeat', async () => {
    const silent = await fakeApi(() => undefined);
    try {
      const c = new EddyClient({ url: silent.url, timeoutMs: 100, retries: 2, backoff: { initialMs: 1, maxMs: 5 } });
      const t0 = Date.now();
      const err = await caught(c.predict('acme', { text: 'x' }));
      expect(err).toBeInstanceOf(EddyTimeoutError);
      expect(err).toMatchObject({ code: 'TIMEOUT', attempts: 3 });
      expect(Date.now() - t0).toBeGreaterThanOrEqual(300);
      expect(silent.requests()).toBe(3);
      // Skipping twice would find the item gone: a skip that got no answer is not repeated.
      const skip = await caught(c.skipReviewItem('acme', 'item'));
      expect(skip).toMatchObject({ code: 'TIMEOUT', attempts: 1 });
      expect(silent.requests()).toBe(4);
    } finally {
      await silent.close();
    }
  });

  it('is importable by its package entry', async () => {
    const pkg = await import('eddy/client');
    expect(pkg.EddyClient).toBe(EddyClient);
    expect(randomUUID()).toBeTypeOf('string');
  });
});
