import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../common/config.ts';
import { createClickHouse } from '../common/clickhouse.ts';
import { featureKeys, triggerKeys } from '../common/keyspace.ts';
import { connectRedis, parseRedisTarget, type RedisClient } from '../common/redis.ts';
import { readRealtimeFeatures } from '../featurizer/realtime.ts';
import { readReviewQueue } from '../models/review.ts';
import { FsModelStore } from '../models/store.ts';
import { ANALYTICS_TOPICS } from '../processors/analytics/processor.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { replay } from '../processors/replay.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { readClientCounts } from '../processors/triggers/processor.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import type { AnyEvent, Streams, TopicName } from '../streams/index.ts';
import { waitFor } from './helpers.ts';
import {
  caughtUp, deleteRedisPrefix, dropDatabase, dumpRedis, example, feedback, labelAdded, prediction, privateRedisCluster, type PrivateRedisCluster,
} from './processors-support.ts';
import { ADMIN_KEY, CLIENT_KEYS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/**
 * Eddy on a real Redis Cluster (three private masters, no replicas; the shared Redis is the
 * single-node reference): the same events go through the processors into both, and the cluster
 * must hold exactly what the single Redis holds, spread over more than one node; a prediction
 * served from the cluster reads its real-time features there; the review and dashboard routes
 * read it; replay rebuilds it. Every processor batch spans clients on different nodes, so a
 * pipeline or DEL that is not split per slot is refused by the cluster and the state differs.
 */

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const CLIENTS = ['acme', 'globex', 'initech', 'umbrella', 'hooli', 'stark', 'wayne', 'wonka'];
const LABELS = ['Network', 'Hardware', 'Access'];
/**
 * Compared key for key. The triggers run after them: a retrain request names the example count of
 * the call that decided it, so its id and the monitor's record of it follow how events were
 * batched (on any Redis); the triggers' per-client state is compared once they have caught up.
 */
const PROCESSORS = ['features', 'analytics', 'feedback', 'monitor', 'review'] as const;
/** No quiet wait before a first model's request: the trigger decides within the call. */
const SETTINGS = { EDDY_TRIGGER_QUIET_MS: '0', EDDY_SERVER_FEATURE_TIMEOUT_MS: '1000' };

let cluster: PrivateRedisCluster;
type Side = { config: Awaited<ReturnType<typeof serverTestConfig>>; streams: Streams & { cleanup(): Promise<void> }; procs?: RunningProcessors; triggers?: RunningProcessors; redis?: RedisClient };
let onCluster: Side;
let single: Side;
let server: PredictionServer | undefined;

beforeAll(async () => {
  cluster = await privateRedisCluster();
  await cluster.start();
  const clusterConfig = await serverTestConfig({ ...SETTINGS, EDDY_REDIS_URL: cluster.url });
  const singleConfig = await serverTestConfig(SETTINGS);
  onCluster = { config: clusterConfig, streams: await serverTestStreams(clusterConfig) };
  single = { config: singleConfig, streams: await serverTestStreams(singleConfig) };
  onCluster.redis = await connectRedis(clusterConfig);
  single.redis = await connectRedis(singleConfig);
}, 180_000);

afterAll(async () => {
  await server?.close();
  for (const side of [onCluster, single]) {
    if (!side) continue;
    await side.procs?.stop();
    await side.triggers?.stop();
    const ch = createClickHouse(side.config);
    await dropDatabase(ch, side.config.clickhouseDatabase);
    await ch.close();
    if (side.redis) {
      // The shared Redis keeps running for everyone else: only this file's prefix goes.
      await deleteRedisPrefix(side.redis, side.config.redisPrefix);
      side.redis.disconnect();
    }
    await side.streams.cleanup();
    await side.config.cleanupStore();
  }
  await cluster?.cleanup();
}, 120_000);

/**
 * The side's Redis state with its prefix replaced, so the two sides compare key for key. The
 * entity states an example saw (`:f:xf:`) are compared as values: their JSON lists each entity
 * hash's fields in the hash's insertion order, which follows how events were batched into script
 * calls (a replay reads bigger batches than live consumption), not what was counted.
 */
async function state(side: Side): Promise<Record<string, unknown>> {
  const dump = await dumpRedis(side.redis!, side.config.redisPrefix);
  const sorted = (o: Record<string, string>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
  return Object.fromEntries(Object.entries(dump).map(([k, v]) => [
    `P${k.slice(side.config.redisPrefix.length)}`,
    k.includes(':f:xf:') && typeof v === 'string' ? (JSON.parse(v) as Array<Record<string, string> | unknown[]>).map((e) => (Array.isArray(e) ? {} : sorted(e))) : v,
  ]));
}

const allCaughtUp = async (side: Side) => {
  const groups: Array<[string, readonly TopicName[]]> = [
    ['processors.features', FEATURE_TOPICS], ['processors.analytics', ANALYTICS_TOPICS], ['processors.feedback', ['feedback']],
    ['processors.monitor', ['predictions', 'feedback']], ['processors.review', ['predictions', 'feedback']],
  ];
  for (const [group, topics] of groups) if (!(await caughtUp(side.streams, group, topics))) return false;
  return true;
};

describe('EDDY_REDIS_URL names a cluster', () => {
  it('redis+cluster:// with seed nodes is a cluster; a plain URL stays one server; a bad list is refused at start', () => {
    expect(parseRedisTarget('redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001/')).toEqual({
      cluster: true, tls: false, username: 'u', password: 'p@ss', nodes: [{ host: '10.0.0.1', port: 7000 }, { host: '10.0.0.2', port: 7001 }],
    });
    expect(parseRedisTarget('rediss+cluster://h:6380')).toMatchObject({ cluster: true, tls: true, nodes: [{ host: 'h', port: 6380 }] });
    expect(parseRedisTarget('redis://127.0.0.1:6379/2')).toEqual({ cluster: false, url: 'redis://127.0.0.1:6379/2' });
    expect(() => loadConfig({ EDDY_REDIS_URL: 'redis+cluster://' })).toThrow(/EDDY_REDIS_URL/);
    expect(() => loadConfig({ EDDY_REDIS_URL: 'redis+cluster://a:1,,b:2' })).toThrow(/EDDY_REDIS_URL/);
    expect(loadConfig({ EDDY_REDIS_URL: cluster.url }).redisUrl).toBe(cluster.url);
  });
});

describe('Eddy on a 3-master Redis Cluster', () => {
  it('the processors leave on the cluster exactly the state they leave on one Redis, spread over its nodes', async () => {
    expect(onCluster.redis!.isCluster).toBe(true);
    expect(single.redis!.isCluster).toBeFalsy();
    const t0 = Date.now() - 3 * 86_400_000;
    const events: AnyEvent[] = [];
    for (const client of CLIENTS) {
      for (const l of LABELS) events.push({ name: 'LabelSetChanged', value: labelAdded(client, l, { occurredAt: t0 }) });
      for (let i = 0; i < 60; i++) {
        // requester u0 asks only Hardware questions: the real-time features the server reads below
        const label = i % 5 === 0 ? 'Hardware' : LABELS[i % 3]!;
        events.push({ name: 'LabeledExample', value: example(client, label, { occurredAt: t0 + i * 60_000, metadata: { requester: `u${i % 5}`, channel: i % 2 ? 'chat' : 'email' } }) });
      }
      for (let i = 0; i < 10; i++) {
        // unsure (top score 0.3) and confident (0.9) answers: both kinds of review item
        const score = i % 2 ? 0.3 : 0.9;
        events.push({ name: 'PredictionMade', value: prediction(client, `${client}-r${i}`, LABELS[i % 3]!, { occurredAt: t0 + 86_400_000 + i * 1000, scores: [{ label: LABELS[i % 3]!, score }], metadata: { requester: `u${i % 5}`, channel: 'chat' } }) });
      }
      events.push({ name: 'LabelSetChanged', value: labelAdded(client, 'Access', { occurredAt: t0 + 1, change: 'RENAMED', previousLabel: 'Access', label: 'Identity' }) });
    }
    const feedbackEvents: AnyEvent[] = [];
    for (const client of CLIENTS) {
      for (let i = 0; i < 6; i++) {
        feedbackEvents.push({ name: 'PredictionFeedback', value: feedback(client, `${client}-r${i}`, i % 2 ? 'ACCEPTED' : 'REASSIGNED', i % 2 ? null : 'Hardware', { occurredAt: t0 + 2 * 86_400_000 + i }) });
      }
    }
    for (const side of [onCluster, single]) {
      side.procs = await startProcessors(side.config, { only: [...PROCESSORS], waitForAssignment: true });
      await side.streams.producer.sendAll(events);
    }
    // Feedback after its predictions were projected (the feedback processor reads their records).
    for (const side of [onCluster, single]) await waitFor('predictions projected', () => caughtUp(side.streams, 'processors.features', ['predictions']), 60_000, 100);
    for (const side of [onCluster, single]) await side.streams.producer.sendAll(feedbackEvents);
    for (const side of [onCluster, single]) {
      await waitFor('the feedback became examples', () => caughtUp(side.streams, 'processors.feedback', ['feedback']), 60_000, 100);
      await waitFor('every processor caught up', () => allCaughtUp(side), 60_000, 100);
    }

    const [clusterState, singleState] = [await state(onCluster), await state(single)];
    expect(Object.keys(singleState).length).toBeGreaterThan(CLIENTS.length * 20);
    // Every processor's keys, for every client (features, prediction records, monitor, review).
    for (const part of [':f:counts', ':f:labels', ':f:rt:requester:u0', ':pred:', ':m:seen', ':m:s', ':r:q']) {
      for (const client of CLIENTS) expect(Object.keys(clusterState).some((k) => k.startsWith(`P:{${client}}${part}`)), `${client} ${part}`).toBe(true);
    }
    expect(clusterState).toEqual(singleState);
    const counts = clusterState['P:{acme}:f:counts'] as Record<string, string>;
    expect(Number(counts.examples)).toBe(60 + 6 /* the ACCEPTED and REASSIGNED feedback became examples */);

    // The triggers' state (processing-time fields, so not in the dump): a first retrain requested
    // for every client, and the same counts as on one Redis.
    for (const side of [onCluster, single]) {
      side.triggers = await startProcessors(side.config, { only: ['triggers'], waitForAssignment: true });
      await waitFor('the triggers caught up', () => caughtUp(side.streams, 'processors.triggers', ['examples', 'labels']), 60_000, 100);
    }
    for (const client of CLIENTS) {
      const raw = await onCluster.redis!.get(triggerKeys.state(onCluster.config.redisPrefix, client));
      expect(JSON.parse(raw ?? '{}').outstanding, client).toMatchObject({ reason: 'NEW_CLIENT' });
      expect(await readClientCounts(onCluster.redis!, onCluster.config.redisPrefix, client)).toEqual(await readClientCounts(single.redis!, single.config.redisPrefix, client));
    }

    // Spread: more than one master holds client keys (the hash tags are doing their work).
    const perNode: number[] = [];
    for (const node of cluster.nodes) {
      const { Redis } = await import('ioredis');
      const r = new Redis({ port: node.port, host: '127.0.0.1' });
      try {
        const [, keys] = await r.scan('0', 'MATCH', `${onCluster.config.redisPrefix}:*`, 'COUNT', 100_000);
        perNode.push(keys.length);
      } finally {
        r.disconnect();
      }
    }
    expect(perNode.filter((n) => n > 0).length, `keys per node: ${perNode.join(', ')}`).toBeGreaterThan(1);
  }, 240_000);

  it('a server on the cluster predicts with the real-time features the processors wrote there, and serves review and dashboard from it', async () => {
    const c = onCluster.config;
    // A model that answers Hardware only when requester.share:Hardware says so: the text names no team.
    await publishFixtureModel(new FsModelStore(c.modelStoreDir), onCluster.streams.producer, {
      clientId: 'acme', version: 'v1', labels: { Network: ['vpn'], Hardware: ['laptop'], Identity: ['password'] }, realtime: { Hardware: ['requester.share:Hardware'] },
    });
    server = await startServer(c, { kafkaPredict: false });
    await server.ready;
    const call = async (method: string, path: string, key: string, body?: unknown) => {
      const res = await fetch(server!.url + path, { method, headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined });
      return { status: res.status, body: (await res.json()) as Json };
    };
    // What the serving reader sees on the cluster is what it sees on one Redis, and not nothing.
    const at = Date.now();
    const fromCluster = await readRealtimeFeatures(onCluster.redis!, c.redisPrefix, 'acme', { requester: 'u0' }, { timeoutMs: 1000, nowMs: at });
    const fromSingle = await readRealtimeFeatures(single.redis!, single.config.redisPrefix, 'acme', { requester: 'u0' }, { timeoutMs: 1000, nowMs: at });
    expect(fromCluster.defaulted).toBe(false);
    expect(fromCluster.features['requester.share:Hardware']).toBeGreaterThan(0.5);
    expect(fromCluster).toEqual(fromSingle);

    const answered = await call('POST', '/v1/clients/acme/predict', CLIENT_KEYS.acme!, { text: 'something is wrong', metadata: { requester: 'u0' }, explain: true });
    expect(answered.status).toBe(200);
    expect(answered.body).toMatchObject({ label: 'Hardware', modelVersion: 'v1', featuresDefaulted: false });
    // The explanation names the feature read from the cluster as what decided it.
    expect(answered.body.explanation.labels[0].terms[0]).toMatchObject({ kind: 'realtime', term: 'requester.share:Hardware' });
    // A requester with no history has no features (and is not defaulted): another label wins.
    const nobody = await call('POST', '/v1/clients/acme/predict', CLIENT_KEYS.acme!, { text: 'something is wrong', metadata: { requester: 'nobody' } });
    expect(nobody.body).toMatchObject({ featuresDefaulted: false });
    expect(nobody.body.label).not.toBe('Hardware');

    // The review queue (a Lua read and a MULTI per item) and the dashboard's overview (one pipeline per client).
    const queue = await call('GET', '/v1/clients/acme/review?limit=50', CLIENT_KEYS.acme!);
    expect(queue.status).toBe(200);
    const reference = await readReviewQueue(single.redis!, single.config.redisPrefix, 'acme', { limit: 50, offset: 0 });
    expect(reference.total).toBeGreaterThan(0);
    expect(queue.body.total).toBe(reference.total);
    expect(queue.body.items.map((i: Json) => i.itemId)).toEqual(reference.items.map((i) => i.itemId));
    const item = queue.body.items[0] as Json;
    const skipped = await call('POST', `/v1/clients/acme/review/${item.itemId}/skip`, CLIENT_KEYS.acme!);
    expect(skipped.status).toBe(200);
    expect((await call('GET', '/v1/clients/acme/review?limit=50', CLIENT_KEYS.acme!)).body.total).toBe(reference.total - 1);
    const overview = await call('GET', '/dashboard/api/overview?limit=100', ADMIN_KEY);
    expect(overview.status).toBe(200);
    expect((overview.body.clients as Json[]).map((x) => x.clientId).sort()).toEqual([...CLIENTS].sort());
    expect((overview.body.clients as Json[]).find((x) => x.clientId === 'acme')).toMatchObject({ reviewQueue: reference.total - 1 });
  }, 180_000);

  it('replay clears and rebuilds the feature state on every node of the cluster', async () => {
    const c = onCluster.config;
    // The server's two predictions above are on the log too: projected before the state is taken.
    await server?.close();
    server = undefined;
    await waitFor('the server\'s predictions projected', async () => (await onCluster.redis!.hget(featureKeys.counts(c.redisPrefix, 'acme'), 'predictions')) === '12', 60_000, 100);
    await waitFor('every processor caught up', () => allCaughtUp(onCluster), 60_000, 100);
    await onCluster.procs!.stop();
    await onCluster.triggers?.stop();
    onCluster.procs = onCluster.triggers = undefined;
    const before = await state(onCluster);
    // Damage the projections on several nodes, so only a real rebuild restores them.
    for (const client of CLIENTS) await onCluster.redis!.hset(featureKeys.counts(c.redisPrefix, client), 'examples', '999');
    await onCluster.redis!.del(featureKeys.labels(c.redisPrefix, 'globex'));
    expect(await state(onCluster)).not.toEqual(before);
    const result = await replay(c, { pollMs: 100 });
    expect(result.done).toBe(result.total);
    expect(await state(onCluster)).toEqual(before);
  }, 180_000);
});
