import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Redis } from 'ioredis';
import { keyPattern } from '../common/keyspace.ts';
import { FsModelStore } from '../models/store.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * Nobody sees what is not theirs: every dashboard, review and metrics route needs a key; the
 * admin key sees every client; a client key sees (and acts on) its own client only.
 */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let server: PredictionServer;
let procs: RunningProcessors;
const redis = new Redis();
const acme = CLIENT_KEYS.acme!;
const globex = CLIENT_KEYS.globex!;

async function call(method: string, path: string, opts: { key?: string; cookie?: string; body?: unknown; accept?: string } = {}): Promise<{ status: number; body: Json; text: string; headers: Headers }> {
  const headers: Record<string, string> = {};
  if (opts.key) headers.authorization = `Bearer ${opts.key}`;
  if (opts.cookie) headers.cookie = opts.cookie;
  if (opts.accept) headers.accept = opts.accept;
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(server.url + path, { method, headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const text = await res.text();
  let body: Json = {};
  try {
    body = JSON.parse(text) as Json;
  } catch {
    // pages and /metrics are not JSON
  }
  return { status: res.status, body, text, headers: res.headers };
}

/** Every route that shows or changes a client's data, as [method, path, body]. */
const clientRoutes = (clientId: string): Array<[string, string, unknown?]> => [
  ['GET', `/dashboard/api/clients/${clientId}`],
  ['GET', `/v1/clients/${clientId}/model`],
  ['POST', `/v1/clients/${clientId}/predict`, { text: 'vpn down', explain: true }],
  ['POST', `/v1/clients/${clientId}/predict/batch`, { items: [{ text: 'vpn down' }], explain: true }],
  ['GET', `/v1/clients/${clientId}/review`],
  ['POST', `/v1/clients/${clientId}/review/item-1/label`, { label: 'Network' }],
  ['POST', `/v1/clients/${clientId}/review/item-1/skip`, {}],
];

/** Routes that need a key but no client in the path. */
const keyedRoutes: Array<[string, string]> = [
  ['GET', '/dashboard'],
  ['GET', '/dashboard/'],
  ['GET', '/dashboard/review'],
  ['GET', '/dashboard/api/overview'],
  ['GET', '/dashboard/api/me'],
  ['GET', '/metrics'],
];

beforeAll(async () => {
  config = await serverTestConfig({ EDDY_SERVER_METRICS_PORT: String(await freePort()) });
  streams = await serverTestStreams(config);
  procs = await startProcessors(config, { only: ['monitor'], waitForAssignment: true });
  const store = new FsModelStore(config.modelStoreDir);
  for (const clientId of ['acme', 'globex']) await publishFixtureModel(store, streams.producer, { clientId, version: 'v1', labels: HELPDESK_LABELS });
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
  await waitFor('both clients in the monitor', async () => (await redis.lrange(`${config.redisPrefix}:m:recent`, 0, -1)).length >= 2, 30_000);
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

describe('without a key', () => {
  it('every page, data, review and metrics route answers 401 in the documented envelope', async () => {
    for (const [method, path, body] of [...keyedRoutes, ...clientRoutes('acme')]) {
      const r = await call(method, path, { body });
      expect(r.status, `${method} ${path}`).toBe(401);
      expect(r.body, `${method} ${path}`).toEqual({ error: { code: 'UNAUTHENTICATED', message: expect.any(String) } });
    }
    // An unknown key is no better than none.
    const unknown = await call('GET', '/dashboard/api/overview', { key: 'not-a-key-of-anyone-here' });
    expect(unknown.status).toBe(401);
    expect(unknown.body.error.code).toBe('UNAUTHENTICATED');
  });

  it('a browser is shown the sign-in page with the same 401; the sign-in page and static code need none', async () => {
    const page = await call('GET', '/dashboard', { accept: 'text/html,application/xhtml+xml' });
    expect(page.status).toBe(401);
    expect(page.text).toContain('<form id="login"');
    expect(page.text).not.toContain('acme');
    for (const path of ['/dashboard/login', '/dashboard/app.js', '/dashboard/login.js', '/dashboard/style.css']) {
      expect((await call('GET', path)).status, path).toBe(200);
    }
    expect((await call('GET', '/healthz')).status).toBe(200);
  });
});

describe('a client key', () => {
  it('cannot read, list or label another client through any route', async () => {
    for (const [method, path, body] of clientRoutes('globex')) {
      const r = await call(method, path, { key: acme, body });
      expect(r.status, `${method} ${path}`).toBe(403);
      expect(r.body.error.code, `${method} ${path}`).toBe('FORBIDDEN');
    }
  });

  it('lists its own client only, with its own history and no platform-wide figures', async () => {
    const own = await call('GET', '/dashboard/api/overview', { key: acme });
    expect(own.status).toBe(200);
    expect(own.body.clients.map((c: Json) => c.clientId)).toEqual(['acme']);
    expect(own.body.totalClients).toBe(1);
    expect(own.body.recent.length).toBeGreaterThan(0);
    expect(own.body.recent.every((e: Json) => e.clientId === 'acme')).toBe(true);
    expect(own.body.lag).toEqual([]);
    expect(own.body.rates).toEqual([]);
    // Searching for another client finds nothing.
    expect((await call('GET', '/dashboard/api/overview?search=glob', { key: acme })).body.clients).toEqual([]);
    expect((await call('GET', '/dashboard/api/clients/acme', { key: acme })).status).toBe(200);
    expect((await call('GET', '/dashboard/api/me', { key: acme })).body).toEqual({ principal: { kind: 'client', clientId: 'acme' } });
  });

  it('does not get /metrics (client ids and quality of everyone)', async () => {
    const r = await call('GET', '/metrics', { key: acme });
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('FORBIDDEN');
  });
});

describe('the admin key', () => {
  it('sees every client, the platform figures and /metrics', async () => {
    const all = await call('GET', '/dashboard/api/overview', { key: ADMIN_KEY });
    expect(all.body.clients.map((c: Json) => c.clientId).sort()).toEqual(['acme', 'globex']);
    expect(new Set(all.body.recent.map((e: Json) => e.clientId))).toEqual(new Set(['acme', 'globex']));
    expect((await call('GET', '/dashboard/api/clients/globex', { key: ADMIN_KEY })).status).toBe(200);
    const metrics = await call('GET', '/metrics', { key: ADMIN_KEY });
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('eddy_server_requests_total');
  });

  it('/metrics is also served without a key on the internal port, for the scraper', async () => {
    expect(server.metricsUrl).toBeDefined();
    const res = await fetch(server.metricsUrl!);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('eddy_server_requests_total');
  });
});

describe('dashboard sessions', () => {
  it('signs a person in with a key into an HttpOnly, SameSite=Strict cookie that acts as the key', async () => {
    const bad = await call('POST', '/dashboard/session', { body: { key: 'wrong-key-0123456789' } });
    expect(bad.status).toBe(401);
    expect(bad.headers.get('set-cookie')).toBeNull();
    const ok = await call('POST', '/dashboard/session', { body: { key: acme } });
    expect(ok.status).toBe(200);
    expect(ok.body).toEqual({ principal: { kind: 'client', clientId: 'acme' } });
    const cookie = ok.headers.get('set-cookie')!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const session = cookie.split(';')[0]!;
    expect((await call('GET', '/dashboard', { cookie: session })).status).toBe(200);
    expect((await call('GET', '/dashboard/api/overview', { cookie: session })).body.clients.map((c: Json) => c.clientId)).toEqual(['acme']);
    expect((await call('GET', '/dashboard/api/clients/globex', { cookie: session })).status).toBe(403);
    // A session of a key that is no longer configured is no session.
    expect((await call('GET', '/dashboard/api/overview', { cookie: 'eddy_key=revoked-key-0123456789' })).status).toBe(401);
    const out = await call('DELETE', '/dashboard/session', { cookie: session });
    expect(out.headers.get('set-cookie')).toMatch(/Max-Age=0/);
  });

  it('refuses a cross-site form post (not JSON) before anything happens', async () => {
    const res = await fetch(`${server.url}/v1/clients/acme/review/item-1/label`, {
      method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Bearer ${acme}` }, body: 'label=Network',
    });
    expect(res.status).toBe(415);
    expect(((await res.json()) as Json).error.code).toBe('UNSUPPORTED_MEDIA_TYPE');
  });

  it('globex key sees globex only', async () => {
    const r = await call('GET', '/dashboard/api/overview', { key: globex });
    expect(r.body.clients.map((c: Json) => c.clientId)).toEqual(['globex']);
  });
});

describe('the production gateway (deploy/nginx.conf)', () => {
  /** nginx's choice of location for a path: an exact match, else the longest prefix. */
  function route(conf: string, uri: string): { location: string; proxied: boolean } | undefined {
    const locations = [...conf.matchAll(/location\s+(=\s*)?(\S+)\s*\{([^}]*)\}/g)].map((m) => ({ exact: !!m[1], path: m[2]!, body: m[3]! }));
    const exact = locations.find((l) => l.exact && l.path === uri);
    const prefix = locations.filter((l) => !l.exact && uri.startsWith(l.path)).sort((a, b) => b.path.length - a.path.length)[0];
    const l = exact ?? prefix;
    return l && { location: `${l.exact ? '= ' : ''}${l.path}`, proxied: /proxy_pass\s+http:\/\/eddy_servers/.test(l.body) };
  }

  it('forwards the API and the dashboard, never /metrics, and tells the servers the scheme', () => {
    const conf = fs.readFileSync('deploy/nginx.conf', 'utf8');
    for (const uri of ['/v1/clients/acme/predict', '/v1/clients/acme/review', '/v1/admin/clients/acme/promote', '/dashboard', '/dashboard/', '/dashboard/review', '/dashboard/api/overview', '/dashboard/login', '/healthz', '/readyz']) {
      expect(route(conf, uri)?.proxied, uri).toBe(true);
    }
    for (const uri of ['/metrics', '/metrics/', '/', '/anything-else']) expect(route(conf, uri)?.proxied, uri).toBe(false);
    expect(conf).toMatch(/return 404 '\{"error":\{"code":"NOT_FOUND"/);
    expect(conf).toMatch(/proxy_set_header X-Forwarded-Proto \$scheme;/);
  });
});
