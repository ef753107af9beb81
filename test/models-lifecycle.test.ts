import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.ts';
import { monitorKeys } from '../common/keyspace.ts';
import { ModelLifecycle, retainedVersions } from '../models/lifecycle.ts';
import { FsModelStore } from '../models/store.ts';
import { startProcessors, type RunningProcessors } from '../processors/index.ts';
import { DashboardData, startServer, type PredictionServer } from '../server/index.ts';
import type { AnyEvent } from '../streams/index.ts';
import { runEddy, waitFor } from './helpers.ts';
import { caughtUp, deleteRedisPrefix } from './processors-support.ts';
import { ADMIN_KEY, HELPDESK_LABELS, modelPublished, serverTestConfig, serverTestStreams, writeFixtureModel } from './server-fixtures.ts';

/**
 * One lifecycle: the server, the trainer, the monitor (and the dashboard and CLI reading it) fold
 * the models topic with the same code, so the same sequence of events leads every one of them to
 * the same live version, pin and canary, including the events the rules ignore.
 */

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let server: PredictionServer | undefined;
let procs: RunningProcessors | undefined;
let trainerView: ModelLifecycle | undefined;
let redis: Redis;
const client = 'acme';

const promoted = (version: string, variant: 'LIVE' | 'CANARY' | 'SHADOW', share = 1, pinned = false): AnyEvent => ({
  name: 'ModelPromoted',
  value: { eventId: randomUUID(), clientId: client, occurredAt: Date.now(), modelVersion: version, variant, share, pinned, actor: 'test', reason: '' },
});
const rolledBack = (from: string | null, to: string): AnyEvent => ({
  name: 'ModelRolledBack',
  value: { eventId: randomUUID(), clientId: client, occurredAt: Date.now(), fromVersion: from, toVersion: to, actor: 'test', reason: '' },
});

const eddy = (...args: string[]) => runEddy(config, ...args);

beforeAll(async () => {
  config = await serverTestConfig();
  streams = await serverTestStreams(config);
  redis = new Redis(config.redisUrl);
  const store = new FsModelStore(config.modelStoreDir);
  const published = async (version: string): Promise<AnyEvent> => {
    const put = await writeFixtureModel(store, { clientId: client, version, labels: HELPDESK_LABELS });
    return { name: 'ModelPublished', value: modelPublished({ clientId: client, version, ...put }) };
  };
  // The sequence: every rule of the fold, and two events it must ignore.
  const sequence: AnyEvent[] = [
    await published('v1'),
    await published('v2'),
    promoted('v7', 'LIVE'), // never published: ignored by every user (the monitor used to accept it)
    rolledBack('v2', 'v1'),
    promoted('v2', 'CANARY', 0.25),
    promoted('v1', 'LIVE', 1, true), // pin v1
    await published('v3'), // pinned: v3 waits
    rolledBack('v1', 'v9'), // never published: ignored
  ];
  for (const e of sequence) await streams.producer.sendAll([e]);
});

afterAll(async () => {
  await server?.close();
  await procs?.stop();
  await trainerView?.stop();
  await deleteRedisPrefix(redis, config.redisPrefix);
  redis.disconnect();
  await streams?.cleanup();
  await config?.cleanupStore();
});

describe('one model lifecycle for every reader of the models topic', () => {
  // v2 was rolled back from, so it left the rollback history: nothing to roll back to.
  const expected = { live: 'v1', pinned: true, canary: { version: 'v2', share: 0.25 }, versions: ['v1', 'v2', 'v3'], rollbackTo: null };

  it('the server answers with it (GET /v1/clients/:id/model and the dashboard)', async () => {
    server = await startServer(config, { kafkaPredict: false });
    await server.ready;
    const res = await fetch(`${server.url}/v1/clients/${client}/model`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } });
    const body = await res.json() as { live: { version: string; pinned: boolean }; canary: { version: string; share: number }; versions: string[]; rollbackTo: string };
    expect({ live: body.live.version, pinned: body.live.pinned, canary: { version: body.canary.version, share: body.canary.share }, versions: body.versions, rollbackTo: body.rollbackTo }).toEqual(expected);
  });

  it('the trainer gates and retains against it', async () => {
    trainerView = new ModelLifecycle(streams, 'test-trainer', createLogger('test', 'silent'));
    await trainerView.start();
    const c = trainerView.registry.get(client)!;
    expect({ live: c.live, pinned: c.pinned, canary: c.canary, versions: [...c.versions.keys()], rollbackTo: c.liveHistory.at(-1) ?? null }).toEqual(expected);
    expect(retainedVersions(c)).toEqual({ live: 'v1', keep: ['v2'] });
  });

  it('the monitor keeps it in Redis, and the CLI quality view and dashboard read the same live version', async () => {
    procs = await startProcessors(config, { only: ['monitor'], waitForAssignment: true });
    await waitFor('the monitor to fold the models topic', () => caughtUp(streams, 'processors.monitor', ['models']), 30_000, 100);
    const summary = await redis.hgetall(monitorKeys.summary(config.redisPrefix, client));
    expect({ live: summary.live, pinned: summary.pinned }).toEqual({ live: 'v1', pinned: '1' });
    const folded = JSON.parse(summary.lifecycle!) as { canary: unknown; versions: Array<{ version: string }>; liveHistory: string[] };
    expect({ canary: folded.canary, versions: folded.versions.map((v) => v.version), rollbackTo: folded.liveHistory.at(-1) ?? null })
      .toEqual({ canary: expected.canary, versions: expected.versions, rollbackTo: expected.rollbackTo });
    // The ignored events are in the history, marked as such.
    const history = await new DashboardData(redis, config.redisPrefix).client(client);
    expect(history.live).toBe('v1');
    expect(history.events.filter((e) => e.title.includes('ignored')).map((e) => e.type).sort()).toEqual(['ModelPromoted', 'ModelRolledBack']);
  });

  it('the CLI shows it', async () => {
    const shown = await eddy('model', client, '--json');
    expect(shown.code).toBe(0);
    const c = JSON.parse(shown.stdout) as { live: string; pinned: boolean; canary: unknown; versions: Array<{ version: string }>; liveHistory: string[] };
    expect({ live: c.live, pinned: c.pinned, canary: c.canary, versions: c.versions.map((v) => v.version), rollbackTo: c.liveHistory.at(-1) ?? null }).toEqual(expected);
  });
});
