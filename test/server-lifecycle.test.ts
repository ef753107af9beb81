import fs from 'node:fs/promises';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.ts';
import { metricsRegistry } from '../common/metrics.ts';
import { FsModelStore } from '../models/store.ts';
import type { PredictionMade } from '../schemas/events.ts';
import { ArtifactLoaderThread } from '../server/artifact-loader.ts';
import { startServer, storeLoader, type PredictionServer } from '../server/main.ts';
import { ModelManager } from '../server/model-manager.ts';
import { stableShare } from '../server/prediction-service.ts';
import type { VersionInfo } from '../models/lifecycle.ts';
import { testStreams, waitFor } from './helpers.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, modelPublished, publishFixtureModel, serverTestConfig, serverTestStreams, writeFixtureModel } from './server-fixtures.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let store: FsModelStore;
const servers: PredictionServer[] = [];
let a: PredictionServer;
const predictions: PredictionMade[] = [];
const acme = CLIENT_KEYS.acme!;

async function startReplica(name: string): Promise<PredictionServer> {
  const s = await startServer({ ...config, server: { ...config.server, replicaId: name } }, { kafkaPredict: false });
  servers.push(s);
  await s.ready;
  return s;
}

async function predict(s: PredictionServer, text: string, metadata: Record<string, string> = {}): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${s.url}/v1/clients/acme/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${acme}` },
    body: JSON.stringify({ text, metadata }),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

async function adminPost(s: PredictionServer, action: string, body: unknown): Promise<{ status: number; body: Json }> {
  const res = await fetch(`${s.url}/v1/admin/clients/acme/${action}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_KEY}` },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Json };
}

async function counter(name: string, labels: Record<string, string> = {}): Promise<number> {
  const m = await metricsRegistry.getSingleMetric(name)?.get();
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((s, v) => s + v.value, 0);
}

beforeAll(async () => {
  config = await serverTestConfig();
  streams = await serverTestStreams(config);
  store = new FsModelStore(config.modelStoreDir);
  await streams.producer.sendAll(Object.entries(HELPDESK_LABELS).map(([label, keywords]) => ({
    name: 'LabelSetChanged' as const,
    value: { eventId: randomUUID(), clientId: 'acme', occurredAt: Date.now(), change: 'ADDED' as const, label, previousLabel: null, description: '', keywords },
  })));
  a = await startReplica('replica-a');
  const tail = streams.consumer({
    group: 'test-tail', topics: ['predictions'],
    handler: { async handle(records) { for (const r of records) if (r.event.name === 'PredictionMade') predictions.push(r.event.value); } },
  });
  await tail.start();
});

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.close()));
  await streams?.cleanup();
  await config?.cleanupStore();
});

describe('model lifecycle across replicas', () => {
  it('answers with the baseline before any model, then serves a published version without restart', async () => {
    const before = await predict(a, 'vpn is down');
    expect(before.status).toBe(200);
    expect(before.body).toMatchObject({ variant: 'BASELINE', modelVersion: null, label: 'Network' });
    await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
    const after = await waitFor('v1 served', async () => {
      const r = await predict(a, 'vpn is down');
      return r.body.modelVersion === 'v1' ? r : undefined;
    });
    expect(after.body).toMatchObject({ variant: 'LIVE', label: 'Network' });
  });

  it('swaps to a new version under concurrent load without a failed request', async () => {
    const results: Array<{ status: number; version: string | null }> = [];
    let sawV2 = 0;
    let stop = false;
    const worker = async () => {
      while (!stop) {
        const r = await predict(a, 'my laptop will not boot', { requester: `u${results.length % 50}` });
        results.push({ status: r.status, version: r.body.modelVersion ?? null });
        if (r.body.modelVersion === 'v2' && ++sawV2 >= 200) stop = true;
      }
    };
    const load = Promise.all(Array.from({ length: 8 }, worker));
    await waitFor('load running on v1', () => results.length >= 100);
    // A bigger artifact, so the background load takes a while under load.
    await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v2', labels: HELPDESK_LABELS, extraFeatures: 100_000 });
    await Promise.race([load, waitFor('v2 served under load', () => stop, 30_000)]);
    stop = true;
    await load;
    expect(results.filter((r) => r.status !== 200)).toEqual([]);
    expect(new Set(results.map((r) => r.version))).toEqual(new Set(['v1', 'v2']));
    // Availability-preserving: requests never waited for v2 to load — they kept v1 until the swap.
    const firstV2 = results.findIndex((r) => r.version === 'v2');
    expect(results.slice(firstV2 + 50).every((r) => r.version === 'v2')).toBe(true);
  });

  it('rolls back through the admin API: every replica, including one started later, serves the old version', async () => {
    const b = await startReplica('replica-b');
    expect((await predict(b, 'wifi')).body.modelVersion).toBe('v2');
    // The previous version stayed loaded after the swap: rolling back to it needs no load.
    expect(a.manager.isLoaded('acme', 'v1')).toBe(true);
    const loadsBefore = a.manager.stats.loads;
    const rb = await adminPost(a, 'rollback', { reason: 'test' });
    expect(rb.status).toBe(200);
    expect(rb.body).toMatchObject({ event: 'ModelRolledBack', applied: true, live: 'v1' });
    expect((await predict(a, 'wifi')).body.modelVersion).toBe('v1');
    expect(a.manager.stats.loads).toBe(loadsBefore);
    await waitFor('replica b follows the rollback', async () => (await predict(b, 'wifi')).body.modelVersion === 'v1');
    const c = await startReplica('replica-c');
    expect((await predict(c, 'wifi')).body.modelVersion).toBe('v1');
    // Nothing to roll back to any more (v2 left the history), so a second rollback needs a target.
    expect((await adminPost(a, 'rollback', {})).status).toBe(409);
    const again = await adminPost(a, 'promote', { version: 'v2', variant: 'LIVE' });
    expect(again.body).toMatchObject({ applied: true, live: 'v2' });
    await waitFor('replica c follows the promote', async () => (await predict(c, 'wifi')).body.modelVersion === 'v2');
    await Promise.all([b.close(), c.close()]);
  });

  it('a pinned version is not replaced by a newer ModelPublished', async () => {
    expect((await adminPost(a, 'pin', { pinned: true })).body).toMatchObject({ applied: true, live: 'v2', pinned: true });
    await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v3', labels: HELPDESK_LABELS });
    await waitFor('v3 known', () => a.registry.get('acme')?.versions.has('v3'));
    expect(a.registry.get('acme')?.live).toBe('v2');
    expect((await predict(a, 'wifi')).body.modelVersion).toBe('v2');
  });

  it('sends a stable canary share of requesters to the canary version', async () => {
    const r = await adminPost(a, 'promote', { version: 'v3', variant: 'CANARY', share: 0.3 });
    expect(r.body).toMatchObject({ applied: true, canary: 'v3', live: 'v2' });
    await predict(a, 'warm up', { requester: 'warm' });
    await waitFor('canary loaded', () => a.manager.isLoaded('acme', 'v3'));
    const n = 1000;
    let canary = 0;
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, (_, j) => predict(a, 'printer and vpn', { requester: `person-${i + j}` })));
      for (const p of batch) {
        expect(p.status).toBe(200);
        if (p.body.variant === 'CANARY') {
          expect(p.body.modelVersion).toBe('v3');
          canary++;
        } else {
          expect(p.body).toMatchObject({ variant: 'LIVE', modelVersion: 'v2' });
        }
      }
    }
    // Binomial(1000, 0.3): sd ~ 14.5, so +-5 points is > 3 sd.
    expect(canary / n).toBeGreaterThan(0.25);
    expect(canary / n).toBeLessThan(0.35);
    // One requester, one version: the same requester always lands on the same side.
    for (const who of ['person-1', 'person-2', 'person-3', 'person-4']) {
      const expected = stableShare(`acme|v3|${who}`) < 0.3 ? 'CANARY' : 'LIVE';
      for (let k = 0; k < 5; k++) expect((await predict(a, 'vpn', { requester: who })).body.variant).toBe(expected);
    }
    expect((await adminPost(a, 'promote', { version: 'v3', variant: 'CANARY', share: 0 })).body).toMatchObject({ canary: null });
  });

  it('scores a shadow version and logs it, but never returns it', async () => {
    expect((await adminPost(a, 'promote', { version: 'v3', variant: 'SHADOW', share: 1 })).body).toMatchObject({ applied: true, shadow: 'v3', live: 'v2' });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await predict(a, 'salary payslip', { requester: `s${i}` });
      expect(r.body).toMatchObject({ variant: 'LIVE', modelVersion: 'v2', label: 'Payroll' });
      ids.push(r.body.requestId as string);
    }
    const shadow = await waitFor('a SHADOW PredictionMade', () => predictions.find((p) => p.variant === 'SHADOW' && ids.includes(p.requestId)));
    expect(shadow).toMatchObject({ modelVersion: 'v3', clientId: 'acme', label: 'Payroll' });
    // The answer for the same request is logged too, as LIVE.
    await waitFor('the LIVE PredictionMade of that request', () => predictions.find((p) => p.requestId === shadow.requestId && p.variant === 'LIVE'));
    expect((await adminPost(a, 'promote', { version: 'v3', variant: 'SHADOW', share: 0 })).body).toMatchObject({ shadow: null });
  });

  it('refuses a corrupt artifact while the old version keeps serving', async () => {
    expect((await adminPost(a, 'pin', { pinned: false })).body).toMatchObject({ pinned: false, live: 'v2' });
    const failedBefore = await counter('eddy_server_model_loads_total', { outcome: 'failed' });
    const put = await writeFixtureModel(store, { clientId: 'acme', version: 'v4', labels: HELPDESK_LABELS });
    // Flip bytes in the stored blob: the hash no longer matches what ModelPublished says.
    const blob = path.join(config.modelStoreDir, 'blobs', put.sha256.slice(0, 2), `${put.sha256}.eddymodel`);
    const bytes = await fs.readFile(blob);
    bytes[bytes.length - 1] = bytes[bytes.length - 1]! ^ 0xff;
    await fs.writeFile(blob, bytes);
    await streams.producer.send('ModelPublished', modelPublished({ clientId: 'acme', version: 'v4', ...put }));
    await waitFor('v4 load refused', () => a.manager.failure('acme', 'v4'));
    expect(a.manager.failure('acme', 'v4')?.code).toBe('ARTIFACT_CORRUPT');
    for (let i = 0; i < 20; i++) {
      const r = await predict(a, 'keyboard', { requester: `c${i}` });
      expect(r.status).toBe(200);
      expect(r.body).toMatchObject({ modelVersion: 'v2', variant: 'LIVE', label: 'Hardware' });
    }
    expect(await counter('eddy_server_model_loads_total', { outcome: 'failed' })).toBeGreaterThan(failedBefore);
    const model = await fetch(`${a.url}/v1/clients/acme/model`, { headers: { authorization: `Bearer ${acme}` } }).then((r) => r.json() as Promise<Json>);
    expect(model.live).toMatchObject({ version: 'v4', loaded: false });
    expect(model.live.loadError).toMatch(/hashes to/);
    // A replica that starts now (v2 never loaded there) also falls back to v2 instead of failing.
    const d = await startReplica('replica-d');
    const r = await predict(d, 'keyboard');
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ modelVersion: 'v2', variant: 'LIVE' });
    await d.close();
  });
});

describe('model manager: thousands of models under a memory budget', () => {
  const versions: VersionInfo[] = [];
  beforeAll(async () => {
    for (let i = 0; i < 6; i++) {
      const put = await writeFixtureModel(store, { clientId: `m${i}`, version: 'v1', labels: HELPDESK_LABELS, extraFeatures: 1000 });
      versions.push({ version: 'v1', artifactUri: put.uri, artifactSha256: put.sha256, featurizer: '', labels: put.labels, metrics: {}, trainingExamples: 1, publishedAt: 0 });
    }
  });

  it('loads artifacts in the loader thread: the same model as on this thread, and errors keep their code', async () => {
    const loaderThread = new ArtifactLoaderThread(config.modelStoreDir, createLogger('test', 'silent'));
    try {
      const [threaded, local] = await Promise.all([loaderThread.loader('m0', versions[0]!), storeLoader(config)('m0', versions[0]!)]);
      expect(threaded.memoryBytes).toBe(local.memoryBytes);
      for (const text of ['my laptop screen is black', 'the vpn drops every hour', 'where is my payslip']) {
        expect(threaded.predict(text, { requester: 'ann' }, { 'requester.log_count': 1 }, 3)).toEqual(local.predict(text, { requester: 'ann' }, { 'requester.log_count': 1 }, 3));
      }
      const wrongHash = { ...versions[1]!, artifactSha256: versions[0]!.artifactSha256 };
      await expect(loaderThread.loader('m1', wrongHash)).rejects.toMatchObject({ code: 'ARTIFACT_CORRUPT' });
      const missing = { ...versions[1]!, artifactUri: `${versions[1]!.artifactUri.slice(0, -64)}${'0'.repeat(64)}`, artifactSha256: '0'.repeat(64) };
      await expect(loaderThread.loader('m1', missing)).rejects.toMatchObject({ code: 'ARTIFACT_NOT_FOUND' });
    } finally {
      await loaderThread.close();
    }
    await expect(loaderThread.loader('m0', versions[0]!)).rejects.toMatchObject({ code: 'SERVER_CLOSING' });
  });

  it('coalesces concurrent loads of one model into one', async () => {
    let loads = 0;
    const real = storeLoader(config);
    const manager = new ModelManager(async (c, v) => { loads++; return real(c, v); }, 1 << 30, createLogger('test', 'silent'));
    const handles = await Promise.all(Array.from({ length: 20 }, () => manager.borrow('m0', versions[0]!)));
    expect(loads).toBe(1);
    expect(new Set(handles.map((h) => h.predictor)).size).toBe(1);
    handles.forEach((h) => h.release());
  });

  it('evicts the least recently used models beyond the budget, never a borrowed one', async () => {
    const real = storeLoader(config);
    const probe = await real('m0', versions[0]!);
    const budget = probe.memoryBytes * 3 + 10;
    const manager = new ModelManager(real, budget, createLogger('test', 'silent'));
    const held = await manager.borrow('m0', versions[0]!); // borrowed throughout: must survive
    for (let i = 1; i < 6; i++) (await manager.borrow(`m${i}`, versions[i]!)).release();
    expect(manager.stats.bytes).toBeLessThanOrEqual(budget);
    expect(manager.stats.models).toBe(3);
    expect(manager.isLoaded('m0', 'v1')).toBe(true);
    expect(manager.isLoaded('m5', 'v1')).toBe(true);
    expect(manager.isLoaded('m1', 'v1')).toBe(false);
    held.release();
    // Touching m4 makes m0 the least recently used: the next load evicts m0, not m4.
    manager.borrowLoaded('m4', 'v1')?.release();
    (await manager.borrow('m1', versions[1]!)).release();
    expect(manager.isLoaded('m0', 'v1')).toBe(false);
    expect(manager.isLoaded('m4', 'v1')).toBe(true);
  });
});
