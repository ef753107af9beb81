import { randomUUID } from 'node:crypto';
import { sparseLinear } from '../models/kinds/sparse-linear/index.ts';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { EddyConfig } from '../common/config.ts';
import { eddyEnv } from './chaos-support.ts';
import { DEFAULT_FEATURIZER_CONFIG, TextFeaturizer } from '../featurizer/text.ts';
import { featureId, realtimeFeatureName } from '../featurizer/spans.ts';
import { FsModelStore } from '../models/store.ts';
import type { ModelPublished } from '../schemas/events.ts';
import type { EventProducer } from '../streams/index.ts';
import { testConfig, testStreams } from './helpers.ts';

/**
 * Real model artifacts for server tests and benchmarks, written with the trainer's artifact
 * format and FsModelStore (no training: the weights are set by hand so that each keyword points
 * at one label, which makes every prediction predictable).
 */

const featurizer = new TextFeaturizer(DEFAULT_FEATURIZER_CONFIG);

export interface FixtureModel {
  clientId: string;
  version: string;
  /** label -> words that should route to it */
  labels: Record<string, string[]>;
  /** Adds rows so the artifact has about this many stored features (benchmarks: realistic sizes). */
  extraFeatures?: number;
  quantization?: 'float32' | 'int8-row';
  /** label -> real-time feature names (`requester.share:<label>`) that push towards it: makes the features a prediction read visible in its answer */
  realtime?: Record<string, string[]>;
}

const fillers: number[] = [];
/** Ids of filler words (cached: benchmarks write thousands of models of the same size). */
function fillerIds(n: number): number[] {
  for (let i = fillers.length; i < n; i++) fillers.push(featurizer.featurize(`filler${i}x`).ids[0]!);
  return fillers.slice(0, n);
}

export async function writeFixtureModel(store: FsModelStore, m: FixtureModel): Promise<{ uri: string; sha256: string; sizeBytes: number; labels: string[] }> {
  const labels = Object.keys(m.labels);
  const rows = new Map<number, Float32Array>();
  const row = (id: number) => {
    let r = rows.get(id);
    if (!r) rows.set(id, (r = new Float32Array(labels.length)));
    return r;
  };
  labels.forEach((label, c) => {
    for (const word of m.labels[label]!) {
      for (const id of featurizer.featurize(word).ids) row(id)[c]! += 8;
    }
  });
  for (const [label, names] of Object.entries(m.realtime ?? {})) {
    const c = labels.indexOf(label);
    for (const name of names) row(featureId(featurizer.config, realtimeFeatureName(name)))[c]! += 8;
  }
  const filler = fillerIds(m.extraFeatures ?? 0);
  for (let i = 0; i < filler.length; i++) row(filler[i]!)[i % labels.length]! += 0.01;
  const featureIds = Uint32Array.from(rows.keys()).sort();
  const dense = new Float32Array(featureIds.length * labels.length);
  featureIds.forEach((id, r) => dense.set(rows.get(id)!, r * labels.length));
  const quantization = m.quantization ?? 'float32';
  let weights: Int8Array | Float32Array = dense;
  let rowScales: Float32Array | null = null;
  if (quantization === 'int8-row') {
    const { quantizeWeights } = await import('../models/kinds/sparse-linear/index.ts');
    ({ weights, rowScales } = quantizeWeights(dense, featureIds.length, labels.length, 'int8-row'));
  }
  const put = await store.put(
    {
      formatVersion: 1,
      clientId: m.clientId,
      modelVersion: m.version,
      createdAt: new Date().toISOString(),
      labels,
      featurizer: featurizer.identity,
      model: { kind: 'sparse-linear', dimensions: { features: featureIds.length, labels: labels.length }, quantization },
      metrics: { accuracy: 0.9, macroF1: 0.88 },
      trainingDataSha256: '0'.repeat(64),
      trainingExamples: 100,
      backend: 'fixture',
      parentVersion: null,
    },
    sparseLinear.write({ featureIds, weights, rowScales, bias: new Float32Array(labels.length) }),
  );
  return { ...put, labels };
}

