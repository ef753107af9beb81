import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsModelStore } from '../models/store.ts';
import { spawnEddy, type EddyProcess } from './chaos-support.ts';
import { waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';
import { CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverProcessEnv, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * kill -9 of an `eddy serve` process with requests in flight: each request is either answered (a
 * prediction of the published model) or fails as a connection error, none hangs and none gets a
 * malformed answer; the server started again on the same port serves the same model.
 */
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let server: EddyProcess | undefined;
let port: number;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  config = await serverTestConfig();
  streams = await serverTestStreams(config);
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  port = await freePort();
  env = serverProcessEnv(config, port);
}, 60_000);

afterAll(async () => {
  await server?.kill9();
  await streams?.cleanup();
  await config?.cleanupStore();
}, 60_000);

type Outcome = { kind: 'answered'; version: unknown; label: unknown } | { kind: 'refused'; error: string } | { kind: 'other'; detail: string };

async function predict(): Promise<Outcome> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/v1/clients/acme/predict`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEYS.acme}` },
      body: JSON.stringify({ text: 'my laptop will not boot' }),
      // A request that neither gets an answer nor an error within this long hangs.
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 200) return { kind: 'other', detail: `${res.status} ${text.slice(0, 200)}` };
    const body = JSON.parse(text) as { modelVersion?: unknown; label?: unknown };
    return { kind: 'answered', version: body.modelVersion, label: body.label };
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    // The connection was reset or refused, or the body was cut: a clean failure a client retries.
    if (/ECONNRESET|ECONNREFUSED|EPIPE|UND_ERR_SOCKET|UND_ERR_CLOSED|SocketError/.test(String(cause))) return { kind: 'refused', error: String(cause) };
    return { kind: 'other', detail: `${String(cause)}: ${String(err)}` };
  }
}

async function ready(): Promise<void> {
  await waitFor('the server ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 60_000, 100);
}

describe('a server killed with requests in flight', () => {
  it('answers or cleanly fails each request, and serves again after a restart', async () => {
    server = await spawnEddy(env, ['serve'], /listening/);
    await ready();
    const outcomes: Outcome[] = [];
    let firing = true;
    const workers = Array.from({ length: 16 }, async () => {
      while (firing) outcomes.push(await predict());
    });
    await waitFor('requests answered before the kill', () => outcomes.filter((o) => o.kind === 'answered').length >= 200, 60_000);
    await server.kill9();
    await waitFor('requests failing after the kill', () => outcomes.filter((o) => o.kind === 'refused').length >= 16, 30_000);
    firing = false;
    await Promise.all(workers);

    expect(outcomes.filter((o) => o.kind === 'other')).toEqual([]);
    const answered = outcomes.filter((o) => o.kind === 'answered');
    expect(new Set(answered.map((o) => o.version))).toEqual(new Set(['v1']));
    expect(answered.every((o) => typeof o.label === 'string' && o.label in HELPDESK_LABELS)).toBe(true);

    server = await spawnEddy(env, ['serve'], /listening/);
    await ready();
    const after = await predict();
    expect(after).toMatchObject({ kind: 'answered', version: 'v1' });
  }, 180_000);
});
