import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { metricsRegistry } from '../common/metrics.ts';
import { FsModelStore } from '../models/store.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { monitorKeys } from '../common/keyspace.ts';
import type { ModelRejected, PredictionMade, RetrainRequested } from '../schemas/events.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import type { AnyEvent } from '../streams/codec.ts';
import { CHROMIUM_ARGS, ensureChromium } from './chromium.ts';
import { testStreams, waitFor } from './helpers.ts';
import { feedback } from './processors-support.ts';
import { collect, DAY, judged } from './monitor-support.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, modelPublished, serverTestConfig, writeFixtureModel } from './server-fixtures.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
let server: PredictionServer;
let browser: BrowserContext;
let profile: string;
let predictions: AnyEvent[];
const redis = new Redis();
const labels = Object.keys(HELPDESK_LABELS);
const now = Date.now();

async function predict(clientId: string, text: string): Promise<Json> {
  const res = await fetch(`${server.url}/v1/clients/${clientId}/predict`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEYS[clientId]}` },
    body: JSON.stringify({ text, metadata: { requester: 'ann' } }),
  });
  expect(res.status).toBe(200);
  return (await res.json()) as Json;
}

/** The dashboard's data as the admin sees it. */
const asAdmin = (path: string) => fetch(server.url + path, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });

const judgedCount = async (clientId: string) => Number((await redis.hget(monitorKeys.summary(config.redisPrefix, clientId), 'judged')) ?? 0);

beforeAll(async () => {
  const executablePath = ensureChromium();
  config = await serverTestConfig({ EDDY_MONITOR_MIN_SUPPORT: '20', EDDY_MONITOR_ROLLBACK_MIN_SUPPORT: '20', EDDY_MONITOR_LAG_INTERVAL_MS: '1000' });
  streams = await testStreams(config);
  const store = new FsModelStore(config.modelStoreDir);
  predictions = await collect(streams, ['predictions']);
  procs = await startProcessors(config, { only: ['monitor'], waitForAssignment: true });

  // acme: v1 a week ago with six days of judged traffic (the history), then v2 published today.
  const v1 = await writeFixtureModel(store, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  const v2 = await writeFixtureModel(store, { clientId: 'acme', version: 'v2', labels: HELPDESK_LABELS });
  const history: AnyEvent[] = [{ name: 'ModelPublished', value: { ...modelPublished({ clientId: 'acme', version: 'v1', ...v1 }), occurredAt: now - 7 * DAY } }];
  for (let d = 6; d >= 1; d--) {
    const wrongEvery = d > 3 ? 10 : 5; // quality slips mid-week: 90% right, then 80%
    history.push(...judged('acme', 'v1', now - d * DAY, 30, (i) => (i % wrongEvery === wrongEvery - 1 ? labels[(i + 1) % 3]! : labels[i % 3]!), (i) => labels[i % 3]!));
  }
  const retrain: RetrainRequested = { eventId: randomUUID(), clientId: 'acme', occurredAt: now - 2 * 3_600_000, reason: 'NEW_DATA', detail: '600 new examples since v1', requestedBy: 'trigger', dataAsOf: null };
  history.push({ name: 'RetrainRequested', value: retrain });
  history.push({ name: 'ModelPublished', value: { ...modelPublished({ clientId: 'acme', version: 'v2', ...v2 }), previousVersion: 'v1', occurredAt: now - 3_600_000, retrainEventId: retrain.eventId, trainingMs: 2300 } });
  // globex: v1 live; its last retrain was rejected by the trainer's gate.
  const g1 = await writeFixtureModel(store, { clientId: 'globex', version: 'v1', labels: HELPDESK_LABELS });
  const gRetrain: RetrainRequested = { eventId: randomUUID(), clientId: 'globex', occurredAt: now - 1_800_000, reason: 'LABELS_CHANGED', detail: 'label set changed since v1', requestedBy: 'trigger', dataAsOf: null };
  const rejected: ModelRejected = {
    eventId: randomUUID(), clientId: 'globex', occurredAt: now - 1_700_000, candidateVersion: 'v2', liveVersion: 'v1', stage: 'GATE', reasons: ['WORSE_THAN_LIVE'],
    detail: 'macro-F1 0.71 < live 0.88 - 0.02', candidateMetrics: { macroF1: 0.71 }, liveMetrics: { macroF1: 0.88 }, retrainEventId: gRetrain.eventId, dataComplete: true,
  };
  history.push({ name: 'ModelPublished', value: { ...modelPublished({ clientId: 'globex', version: 'v1', ...g1 }), occurredAt: now - 2 * DAY } },
    { name: 'RetrainRequested', value: gRetrain }, { name: 'ModelRejected', value: rejected });
  await streams.producer.sendAll(history);

  // initech: a model, never judged ("—", not 0.000); twelve small clients, so the list has pages.
  const i1 = await writeFixtureModel(store, { clientId: 'initech', version: 'v1', labels: HELPDESK_LABELS });
  history.length = 0;
  history.push({ name: 'ModelPublished', value: { ...modelPublished({ clientId: 'initech', version: 'v1', ...i1 }), occurredAt: now - DAY } });
  for (let i = 0; i < 12; i++) history.push(...judged(`bulk-${String(i).padStart(2, '0')}`, null, now - 3_600_000 + i, 1, () => 'Network', () => 'Network'));
  await streams.producer.sendAll(history);
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
  await waitFor('acme on v2', () => server.registry.get('acme')?.live === 'v2', 30_000);

  // Live traffic through the real HTTP API; users accept most answers and correct a few.
  const texts = ['vpn is down again', 'my laptop will not boot', 'salary missing on my payslip', 'wifi drops in room 4', 'screen flickers', 'bonus not paid'];
  const served: Json[] = [];
  for (let i = 0; i < 30; i++) served.push(await predict('acme', texts[i % texts.length]!));
  for (let i = 0; i < 12; i++) served.push(await predict('globex', texts[i % texts.length]!));
  const servedIds = new Set(served.map((r) => r.requestId as string));
  const made = await waitFor('the PredictionMade events of the live traffic', () => {
    const mine = predictions.map((e) => e.value as PredictionMade).filter((p) => servedIds.has(p.requestId));
    return mine.length >= served.length ? mine : undefined;
  }, 30_000);
  const judgements = made.map((p, i) => (i % 10 === 9
    ? feedback(p.clientId, p.requestId, 'REASSIGNED', labels.find((l) => l !== p.label)!)
    : feedback(p.clientId, p.requestId, 'ACCEPTED')));
  await streams.producer.sendAll(judgements.map((value) => ({ name: 'PredictionFeedback', value })));
  await waitFor('the monitor to judge everything', async () => (await judgedCount('acme')) === 180 + 30 && (await judgedCount('globex')) === 12, 30_000).catch(async (err) => { throw new Error(`${(err as Error).message}: acme ${await judgedCount('acme')}, globex ${await judgedCount('globex')}, made ${predictions.length}`); });

  profile = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-chromium-'));
  browser = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1280, height: 1400 } });
}, 900_000);

afterAll(async () => {
  await browser?.close();
  if (profile) await fs.rm(profile, { recursive: true, force: true });
  await server?.close();
  await procs?.stop();
  await streams?.cleanup();
  await config?.cleanupStore();
  if (config) {
    const keys = await redis.keys(`${config.redisPrefix}:*`);
    if (keys.length) await redis.del(...keys);
  }
  redis.disconnect();
});

describe('dashboard JSON endpoints', () => {
  it('shows an automatic rollback that the server applied: a fresh version worse on live feedback', async () => {
    const store = new FsModelStore(config.modelStoreDir);
    const u1 = await writeFixtureModel(store, { clientId: 'umbrella', version: 'v1', labels: HELPDESK_LABELS });
    const u2 = await writeFixtureModel(store, { clientId: 'umbrella', version: 'v2', labels: HELPDESK_LABELS });
    const truth = (i: number) => labels[i % 3]!;
    await streams.producer.sendAll([
      { name: 'ModelPublished', value: { ...modelPublished({ clientId: 'umbrella', version: 'v1', ...u1 }), occurredAt: now - 3 * DAY } },
      ...judged('umbrella', 'v1', now - 2 * DAY, 30, (i) => (i % 10 === 9 ? labels[(i + 1) % 3]! : truth(i)), truth),
      { name: 'ModelPublished', value: { ...modelPublished({ clientId: 'umbrella', version: 'v2', ...u2 }), previousVersion: 'v1', occurredAt: now - 3_600_000 } },
    ]);
    await waitFor('v2 live on the server', () => server.registry.get('umbrella')?.live === 'v2', 30_000);
    await waitFor('the monitor to follow v2', async () => (await redis.hget(monitorKeys.summary(config.redisPrefix, 'umbrella'), 'live')) === 'v2', 30_000);
    // v2 (served by another replica, say) gets half of its answers corrected.
    await streams.producer.sendAll(judged('umbrella', 'v2', now - 1_800_000, 30, (i) => (i % 2 ? labels[(i + 1) % 3]! : truth(i)), truth));
    await waitFor('the server back on v1', () => server.registry.get('umbrella')?.live === 'v1', 30_000);
    const detail = await waitFor('the rollback in the client history', async () => {
      const d = (await (await asAdmin('/dashboard/api/clients/umbrella')).json()) as Json;
      return d.events.some((e: Json) => e.type === 'ModelRolledBack') ? d : undefined;
    }, 30_000);
    expect(detail.live).toBe('v1');
    expect(detail.byVersion).toEqual([
      expect.objectContaining({ version: 'v2', support: 30, accuracy: 0.5 }),
      expect.objectContaining({ version: 'v1', support: 30, accuracy: 0.9 }),
    ]);
    expect(detail.events.map((e: Json) => e.title)).toEqual(expect.arrayContaining([expect.stringMatching(/^rolled back v2 -> v1 by monitor: automatic: v2 kept 50\.0% of 30/)]));
  });

  it('pages and searches clients, and says "nothing judged" with null, not 0', async () => {
    const page1 = (await (await asAdmin('/dashboard/api/overview?limit=5&offset=0')).json()) as Json;
    const page2 = (await (await asAdmin('/dashboard/api/overview?limit=5&offset=5')).json()) as Json;
    expect(page1.clients).toHaveLength(5);
    expect(page1.totalClients).toBeGreaterThanOrEqual(16);
    expect(page2.clients.map((c: Json) => c.clientId)).not.toContain(page1.clients[0].clientId);
    const bulk = (await (await asAdmin('/dashboard/api/overview?search=bulk-0')).json()) as Json;
    expect(bulk.clients).toHaveLength(10);
    const initech = ((await (await asAdmin('/dashboard/api/overview?search=initech')).json()) as Json).clients[0];
    expect(initech.quality).toEqual({ precision: null, recall: null, f1: null, accuracy: null, support: 0, bias: null });
    expect(initech.trend).toEqual([]);
  });

  it('lists real clients with their live versions, quality and last retrain', async () => {
    const res = await asAdmin('/dashboard/api/overview');
    expect(res.status).toBe(200);
    const body = (await res.json()) as Json;
    const acme = body.clients.find((c: Json) => c.clientId === 'acme');
    const globex = body.clients.find((c: Json) => c.clientId === 'globex');
    expect(acme).toMatchObject({ live: 'v2', liveSource: 'server', versions: 2, lastOutcome: { status: 'PUBLISHED', version: 'v2' }, lastRetrain: { reason: 'NEW_DATA' } });
    expect(globex).toMatchObject({ live: 'v1', lastOutcome: { status: 'REJECTED', version: 'v2' }, lastRetrain: { reason: 'LABELS_CHANGED' } });
    expect(acme.quality.support).toBe(180 + 30);
    expect(body.recent.map((e: Json) => e.type)).toEqual(expect.arrayContaining(['ModelPublished', 'ModelRejected', 'RetrainRequested']));
  });

  it('answers with structured errors: unknown client 404, bad query 400', async () => {
    const unknown = await asAdmin('/dashboard/api/clients/nobody-here');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'CLIENT_UNKNOWN' } });
    const bad = await asAdmin('/dashboard/api/overview?limit=lots');
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: { code: 'INVALID_REQUEST' } });
  });

  it('exports consumer lag, event rates and Redis latency on /metrics', async () => {
    // The lag is sampled periodically: wait for a sample taken after the monitor caught up with
    // the feedback topic (a sample taken before it reads the backlog, e.g. 29 under a loaded CI).
    const monitorFeedbackLag = async () => (await metricsRegistry.getSingleMetric('eddy_consumer_lag')?.get())?.values
      .find((v) => v.labels.group === `${config.topicPrefix}processors.monitor` && v.labels.topic === 'feedback')?.value;
    await waitFor('the monitor\'s feedback lag sampled at 0', async () => (await monitorFeedbackLag()) === 0, 30_000);
    const text = await (await asAdmin('/metrics')).text();
    expect(text).toMatch(new RegExp(`eddy_consumer_lag\\{group="${config.topicPrefix.replace(/\./g, '\\.')}processors\\.monitor",topic="feedback"\\} 0`));
    expect(text).toContain('eddy_redis_command_seconds_bucket');
    expect(text).toContain('eddy_topic_end_offset{topic="predictions"}');
  });
});

describe('dashboard in a real headless browser', () => {
  it('loads, shows clients and versions, renders the chart, is keyboard-usable, and saves a screenshot', async () => {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(e.message));
    // The sign-in page answers 401 by design; nothing else may fail.
    page.on('response', (r) => { if (r.status() >= 400 && !(r.status() === 401 && new URL(r.url()).pathname === '/dashboard')) problems.push(`${r.status()} ${r.url()}`); });
    // Without a session the page is the sign-in form (401); signing in with the admin key opens the dashboard.
    const first = await page.goto(`${server.url}/dashboard#client=acme`);
    expect(first?.status()).toBe(401);
    await page.fill('#key', ADMIN_KEY);
    await page.press('#key', 'Enter');
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });

    const rows = await page.locator('#clients tbody tr').allInnerTexts();
    expect(rows.find((r) => r.startsWith('acme'))).toContain('v2');
    expect(rows.find((r) => r.startsWith('globex'))).toMatch(/v1[\s\S]*rejected v2/);
    expect(rows.find((r) => r.startsWith('umbrella'))).toMatch(/rolled back to v1/);
    expect(await page.locator('#detail-title').innerText()).toBe('Client acme');
    expect(await page.locator('#versions tbody tr').allInnerTexts()).toEqual([expect.stringMatching(/^v2 \(live\)\s+0\.9/), expect.stringMatching(/^v1\s+0\.8/)]);

    // Every client with judgements has its F1 over time in the list; one never judged shows "—".
    await page.selectOption('#page-size', '100');
    await page.waitForFunction("document.querySelectorAll('#clients tbody tr').length >= 16");
    expect(await page.locator('#clients tr[data-client="acme"] svg.spark polyline.f1').count()).toBe(1);
    expect(await page.locator('#clients tr[data-client="globex"] svg.spark polyline.f1').count()).toBe(1);
    expect((await page.locator('#clients tr[data-client="acme"] svg.spark').getAttribute('aria-label'))).toMatch(/^F1 of acme: 0\.\d{3} on .*, 0\.\d{3} on /);
    const initechRow = await page.locator('#clients tr[data-client="initech"]').innerText();
    expect(initechRow).toContain('—');
    expect(initechRow).not.toContain('0.000');

    // The chart: three metric lines over the week's points, and the version markers.
    const f1 = await page.locator('#chart svg polyline.f1').getAttribute('points');
    expect(f1!.trim().split(/\s+/).length).toBeGreaterThanOrEqual(7);
    expect(await page.locator('#chart svg polyline.precision').count()).toBe(1);
    expect(await page.locator('#chart svg text', { hasText: 'v2' }).count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#chart svg.trend').getAttribute('role')).toBe('img');
    expect(await page.locator('#chart-desc').textContent()).toMatch(/Latest: precision \d\.\d{3}/);
    // The version timeline on the same time axis: v2's publication (v1's is a week back, at the window's start).
    expect(await page.locator('#chart svg .timeline [data-type="ModelPublished"]').count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#chart-desc').textContent()).toMatch(/Timeline: .*published v2/);
    // The live version's model info: the search's configuration, its CV score, calibration.
    expect(await page.locator('#detail-summary').textContent()).toMatch(/Model v2: sparse-linear C=10 \(chosen by this version's search\), cross-validated macro-F1 0\.870, .*calibration error 0\.120 -> 0\.030, unsure below 0\.350/);
    // Segments and the review queue of the client.
    expect(await page.locator('#segments tbody tr').count()).toBeGreaterThanOrEqual(1);
    expect(await page.locator('#segments tbody tr').first().innerText()).toMatch(/^length=/);
    expect(await page.locator('#detail-review').innerText()).toMatch(/Nothing waits for review|wait for a human label/);
    expect(await page.locator('#recent li').allInnerTexts()).toEqual(expect.arrayContaining([expect.stringContaining('rejected at GATE: WORSE_THAN_LIVE')]));
    expect(await page.locator('#rates tbody tr', { hasText: 'predictions' }).count()).toBe(1);

    // Keyboard: tab to globex's button and press Enter; the detail follows and takes the focus.
    const globex = page.locator('#clients button.client', { hasText: 'globex' });
    await globex.focus();
    await page.keyboard.press('Enter');
    await page.waitForFunction("document.querySelector('#detail-title')?.textContent === 'Client globex'");
    await waitFor('focus on the detail', () => page.evaluate<boolean>("document.activeElement?.id === 'client-detail'"), 5_000);

    // Every form control has a label; every table has a caption.
    const unlabelled = await page.evaluate<number>("[...document.querySelectorAll('input, select, textarea')].filter((i) => !i.labels?.length).length");
    expect(unlabelled).toBe(0);
    expect(await page.evaluate<boolean>("[...document.querySelectorAll('table')].every((t) => !!t.querySelector('caption'))")).toBe(true);

    // Pages: ten clients a page, the next page shows the next ones.
    await page.selectOption('#page-size', '10');
    await page.waitForFunction("document.querySelectorAll('#clients tbody tr').length === 10");
    const firstPage = await page.locator('#clients button.client').allInnerTexts();
    await page.click('#next-page');
    await page.waitForFunction(`!document.querySelector('#clients button.client[data-client="${firstPage[0]}"]')`);
    expect(await page.locator('#clients-count').innerText()).toMatch(/^Clients 11–\d+ of \d+ \(page 2 of \d+\)\.$/);
    await page.click('#prev-page');
    await page.waitForSelector(`#clients button.client[data-client="${firstPage[0]}"]`);
    await page.selectOption('#page-size', '100');

    // Live: a client served by another replica appears without reloading the page.
    await streams.producer.sendAll(judged('hooli', null, Date.now(), 3, () => 'Network', () => 'Network'));
    await page.waitForSelector('#clients button.client[data-client="hooli"]', { timeout: 20_000 });

    await page.click('#clients button.client[data-client="acme"]');
    await page.waitForFunction("document.querySelector('#detail-title')?.textContent === 'Client acme'");
    await fs.mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/dashboard.png', fullPage: true });
    expect((await fs.stat('test-results/dashboard.png')).size).toBeGreaterThan(10_000);
    await page.locator('#client-detail').screenshot({ path: 'test-results/dashboard-client.png' });
    expect(problems).toEqual([]);
  });
});
