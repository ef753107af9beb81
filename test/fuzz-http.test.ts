import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { API_ERRORS } from '../common/api-errors.ts';
import { FsModelStore } from '../models/store.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { testStreams } from './helpers.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * Hostile input on every HTTP route, generated (fast-check; a failure prints the seed and the
 * shrunk request to replay it): garbage and truncated JSON, deep and huge documents, NUL and
 * unpaired surrogates, empty and oversized ids and texts, other content types, other tenants'
 * keys. Every answer must be a success the caller was entitled to, or the documented error
 * envelope with a documented code — never a 500, a stack trace, Fastify's own error shape, or
 * another tenant's data — and the server must still answer normally afterwards.
 */
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let srv: PredictionServer;

const KEYS = { none: undefined, acme: CLIENT_KEYS.acme!, globex: CLIENT_KEYS.globex!, admin: ADMIN_KEY, bogus: 'not-a-key-0123456789abcdef' } as const;
type KeyName = keyof typeof KEYS;
const RUNS = 2_500;

beforeAll(async () => {
  config = await serverTestConfig({ EDDY_SERVER_MAX_TEXT_CHARS: '500', EDDY_SERVER_MAX_BATCH: '20' });
  streams = await serverTestStreams(config);
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  srv = await startServer(config);
  await srv.kafkaReady;
}, 120_000);

afterAll(async () => {
  await srv?.close();
  await streams?.cleanup();
  await config?.cleanupStore();
});

