import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClickHouse } from '../common/clickhouse.ts';
import { featureKeys, keyPattern } from '../common/keyspace.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import type { LabeledExample, ModelPublished } from '../schemas/events.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import type { AnyEvent } from '../streams/codec.ts';
import { loadTrainingSet } from '../trainer/index.ts';
import { CHROMIUM_ARGS, ensureChromium } from './chromium.ts';
import { waitFor } from './helpers.ts';
import { collect } from './monitor-support.ts';
import { dropDatabase, example, labelAdded } from './processors-support.ts';
import { CLIENT_KEYS, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * A person works through the review queue with the keyboard in a real browser; the labels arrive
 * as LabeledExample events (source REVIEW) and the next model is trained on them.
 */
type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let procs: RunningProcessors;
let server: PredictionServer;
let browser: BrowserContext;
let profile: string;
let seen: AnyEvent[];
const redis = new Redis();
const clientId = 'acme';
const UNSURE_TEXTS = ['the printer on floor two jams', 'my chair is wobbly', 'who approves travel', 'the coffee machine leaks'];

beforeAll(async () => {
  const executablePath = ensureChromium();
  config = await serverTestConfig({ EDDY_TRAINER_MIN_EXAMPLES: '10' });
  streams = await serverTestStreams(config);
  seen = await collect(streams, ['examples', 'models']);
  procs = await startProcessors(config, { only: ['features', 'review'], waitForAssignment: true });
  // acme has teams and a few examples, but no model yet: the baseline answers, unsure of texts that name no team.
  const words: Record<string, string[]> = { Network: ['vpn', 'wifi', 'internet'], Hardware: ['laptop', 'screen', 'keyboard'], Payroll: ['salary', 'payslip', 'bonus'] };
  await streams.producer.sendAll([
    ...Object.entries(words).map(([label, kw]) => ({ name: 'LabelSetChanged' as const, value: labelAdded(clientId, label, { description: `${label} team`, keywords: kw }) })),
    ...Object.entries(words).flatMap(([label, kw]) => Array.from({ length: 8 }, (_, i) => ({
      name: 'LabeledExample' as const, value: example(clientId, label, { text: `${kw[i % 3]} problem number ${i}`, exampleId: `${label}-${i}` }),
    }))),
  ]);
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
  await waitFor('the label definitions', () => server.labels.get(clientId).length === 3, 20_000);
  // The baseline orders labels a text does not decide between by their examples: unsure only once
  // the feature processor has counted all 24 (8 per team), not while one team's were counted.
  await waitFor('the examples counted', async () => (await redis.hget(featureKeys.counts(config.redisPrefix, clientId), 'examples')) === '24', 20_000);
  for (const text of UNSURE_TEXTS) {
    const res = await fetch(`${server.url}/v1/clients/${clientId}/predict`, {
      method: 'POST', headers: { authorization: `Bearer ${CLIENT_KEYS[clientId]}`, 'content-type': 'application/json' }, body: JSON.stringify({ text }),
    });
    expect(((await res.json()) as Json).variant).toBe('BASELINE');
  }
  await waitFor('the unsure predictions queued', async () => {
    const r = await fetch(`${server.url}/v1/clients/${clientId}/review`, { headers: { authorization: `Bearer ${CLIENT_KEYS[clientId]}` } });
    return ((await r.json()) as Json).total === UNSURE_TEXTS.length;
  }, 30_000);
  profile = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-chromium-'));
  browser = await chromium.launchPersistentContext(profile, { executablePath, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1100, height: 1000 } });
}, 300_000);

afterAll(async () => {
  await browser?.close();
  if (profile) await fs.rm(profile, { recursive: true, force: true });
  await server?.close();
  await procs?.stop();
  await streams?.cleanup();
  await config?.cleanupStore();
  if (config) {
    const ch = createClickHouse(config);
    await dropDatabase(ch, config.clickhouseDatabase).catch(() => undefined);
    await ch.close();
    const keys = await redis.keys(keyPattern(config.redisPrefix));
    if (keys.length) await redis.del(...keys);
  }
  redis.disconnect();
});

