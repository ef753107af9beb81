import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startServer, type PredictionServer } from '../server/main.ts';
import { testStreams } from './helpers.ts';
import { ADMIN_KEY, serverTestConfig } from './server-fixtures.ts';

/** The dashboard when its data source is away: the page still loads, the API says why in JSON. */
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let server: PredictionServer;

beforeAll(async () => {
  // Nothing listens on port 1: this server's Redis is down for its whole life.
  config = await serverTestConfig({ EDDY_REDIS_URL: 'redis://127.0.0.1:1' });
  streams = await testStreams(config);
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
});

afterAll(async () => {
  await server?.close();
  await streams?.cleanup();
  await config?.cleanupStore();
});

describe('dashboard with Redis down', () => {
  it('serves the page, and answers the data endpoints with 503 REDIS_UNAVAILABLE (retry-after), never a stack trace', async () => {
    const auth = { headers: { authorization: `Bearer ${ADMIN_KEY}` } };
    const page = await fetch(`${server.url}/dashboard`, auth);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(await page.text()).toContain('<h1>Eddy model quality</h1>');
    const js = await fetch(`${server.url}/dashboard/app.js`);
    expect(js.headers.get('content-type')).toContain('javascript');
    for (const path of ['/dashboard/api/overview', '/dashboard/api/clients/acme']) {
      const res = await fetch(server.url + path, auth);
      expect(res.status, path).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const body = (await res.json()) as { error: { code: string; message: string } };
      expect(body.error.code).toBe('REDIS_UNAVAILABLE');
      expect(body.error.message).not.toMatch(/\n\s+at /);
    }
  });
});
