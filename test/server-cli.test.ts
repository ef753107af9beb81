import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FsModelStore } from '../models/store.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { runEddy, waitFor } from './helpers.ts';
import { HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams } from './server-fixtures.ts';

/** `eddy promote | rollback | pin | model` write and read the models topic; a running server follows. */

let config: Awaited<ReturnType<typeof serverTestConfig>>;
let streams: Awaited<ReturnType<typeof serverTestStreams>>;
let server: PredictionServer;

const eddy = (...args: string[]) => runEddy(config, ...args);

beforeAll(async () => {
  config = await serverTestConfig();
  streams = await serverTestStreams(config);
  const store = new FsModelStore(config.modelStoreDir);
  await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
  await publishFixtureModel(store, streams.producer, { clientId: 'acme', version: 'v2', labels: HELPDESK_LABELS });
  server = await startServer(config, { kafkaPredict: false });
  await server.ready;
});

afterAll(async () => {
  await server?.close();
  await streams?.cleanup();
  await config?.cleanupStore();
});

describe('eddy rollout commands', () => {
  it('shows, rolls back, promotes a canary and pins; the running server follows the log', async () => {
    const model = await eddy('model', 'acme');
    expect(model.code).toBe(0);
    expect(model.stdout).toContain('acme: live v2, rollback to v1');

    const rollback = await eddy('rollback', 'acme', '--reason', 'test');
    expect(rollback.code).toBe(0);
    expect(rollback.stdout).toContain('rolled back v2 -> v1');
    await waitFor('server follows the rollback', () => server.registry.get('acme')?.live === 'v1');

    const canary = await eddy('promote', 'acme', 'v2', '--canary', '0.2');
    expect(canary.stdout).toContain('canary v2 @ 0.2');
    await waitFor('server follows the canary', () => server.registry.get('acme')?.canary?.share === 0.2);

    const pin = await eddy('pin', 'acme');
    expect(pin.stdout).toContain('live v1 (pinned)');
    await waitFor('server follows the pin', () => server.registry.get('acme')?.pinned === true);
  });

  it('refuses what the log says is impossible, with one line and exit 1', async () => {
    const unknown = await eddy('promote', 'acme', 'v9');
    expect(unknown.code).toBe(1);
    expect(unknown.stderr).toContain("eddy: client 'acme' has no version 'v9' (published: v1, v2)");
    // A bad option value is bad usage: exit 2, as for commander's own usage errors (README).
    const badShare = await eddy('promote', 'acme', 'v2', '--canary', '1.5');
    expect(badShare.code).toBe(2);
    expect(badShare.stderr).toContain('share must be a number in [0, 1]');
    const nobody = await eddy('rollback', 'nobody');
    expect(nobody.code).toBe(1);
    expect(nobody.stderr).toContain("client 'nobody' has no published model");
  });
});