/** `eddy train --client` against this test's topics, database, Redis prefix and model store. */
function train(): Promise<{ code: number; out: string }> {
  const env = {
    ...process.env, EDDY_TOPIC_PREFIX: config.topicPrefix, EDDY_PARTITIONS: String(config.partitions), EDDY_REDIS_PREFIX: config.redisPrefix,
    EDDY_CLICKHOUSE_DATABASE: config.clickhouseDatabase, EDDY_MODEL_STORE_DIR: config.modelStoreDir, EDDY_TRAINER_MIN_EXAMPLES: '10', EDDY_LOG_LEVEL: 'warn',
  };
  return new Promise((resolve) => execFile(process.execPath, ['bin/eddy.mjs', 'train', '--client', clientId, '--epochs', '5', '--no-progress'], { env, encoding: 'utf8', timeout: 240_000 },
    (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr })));
}

describe('the review page in a real browser', () => {
  it('labels three items with the keyboard; they become REVIEW examples and the next model is trained on them', async () => {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(m.text()); });
    // Signing in with acme's key: the page opens acme's queue (a client key knows its client).
    expect((await page.goto(`${server.url}/dashboard/review`))?.status()).toBe(401);
    await page.fill('#key', CLIENT_KEYS[clientId]!);
    await page.press('#key', 'Enter');
    await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });
    expect(await page.locator('#choose').isVisible()).toBe(false);
    expect(await page.locator('#labels button').allInnerTexts()).toEqual([expect.stringMatching(/1\s+Hardware/), expect.stringMatching(/2\s+Network/), expect.stringMatching(/3\s+Payroll/)]);

    // Three decisions, keyboard only: 1 (Hardware), 3 (Payroll), 2 (Network).
    const decided: Array<{ text: string; label: string }> = [];
    for (const [key, label] of [['1', 'Hardware'], ['3', 'Payroll'], ['2', 'Network']] as const) {
      const before = Number((await page.evaluate('document.body.dataset.decided')) ?? 0);
      decided.push({ text: await page.locator('#text').innerText(), label });
      await page.keyboard.press(key);
      await page.waitForFunction(`Number(document.body.dataset.decided || 0) === ${before + 1}`, undefined, { timeout: 10_000 });
    }
    expect(new Set(decided.map((d) => d.text)).size).toBe(3);
    await expect(page.locator('#status').innerText()).resolves.toMatch(/^Labelled Network/);
    // One item is left, and it is none of the three.
    expect(await page.evaluate('document.body.dataset.items')).toBe('1');
    await fs.mkdir('test-results', { recursive: true });
    await page.screenshot({ path: 'test-results/review.png', fullPage: true });

    // The labels are LabeledExample events with source REVIEW, with the texts as the users wrote them.
    const reviewed = await waitFor('three REVIEW examples', () => {
      const r = seen.filter((e) => e.name === 'LabeledExample' && e.value.source === 'REVIEW').map((e) => e.value as LabeledExample);
      return r.length === 3 ? r : undefined;
    }, 20_000);
    expect(reviewed.map((e) => ({ text: e.text, label: e.label })).sort((a, b) => a.text.localeCompare(b.text))).toEqual([...decided].sort((a, b) => a.text.localeCompare(b.text)));

    // The next model: the feature processor writes them to ClickHouse, the trainer trains on them.
    const ch = createClickHouse(config);
    try {
      await waitFor('the review examples in ClickHouse', async () => (await loadTrainingSet(ch, config.clickhouseDatabase, clientId)).examples.filter((e) => e.source === 'REVIEW').length === 3, 30_000);
      const trained = await train();
      expect(trained.code, trained.out).toBe(0);
      const published = await waitFor('the new model', () => seen.find((e) => e.name === 'ModelPublished' && e.value.clientId === clientId)?.value as ModelPublished | undefined, 30_000);
      const set = await loadTrainingSet(ch, config.clickhouseDatabase, clientId);
      expect(set.examples.filter((e) => e.source === 'REVIEW').map((e) => e.text).sort()).toEqual(decided.map((d) => d.text).sort());
      // The model records the hash of the set it was trained on: this very set, REVIEW examples included.
      expect(published.trainingDataSha256).toBe(set.sha256);
      expect(set.examples).toHaveLength(3 * 8 + 3);
    } finally {
      await ch.close();
    }
    expect(problems).toEqual([]);
  });
});