export function modelPublished(m: { clientId: string; version: string; uri: string; sha256: string; labels: string[] }): ModelPublished {
  return {
    eventId: randomUUID(), clientId: m.clientId, occurredAt: Date.now(), modelVersion: m.version, previousVersion: null,
    artifactUri: m.uri, artifactSha256: m.sha256, featurizer: featurizer.identity.id, labels: m.labels,
    metrics: { accuracy: 0.9, macroF1: 0.88, temperature: 1.5, unsureBelow: 0.35, eceBefore: 0.12, eceAfter: 0.03 }, trainingExamples: 100, trainingDataSha256: '0'.repeat(64),
    backend: 'fixture', trainingMs: 1, retrainEventId: null, dataComplete: true,
    modelConfig: JSON.stringify({ kind: 'sparse-linear', params: { C: 10 }, charNgrams: [] }), cvMacroF1: 0.87, searched: true,
  };
}

/** Writes an artifact and publishes its ModelPublished. */
export async function publishFixtureModel(store: FsModelStore, producer: EventProducer, m: FixtureModel): Promise<ModelPublished> {
  const put = await writeFixtureModel(store, m);
  const event = modelPublished({ clientId: m.clientId, version: m.version, ...put });
  await producer.send('ModelPublished', event);
  return event;
}

/** A test config with its own model store directory and API keys. */
export async function serverTestConfig(overrides: Record<string, string> = {}): Promise<EddyConfig & { cleanupStore(): Promise<void> }> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-server-test-'));
  const config = testConfig({
    EDDY_MODEL_STORE_DIR: dir,
    // Each test's spool is its own (a killed server's leftovers are replayed by the next one of the test, never another test's).
    EDDY_SERVER_SPOOL_DIR: path.join(dir, 'spool'),
    EDDY_SERVER_PORT: '0',
    EDDY_SERVER_ADMIN_KEY: ADMIN_KEY,
    EDDY_SERVER_API_KEYS: clientKeysVariable(),
    ...overrides,
  });
  return Object.assign(config, { cleanupStore: () => fs.rm(dir, { recursive: true, force: true }) });
}

export const ADMIN_KEY = 'admin-key-0123456789abcdef';
export const CLIENT_KEYS: Record<string, string> = {
  acme: 'acme-key-0123456789abcdef',
  globex: 'globex-key-0123456789abcdef',
  initech: 'initech-key-0123456789abcdef',
};

/** CLIENT_KEYS as EDDY_SERVER_API_KEYS spells them (key=clientId, comma-separated). */
function clientKeysVariable(): string {
  return Object.entries(CLIENT_KEYS).map(([client, key]) => `${key}=${client}`).join(',');
}

/** The environment of an `eddy serve` child process on this test's config, on `port`, with the fixture keys. */
export function serverProcessEnv(config: EddyConfig, port: number, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return eddyEnv(config, { EDDY_SERVER_PORT: String(port), EDDY_SERVER_ADMIN_KEY: ADMIN_KEY, EDDY_SERVER_API_KEYS: clientKeysVariable(), ...extra });
}

export const HELPDESK_LABELS = {
  Network: ['network', 'wifi', 'vpn', 'internet'],
  Hardware: ['laptop', 'screen', 'keyboard', 'boot'],
  Payroll: ['salary', 'payslip', 'payroll', 'bonus'],
};

/**
 * testStreams, tolerating one race seen when several test files create topics at once: a metadata
 * read right after creation answered Kafka 4's UNKNOWN_TOPIC_OR_PARTITION ("This server does not
 * host this topic-partition"). It was found with kafkajs; streams/topics.ts now waits until every
 * new partition answers ListOffsets, so this retry should no longer fire. Topic creation is
 * idempotent, so trying again is safe.
 */
export async function serverTestStreams(config: EddyConfig): Promise<Awaited<ReturnType<typeof testStreams>>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await testStreams(config);
    } catch (err) {
      if (attempt >= 3 || !/does not host this topic-partition/.test(String(err))) throw err;
    }
  }
}
