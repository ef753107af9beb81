import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { loadConfig, type EddyConfig } from '../common/config.ts';
import { connectStreams, deleteTopics, type Streams } from '../streams/index.ts';

/**
 * Test isolation (after BullMQ's tests): every test context gets its own topic prefix (so its own
 * topics and consumer groups), Redis key prefix and ClickHouse database, and removes them after.
 */
export function uniqueName(kind: string): string {
  return `${kind}${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

export function testConfig(overrides: Record<string, string> = {}): EddyConfig {
  const id = uniqueName('t');
  return loadConfig({
    ...process.env,
    EDDY_TOPIC_PREFIX: `${id}.`,
    EDDY_REDIS_PREFIX: `${id}`,
    EDDY_CLICKHOUSE_DATABASE: `eddy_${id}`,
    EDDY_PARTITIONS: '3',
    EDDY_LOG_LEVEL: process.env.EDDY_LOG_LEVEL ?? 'error',
    ...overrides,
  });
}

/** Polls until `check` returns a truthy value; fails with `what` after `timeoutMs` instead of sleeping blindly. */
export async function waitFor<T>(what: string, check: () => T | Promise<T>, timeoutMs = 20_000, intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${String(last)})` : ''}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Streams on a fresh topic prefix; `cleanup` stops consumers, deletes the topics and the groups. */
export async function testStreams(config: EddyConfig = testConfig()): Promise<Streams & { cleanup(): Promise<void> }> {
  const streams = await connectStreams(config, 'eddy-test');
  return Object.assign(streams, {
    async cleanup() {
      await streams.close();
      await streams.withAdmin(async (admin) => {
        await deleteTopics(admin, streams.topics);
        const ours = (await admin.listGroups()).filter((g) => g.startsWith(config.topicPrefix));
        if (ours.length) await admin.deleteGroups(ours).catch(() => undefined);
      });
    },
  });
}

/** Runs the real `eddy` command against a test context's topics (its prefix and partition count). */
export function runEddy(config: Pick<EddyConfig, 'topicPrefix' | 'partitions'>, ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['bin/eddy.mjs', ...args], {
      env: { ...process.env, EDDY_TOPIC_PREFIX: config.topicPrefix, EDDY_PARTITIONS: String(config.partitions), EDDY_LOG_LEVEL: 'warn' },
      encoding: 'utf8',
    }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}
