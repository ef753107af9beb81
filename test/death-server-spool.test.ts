import fs from 'node:fs';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsModelStore } from '../models/store.ts';
import { privateKafka, spawnEddy, type EddyProcess, type PrivateService } from './chaos-support.ts';
import { waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverProcessEnv, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * An answered prediction is in the log (docs/reliability.md, "PredictionMade"), with an `eddy serve`
 * process on a private broker that is killed under it:
 * - while the broker is away the publish buffer fills, and the server answers 503 KAFKA_UNAVAILABLE
 *   with Retry-After instead of answering predictions it cannot log; every 200 reaches the topic
 *   once the broker is back;
 * - a server killed (-9) with answered predictions not yet produced leaves them in its spool; the
 *   next server started with that spool replays them: every answered requestId is on the topic.
 */
const BUFFER = 40;
let kafka: PrivateService;
let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>> | undefined;
let server: EddyProcess | undefined;
let port: number;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  kafka = await privateKafka();
  await kafka.start();
  config = await serverTestConfig({ EDDY_KAFKA_BROKERS: kafka.endpoint });
  streams = await serverTestStreams(config);
  await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  port = await freePort();
  env = serverProcessEnv(config, port, { EDDY_SERVER_PUBLISH_BUFFER: String(BUFFER) });
}, 120_000);

afterAll(async () => {
  await server?.kill9();
  await streams?.cleanup().catch(() => undefined);
  await config?.cleanupStore();
  await kafka?.cleanup();
}, 60_000);

type Answer = { status: number; retryAfter: string | null; body: { requestId?: string; error?: { code?: string; message?: string } } };

async function predict(requestId: string): Promise<Answer> {
  const res = await fetch(`http://127.0.0.1:${port}/v1/clients/acme/predict`, {
    method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEYS.acme}` },
    body: JSON.stringify({ text: 'my laptop will not boot', requestId }),
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: (await res.json()) as Answer['body'] };
}

async function startServer(): Promise<void> {
  server = await spawnEddy(env, ['serve'], /listening/);
  await waitFor('the server ready', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200, 60_000, 100);
}

/** Waits until every one of `ids` is on the predictions topic as PredictionMade; returns how often each was seen. */
async function expectLogged(ids: Set<string>): Promise<Map<string, number>> {
  const seen = new Map<string, number>();
  const reader = streams!.consumer({
    group: `reader-${randomUUID().slice(0, 8)}`, topics: ['predictions'], fromBeginning: true,
    handler: {
      handle: async (records) => {
        for (const r of records) {
          if (r.event.name === 'PredictionMade' && ids.has(r.event.value.requestId)) seen.set(r.event.value.requestId, (seen.get(r.event.value.requestId) ?? 0) + 1);
        }
      },
    },
  });
  await reader.start();
  try {
    await waitFor(`all ${ids.size} answered requestIds on the topic`, () => seen.size === ids.size, 60_000, 200).catch(() => undefined);
  } finally {
    await reader.stop();
  }
  expect([...ids].filter((id) => !seen.has(id))).toEqual([]);
  return seen;
}

describe('PredictionMade of answered predictions', () => {
  it('a full buffer answers 503 with Retry-After before predicting, and never answers 200 without logging', async () => {
    await startServer();
    const answered = new Set<string>();
    for (let i = 0; i < 5; i++) {
      const a = await predict(`up-${i}`);
      expect(a.status).toBe(200);
      answered.add(a.body.requestId!);
    }
    await kafka.kill();
    // Two callers while the broker is away: the buffer fills, then every request is refused.
    const refusals: Answer[] = [];
    const others: Answer[] = [];
    let answeredDown = 0;
    let n = 0;
    const downAt = Date.now();
    await Promise.all([0, 1].map(async () => {
      while (refusals.length < 20 && n < 400) {
        const a = await predict(`down-${n++}`);
        if (a.status === 200) {
          answered.add(a.body.requestId!);
          answeredDown++;
        } else if (a.status === 503) refusals.push(a);
        else others.push(a);
      }
    }));
    expect(others).toEqual([]);
    expect(refusals.length).toBeGreaterThanOrEqual(20);
    expect(answeredDown).toBeGreaterThan(0);
    // Room is checked before predicting: two callers admitted at the same moment may take the last slot each.
    expect(answeredDown).toBeLessThanOrEqual(BUFFER + 1);
    for (const r of refusals) {
      expect(r.retryAfter).toBe('1');
      expect(r.body.error?.code).toBe('KAFKA_UNAVAILABLE');
      expect(r.body.error?.message).toMatch(/waiting to be logged/);
    }
    // Counted and logged rate-limited (at most once per 5 s), never once per refused request.
    const logged = server!.output().match(/PredictionMade backlog full/g)?.length ?? 0;
    expect(logged).toBeGreaterThanOrEqual(1);
    expect(logged).toBeLessThanOrEqual(1 + Math.ceil((Date.now() - downAt) / 5_000));
    expect(server!.output()).not.toMatch(/KAFKA_UNAVAILABLE[^\n]*request failed|request failed[^\n]*KAFKA_UNAVAILABLE/);
    await kafka.start();
    // The backlog drains once the broker is back: predictions are answered again.
    await waitFor('predictions answered again', async () => {
      const a = await predict(`back-${n++}`);
      if (a.status === 200) answered.add(a.body.requestId!);
      return a.status === 200;
    }, 90_000, 500);
    await expectLogged(answered);
  }, 300_000);

  it('a server killed with answered predictions not yet in Kafka: the next one replays them from the spool', async () => {
    if (!server || server.child.exitCode !== null) await startServer();
    await kafka.kill();
    const answered = new Set<string>();
    // Fewer than the buffer: all answered (none in Kafka: the broker is away), then kill -9.
    for (let i = 0; answered.size < BUFFER / 2; i++) {
      const a = await predict(`crash-${i}`);
      expect(a.status).toBe(200);
      answered.add(a.body.requestId!);
    }
    await server!.kill9();
    const left = fs.readdirSync(config.server.spoolDir).filter((f) => f.endsWith('.spool'));
    expect(left.length).toBeGreaterThan(0);
    await kafka.start();
    await startServer();
    const seen = await expectLogged(answered);
    // Replayed once (the dead server never reached Kafka), and the spool empties once Kafka acknowledged.
    expect([...seen.values()].every((c) => c === 1)).toBe(true);
    const spooledBytes = () => fs.readdirSync(config.server.spoolDir).filter((f) => f.endsWith('.spool'))
      .reduce((sum, f) => sum + Math.max(0, fs.statSync(`${config.server.spoolDir}/${f}`).size - 16), 0);
    await waitFor('the replayed segments deleted', () => spooledBytes() === 0, 30_000, 200);
    const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).text();
    expect(metrics).toMatch(new RegExp(`eddy_server_spool_replayed_total ${answered.size}\\b`));
  }, 300_000);
});
