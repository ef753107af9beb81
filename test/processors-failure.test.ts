import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { ANALYTICS_TOPICS } from '../processors/analytics/processor.ts';
import { featureKeys } from '../common/keyspace.ts';
import type { AnyEvent } from '../streams/index.ts';
import {
  caughtUp, committedOffsets, count, counterValue, example, labelAdded, prediction, privateClickHouse, privateRedis, tableRows, type PrivateServer,
} from './processors-support.ts';
import { testStreamsRetrying } from './processors-support.ts';

// Private Redis and ClickHouse processes (the shared stack must keep running for everyone else).
let redisServer: PrivateServer;
let chServer: PrivateServer;
let config: ReturnType<typeof testConfig>;
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors | undefined;
const clients = ['acme', 'globex', 'initech'];

beforeAll(async () => {
  redisServer = await privateRedis();
  chServer = await privateClickHouse();
  await Promise.all([redisServer.start(), chServer.start()]);
  config = testConfig({ EDDY_REDIS_URL: redisServer.url, EDDY_CLICKHOUSE_URL: chServer.url });
  streams = await testStreamsRetrying(config);
}, 120_000);

afterAll(async () => {
  await procs?.stop();
  await streams?.cleanup();
  await redisServer?.cleanup();
  await chServer?.cleanup();
});

function batch(n: number, tag: string): AnyEvent[] {
  const out: AnyEvent[] = [];
  for (let i = 0; i < n; i++) {
    const client = clients[i % clients.length]!;
    out.push({ name: 'LabeledExample', value: example(client, i % 2 ? 'Network' : 'Hardware', { metadata: { requester: `u${i % 7}` }, exampleId: `${tag}-${i}` }) });
    if (i % 10 === 0) out.push({ name: 'PredictionMade', value: prediction(client, `${tag}-r${i}`, 'Network') });
  }
  return out;
}

async function totalExamplesInRedis(): Promise<number> {
  let total = 0;
  for (const c of clients) total += Number((await procs!.redis.hget(featureKeys.counts(config.redisPrefix, c), 'examples')) ?? 0);
  return total;
}

async function allCaughtUp(): Promise<boolean> {
  return (await caughtUp(streams, 'processors.features', FEATURE_TOPICS)) && (await caughtUp(streams, 'processors.analytics', ANALYTICS_TOPICS));
}

describe('processors when Redis or ClickHouse dies mid-stream', () => {
  it('pause without committing, lose nothing and count nothing twice after the restart', async () => {
    procs = await startProcessors(config, { only: ['features', 'analytics'], waitForAssignment: true });
    await streams.producer.sendAll([...clients.map((c) => ({ name: 'LabelSetChanged' as const, value: labelAdded(c, 'Network') })), ...batch(300, 'a')]);
    await waitFor('batch a processed', allCaughtUp, 30_000, 100);
    expect(await totalExamplesInRedis()).toBe(300);

    // --- Redis dies while events flow
    await redisServer.kill();
    const redisRetries = await counterValue('eddy_consumer_retries_total', { code: 'REDIS_UNAVAILABLE' });
    const committedBefore = await committedOffsets(streams, 'processors.features', 'examples');
    await streams.producer.sendAll(batch(300, 'b'));
    await waitFor('the feature processor retries (paused, not dropping)', async () => (await counterValue('eddy_consumer_retries_total', { code: 'REDIS_UNAVAILABLE' })) >= redisRetries + 3, 30_000, 100);
    expect(await committedOffsets(streams, 'processors.features', 'examples')).toEqual(committedBefore);
    await redisServer.start();
    await waitFor('batch b processed after Redis came back', allCaughtUp, 60_000, 200);
    expect(await totalExamplesInRedis()).toBe(600);
    expect(await count(procs.clickhouse, config.clickhouseDatabase, 'examples')).toBe(600);

    // --- ClickHouse dies while events flow: Redis updates apply, offsets stay, retries are deduplicated
    await chServer.kill();
    const chRetries = await counterValue('eddy_consumer_retries_total', { code: 'CLICKHOUSE_UNAVAILABLE' });
    const featuresBefore = await committedOffsets(streams, 'processors.features', 'examples');
    const analyticsBefore = await committedOffsets(streams, 'processors.analytics', 'predictions');
    await streams.producer.sendAll(batch(300, 'c'));
    await waitFor('both processors retry', async () => (await counterValue('eddy_consumer_retries_total', { code: 'CLICKHOUSE_UNAVAILABLE' })) >= chRetries + 4, 30_000, 100);
    expect(await committedOffsets(streams, 'processors.features', 'examples')).toEqual(featuresBefore);
    expect(await committedOffsets(streams, 'processors.analytics', 'predictions')).toEqual(analyticsBefore);
    await chServer.start();
    await waitFor('batch c processed after ClickHouse came back', allCaughtUp, 60_000, 200);

    // Exactly once in effect: every count and row exactly as many as were produced.
    expect(await totalExamplesInRedis()).toBe(900);
    expect(await count(procs.clickhouse, config.clickhouseDatabase, 'examples')).toBe(900);
    expect(await count(procs.clickhouse, config.clickhouseDatabase, 'predictions')).toBe(90);
    const perClient = Object.fromEntries(await Promise.all(clients.map(async (c) => [c, await procs!.redis.hgetall(featureKeys.counts(config.redisPrefix, c))] as const)));
    for (const c of clients) {
      expect(Number(perClient[c]!.examples)).toBe(300);
      expect(Number(perClient[c]!.predictions)).toBe(30);
      expect(Number(perClient[c]!['label:Network']) + Number(perClient[c]!['label:Hardware'])).toBe(300);
    }
    const ids = (await tableRows(procs.clickhouse, config.clickhouseDatabase, 'examples')).map((r) => r.example_id);
    expect(new Set(ids).size).toBe(900);
  }, 180_000);

  it('start while Redis and ClickHouse are both down, wait for them, then process everything', async () => {
    await procs?.stop();
    procs = undefined;
    await Promise.all([redisServer.kill(), chServer.kill()]);
    // Without waiting for its dependencies, startProcessors would reject here (ClickHouse refused).
    const starting = startProcessors(config, { only: ['features', 'analytics'] });
    await streams.producer.sendAll(batch(90, 'd'));
    await redisServer.start();
    await chServer.start();
    procs = await starting;
    await waitFor('batch d processed', allCaughtUp, 60_000, 200);
    expect(await totalExamplesInRedis()).toBe(990);
    expect(await count(procs.clickhouse, config.clickhouseDatabase, 'examples')).toBe(990);
  }, 180_000);
});
