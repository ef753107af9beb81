import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EddyClient } from '../client/index.ts';
import { FsModelStore } from '../models/store.ts';
import { spawnEddy, type EddyProcess } from './chaos-support.ts';
import { waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';
import { CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverProcessEnv, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * The typed client's failover against real replicas: two `eddy serve` processes, a client given
 * both URLs, and kill -9 of one of them while requests stream. A client that retries as
 * documented (docs/client.md) sees no failure: what the dead server refused, reset or never
 * answered went to the other one, and the dead one is skipped for its cooldown rather than tried
 * by every request.
 */
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
const servers: Array<EddyProcess | undefined> = [];
const ports: number[] = [];

beforeAll(async () => {
  config = await serverTestConfig();
  streams = await serverTestStreams(config);
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  ports.push(await freePort(), await freePort());
}, 60_000);

afterAll(async () => {
  await Promise.all(servers.map((s) => s?.kill9()));
  await streams?.cleanup();
  await config?.cleanupStore();
}, 60_000);

describe('two servers, one killed mid-stream', () => {
  it('answers every request of a client that retries, none failed', async () => {
    // Each replica has its own port and spool directory, as two containers with their own volumes would.
    const started = await Promise.all(ports.map((port, i) => spawnEddy(serverProcessEnv(config, port, { EDDY_SERVER_SPOOL_DIR: path.join(config.server.spoolDir, `replica-${i}`) }), ['serve'], /listening/)));
    servers.push(...started);
    for (const port of ports) await waitFor(`the server on ${port} ready`, async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 60_000, 100);

    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    // Every attempt, as the client made it: which server, when it was sent, and whether an answer came.
    const attempts: Array<{ url: string; at: number; ok: boolean }> = [];
    const observed: typeof fetch = async (input, init) => {
      const url = String(input);
      const at = Date.now();
      try {
        const res = await fetch(input, init);
        attempts.push({ url, at, ok: res.ok });
        return res;
      } catch (err) {
        attempts.push({ url, at, ok: false });
        throw err;
      }
    };
    const client = new EddyClient({ url: urls, apiKey: CLIENT_KEYS.acme, timeoutMs: 5000, retries: 3, fetch: observed });
    const answered: Array<{ version: string | null; label: string }> = [];
    const failed: string[] = [];
    let firing = true;
    const workers = Array.from({ length: 8 }, async () => {
      while (firing) {
        try {
          const p = await client.predict('acme', { text: 'my laptop will not boot' });
          answered.push({ version: p.modelVersion, label: p.label });
        } catch (err) {
          failed.push(`${(err as Error).name}: ${(err as Error).message}`);
        }
      }
    });
    await waitFor('requests answered by both servers before the kill', () => urls.every((u) => attempts.some((a) => a.ok && a.url.startsWith(u))) && answered.length >= 200, 60_000);
    await servers[0]!.kill9();
    // From here on the first server is gone: every attempt sent to it fails.
    const killedAt = Date.now();
    // Long enough for the dead server's cooldown (5 s) to end and be tried (and skipped) again.
    await waitFor('requests answered after the kill', () => answered.length >= 400 && Date.now() - killedAt > 12_000, 60_000);
    firing = false;
    await Promise.all(workers);
    await client.close();

    expect(failed).toEqual([]);
    expect(new Set(answered.map((a) => a.version))).toEqual(new Set(['v1']));
    // The kill was felt (attempts on the dead server failed) and the survivor answered instead.
    const deadAttempts = attempts.filter((a) => a.at > killedAt && a.url.startsWith(urls[0]!));
    expect(deadAttempts.length).toBeGreaterThan(0);
    expect(deadAttempts.every((a) => !a.ok)).toBe(true);
    expect(attempts.filter((a) => a.at > killedAt && a.url.startsWith(urls[1]!) && a.ok).length).toBeGreaterThanOrEqual(100);
    // Skipped while in its cooldown: a dead server costs a few attempts, not one per request.
    expect(deadAttempts.length).toBeLessThan(40);
  }, 180_000);
});