// --- generators ------------------------------------------------------------------------------
const SPECIALS = ['', '\u0000', '\uD800', 'a\uDFFFb', '\u202E', '../../etc/passwd', '%00', '{{x}}', '<script>', ' '.repeat(30), '\uFEFF', '\r\n'];
const hostileString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }), // any code point, incl. NUL and astral
  fc.constantFrom(...SPECIALS),
  // ordinary text with something hostile inside
  fc.tuple(fc.string({ maxLength: 20 }), fc.constantFrom(...SPECIALS), fc.string({ maxLength: 20 })).map((p) => p.join('')),
  fc.string({ minLength: 480, maxLength: 900 }), // around the text limit
);
const clientIdArb = fc.oneof(
  fc.constantFrom('acme', 'globex', 'initech', 'nobody'),
  hostileString.filter((s) => s.length > 0),
  fc.string({ minLength: 190, maxLength: 260 }), // around the 200-character path limit
);
/** A JSON value of any shape, with hostile strings inside. */
const jsonValue = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, hostileString, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), tie('array'), tie('object')),
  array: fc.array(tie('value'), { maxLength: 5 }),
  object: fc.dictionary(fc.oneof(fc.constantFrom('text', 'items', 'metadata', 'requestId', 'topK', 'explain', 'label', 'version', 'to', 'pinned', 'variant', 'share'), hostileString), tie('value'), { maxKeys: 5 }),
})).value;
/** Mostly well-formed predict bodies with hostile strings in them (so they reach the handler), sometimes wrong types. */
const predictBody = fc.record({
  text: fc.oneof({ weight: 6, arbitrary: hostileString }, { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.constant(null), jsonValue) }),
  metadata: fc.option(fc.oneof(
    { weight: 4, arbitrary: fc.dictionary(fc.oneof(fc.constantFrom('channel', 'requester', 'department'), hostileString), hostileString, { maxKeys: 4 }) },
    { weight: 1, arbitrary: fc.dictionary(hostileString, jsonValue, { maxKeys: 8 }) },
  ), { nil: undefined }),
  requestId: fc.option(fc.oneof({ weight: 4, arbitrary: hostileString }, { weight: 1, arbitrary: fc.integer() }), { nil: undefined }),
  topK: fc.option(fc.oneof({ weight: 4, arbitrary: fc.integer({ min: 1, max: 10 }) }, { weight: 1, arbitrary: fc.oneof(fc.integer({ min: -5, max: 500 }), hostileString) }), { nil: undefined }),
}, { requiredKeys: ['text'] });
const deepJson = fc.integer({ min: 100, max: 20_000 }).map((d) => '['.repeat(d) + ']'.repeat(d));
/** Bodies shaped for a route most of the time (so they reach its handler), anything hostile otherwise. */
const hostileBody = fc.oneof(
  { weight: 2, arbitrary: jsonValue.map((v) => ({ raw: JSON.stringify(v) ?? 'null' })) },
  { weight: 1, arbitrary: predictBody.map((v) => ({ raw: JSON.stringify(v).slice(0, -3) })) }, // truncated
  { weight: 1, arbitrary: fc.uint8Array({ maxLength: 200 }).map((b) => ({ raw: Buffer.from(b).toString('latin1') })) }, // garbage
  { weight: 1, arbitrary: deepJson.map((raw) => ({ raw })) },
  { weight: 1, arbitrary: fc.constant({ raw: JSON.stringify({ text: 'x'.repeat(2_000_000) }) }) }, // far over the body limit
  { weight: 1, arbitrary: fc.constant({ raw: undefined as string | undefined }) },
);
const shaped = (body: fc.Arbitrary<unknown>) => fc.oneof({ weight: 3, arbitrary: body.map((v) => ({ raw: JSON.stringify(v) as string | undefined })) }, { weight: 1, arbitrary: hostileBody });
const route = (method: string, path: (c: string) => string, body: fc.Arbitrary<{ raw: string | undefined }> = hostileBody) => ({ method, path, body });
const routeArb = fc.oneof(
  { weight: 6, arbitrary: fc.constant(route('POST', (c) => `/v1/clients/${c}/predict`, shaped(predictBody))) },
  { weight: 4, arbitrary: fc.constant(route('POST', (c) => `/v1/clients/${c}/predict/batch`, shaped(fc.record({ items: fc.array(predictBody.map(({ topK: _, ...item }) => item), { maxLength: 30 }), topK: fc.option(fc.integer({ min: 0, max: 12 }), { nil: undefined }) }, { requiredKeys: ['items'] })))) },
  { weight: 1, arbitrary: fc.constantFrom(
    route('GET', (c) => `/v1/clients/${c}/model`),
    route('GET', (c) => `/v1/clients/${c}/review?limit=${encodeURIComponent('-1')}`),
    route('POST', (c) => `/v1/clients/${c}/review/item-1/label`, shaped(fc.record({ label: hostileString, reviewer: fc.option(hostileString, { nil: undefined }) }))),
    route('POST', (c) => `/v1/clients/${c}/review/${'i'.repeat(300)}/skip`),
    route('POST', (c) => `/v1/admin/clients/${c}/promote`, shaped(fc.record({ version: fc.oneof(fc.constantFrom('v1', 'v2', 'v0'), hostileString), reason: fc.option(hostileString, { nil: undefined }) }))),
    route('POST', (c) => `/v1/admin/clients/${c}/rollback`, shaped(fc.record({ to: fc.option(fc.oneof(fc.constantFrom('v1', 'v9'), hostileString), { nil: undefined }), reason: fc.option(hostileString, { nil: undefined }) }))),
    route('GET', (c) => `/dashboard/api/clients/${c}`),
    route('GET', () => '/metrics'),
    route('DELETE', (c) => `/v1/clients/${c}`),
  ) },
);
const contentTypeArb = fc.constantFrom('application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '', 'application/json; charset=latin1');
/**
 * Three of four requests come from a caller entitled to the client (its own key or the admin key,
 * JSON): hostile bodies must get past the guards to reach validation and the handlers. The rest
 * mix every key, id and content type.
 */
const requestArb = fc.oneof(
  { weight: 3, arbitrary: routeArb.chain((r) => fc.record({
    pair: fc.constantFrom<[KeyName, string]>(['acme', 'acme'], ['globex', 'globex'], ['admin', 'acme'], ['admin', 'globex']),
    body: r.body,
  }).map(({ pair, body }) => ({ route: r, key: pair[0], clientId: pair[1], encode: true, body, contentType: 'application/json' }))) },
  { weight: 1, arbitrary: routeArb.chain((r) => fc.record({
    clientId: clientIdArb,
    encode: fc.boolean(),
    key: fc.constantFrom<KeyName>('none', 'acme', 'globex', 'admin', 'bogus'),
    body: fc.oneof(r.body, hostileBody),
    contentType: contentTypeArb,
  }).map((x) => ({ route: r, ...x }))) },
);

const KNOWN_CODES = new Set([...Object.keys(API_ERRORS), 'INTERNAL', 'NOT_READY', 'REDIS_UNAVAILABLE', 'KAFKA_UNAVAILABLE']);

describe('hostile HTTP input (generated)', () => {
  it(`${RUNS} generated requests over every route: only entitled successes or the documented error envelope, never a 5xx, a stack or another tenant's data`, async () => {
    const seen = new Map<number, number>();
    await fc.assert(fc.asyncProperty(requestArb, async (r) => {
      let id: string;
      try {
        id = r.encode ? encodeURIComponent(r.clientId) : r.clientId;
      } catch {
        return; // an unpaired surrogate cannot be percent-encoded: no client could send it
      }
      const url = `${srv.url}${r.route.path(id)}`;
      const headers: Record<string, string> = {};
      const key = KEYS[r.key];
      if (key) headers.authorization = `Bearer ${key}`;
      if (r.body.raw !== undefined && r.contentType) headers['content-type'] = r.contentType;
      let res: Response;
      try {
        res = await fetch(url, { method: r.route.method, headers, body: r.route.method === 'GET' ? undefined : r.body.raw });
      } catch (err) {
        // fetch itself refuses some URLs (e.g. unpaired surrogates cannot be encoded): not the server's answer.
        if (err instanceof TypeError && !/fetch failed/.test(err.message)) return;
        throw err;
      }
      const text = await res.text();
      seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
      // FUZZ_TRACE=1 prints one line per request (what the generators reach); FUZZ_SEED replays a run.
      if (process.env.FUZZ_TRACE) process.stderr.write(`${r.route.method} ${r.route.path(id).slice(0, 60)} ${r.key} ${res.status} ${text.slice(0, 100)}\n`);
      expect(res.status, text).toBeLessThan(500);
      expect(text).not.toMatch(/\n\s+at |\.ts:\d+|node_modules|FST_ERR/);
      if (res.status === 404 && !res.headers.get('content-type')?.includes('json')) throw new Error(`non-JSON 404: ${text.slice(0, 200)}`);
      if (res.ok) {
        // A success only for a caller entitled to this client's data.
        let target = id;
        try {
          target = decodeURIComponent(id);
        } catch {
          // left as sent
        }
        if (r.route.path('x').startsWith('/metrics')) expect(r.key).toBe('admin');
        else expect(r.key === 'admin' || (key !== undefined && r.key === target), `${r.key} got ${res.status} for ${target}`).toBe(true);
        return;
      }
      const body = JSON.parse(text) as { error?: { code?: string; message?: string } };
      expect(Object.keys(body)).toEqual(['error']);
      expect(KNOWN_CODES.has(body.error!.code!), `unknown code ${body.error!.code}`).toBe(true);
      expect(typeof body.error!.message).toBe('string');
      if (body.error!.code && body.error!.code in API_ERRORS) expect(res.status).toBe(API_ERRORS[body.error!.code as keyof typeof API_ERRORS]);
    }), { numRuns: RUNS, seed: Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31) });
    // The generators reached the interesting answers, not only the first guard.
    for (const status of [200, 400, 401, 403, 404, 413, 415]) expect(seen.get(status) ?? 0, `status ${status} in ${JSON.stringify([...seen])}`).toBeGreaterThan(0);
    // Still serving normally.
    const ok = await fetch(`${srv.url}/v1/clients/acme/predict`, { method: 'POST', headers: { authorization: `Bearer ${KEYS.acme}`, 'content-type': 'application/json' }, body: JSON.stringify({ text: 'vpn keeps dropping' }) });
    expect(ok.status).toBe(200);
    expect((await ok.json()) as object).toMatchObject({ label: 'Network' });
  }, 240_000);
});
