import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClickHouse, identifier } from '../common/clickhouse.ts';
import { migrateAnalytics } from '../processors/analytics/schema.ts';
import { testConfig, testStreams } from './helpers.ts';
import { generateClient } from './quality/workload.ts';

/** `eddy train` and `eddy models list` as an operator runs them, against rows in ClickHouse. */
const storeDir = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-trainer-cli-'));
const config = testConfig({ EDDY_MODEL_STORE_DIR: storeDir });
const env = {
  EDDY_TOPIC_PREFIX: config.topicPrefix, EDDY_CLICKHOUSE_DATABASE: config.clickhouseDatabase, EDDY_REDIS_PREFIX: config.redisPrefix,
  EDDY_MODEL_STORE_DIR: storeDir, EDDY_PARTITIONS: '3', EDDY_LOG_LEVEL: 'error', EDDY_TRAINER_EPOCHS: '5',
};
const clickhouse = createClickHouse(config);
const workload = generateClient({ clientId: 'cli-acme', examples: 200, labels: 3, noise: 0, seed: 9 });

function eddy(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['bin/eddy.mjs', ...args], { env: { ...process.env, ...env } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

function row(clientId: string, i: number, text: string, label: string) {
  return {
    event_id: `${clientId}-e${i}`, client_id: clientId, occurred_at: 1_700_000_000 + i, occurred_at_ms: 1_700_000_000_000 + i * 1000,
    example_id: `${clientId}-x${i}`, text, label, source: 'ASSIGNMENT', metadata: '{}', prediction_id: '', features: '{}', kafka_partition: 0, kafka_offset: i,
  };
}

beforeAll(async () => {
  await migrateAnalytics(clickhouse, config.clickhouseDatabase);
  const db = identifier(config.clickhouseDatabase);
  await clickhouse.insert({
    table: `${db}.examples`, format: 'JSONEachRow',
    values: [
      ...workload.examples.map((e, i) => row('cli-acme', i, e.text, e.label)),
      ...Array.from({ length: 12 }, (_, i) => row('cli-single', i, `vpn down ${i}`, 'Network')),
    ],
  });
  await clickhouse.insert({
    table: `${db}.label_changes`, format: 'JSONEachRow',
    values: workload.labels.map((l, i) => ({
      event_id: `lc${i}`, client_id: 'cli-acme', occurred_at: 1_600_000_000, occurred_at_ms: 1_600_000_000_000 + i, change: 'ADDED', label: l.name,
      previous_label: '', description: l.description, keywords: l.keywords, kafka_partition: 0, kafka_offset: i,
    })),
  });
});

afterAll(async () => {
  await clickhouse.command({ query: `DROP DATABASE IF EXISTS ${identifier(config.clickhouseDatabase)}` });
  await clickhouse.close();
  const streams = await testStreams(config);
  await streams.cleanup();
  await fs.rm(storeDir, { recursive: true, force: true });
});

describe('eddy train / eddy models list', { timeout: 240_000 }, () => {
  it('trains a client, prints the evaluation and the gate decision, and lists the version', async () => {
    const r = await eddy(['train', '--client', 'cli-acme', '--no-progress']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^candidate: accuracy \d\.\d{4} {2}macro-F1 \d\.\d{4}/m);
    for (const l of workload.labels) expect(r.stdout).toContain(l.name);
    expect(r.stdout).toMatch(/^gate: PUBLISHED cli-acme v1 \(first version\)/m);

    const again = await eddy(['train', '--client', 'cli-acme', '--no-progress']);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/^live v1: accuracy/m);
    expect(again.stdout).toMatch(/^gate: PUBLISHED cli-acme v2 \(replaces v1\)/m);

    const list = await eddy(['models', 'list', '--client', 'cli-acme']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^v1 .*\n^v2 .* v1 /m);
    const json = JSON.parse((await eddy(['models', 'list', '--client', 'cli-acme', '--json'])).stdout) as Array<{ modelVersion: string; labels: string[] }>;
    expect(json.map((x) => x.modelVersion)).toEqual(['v1', 'v2']);
    expect(json[1]!.labels).toEqual(workload.labels.map((l) => l.name).sort());
  });

  it('prints the validation refusal with its reason and exits 3', async () => {
    const r = await eddy(['train', '--client', 'cli-single', '--no-progress']);
    expect(r.code).toBe(3);
    expect(r.stdout).toMatch(/^gate: REJECTED at VALIDATION: SINGLE_LABEL \(1 label\(s\) with data/m);
    expect((await eddy(['models', 'list', '--client', 'cli-single'])).stdout).toMatch(/^no models for cli-single/);
  });

  it('refuses a bad --epochs in one line, exit 2 (bad usage)', async () => {
    const r = await eddy(['train', '--client', 'cli-acme', '--epochs', 'many']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toBe("eddy: --epochs must be a positive integer, got 'many'");
  });
});
