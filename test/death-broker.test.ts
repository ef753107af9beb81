import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { featureKeys } from '../common/keyspace.ts';
import type { AnyEvent } from '../streams/index.ts';
import { privateKafka, type PrivateService } from './chaos-support.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { caughtUp, cleanupProcessorsTest } from './processors-support.ts';

/**
 * kill -9 of the (private) broker while events flow: every event the producer saw acknowledged is
 * in the log after the broker returns, and the processors resume and count each event once.
 */
let kafka: PrivateService;
let config: ReturnType<typeof testConfig>;
let streams: Awaited<ReturnType<typeof testStreams>> | undefined;
let procs: RunningProcessors | undefined;
const clients = ['acme', 'globex', 'initech'];

beforeAll(async () => {
  kafka = await privateKafka();
  await kafka.start();
  config = testConfig({ EDDY_KAFKA_BROKERS: kafka.endpoint });
  streams = await testStreams(config);
}, 90_000);

afterAll(async () => {
  await procs?.stop();
  if (config) await cleanupProcessorsTest(config, streams, { keepDatabase: false }).catch(() => undefined);
  await kafka?.cleanup();
}, 60_000);

/** Every eventId on a topic, read from the beginning by a fresh group. */
async function eventIdsInLog(): Promise<string[]> {
  const ids: string[] = [];
  const group = `reader-${randomUUID().slice(0, 8)}`;
  const reader = streams!.consumer({
    group, topics: ['examples'], fromBeginning: true,
    handler: { handle: async (records) => { for (const r of records) ids.push(r.event.value.eventId); } },
  });
  await reader.start();
  try {
    await waitFor('the reader at the end of the log', async () => caughtUp(streams!, group, ['examples']), 30_000, 100);
  } finally {
    await reader.stop();
  }
  return ids;
}

describe('the broker killed mid-stream', () => {
  it('loses nothing acknowledged, and the processors resume after it returns', async () => {
    procs = await startProcessors(config, { only: ['features'], waitForAssignment: true });
    const acked = new Set<string>();
    let attempts = 0;
    let sending = true;
    const load = (async () => {
      for (let n = 0; sending; n++) {
        const events: AnyEvent[] = Array.from({ length: 20 }, (_, i) => ({
          name: 'LabeledExample' as const,
          value: { eventId: randomUUID(), clientId: clients[(n + i) % clients.length]!, occurredAt: Date.now(), exampleId: `x${n}-${i}`, text: 'the vpn is down', label: 'Network', source: 'ASSIGNMENT' as const, metadata: {}, predictionId: null },
        }));
        try {
          await streams!.producer.sendAll(events);
          for (const e of events) acked.add(e.value.eventId);
        } catch {
          // not acknowledged: may or may not be in the log
        }
        attempts++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    await waitFor('events acknowledged before the kill', () => acked.size >= 200, 20_000);
    await kafka.kill();
    const ackedAtKill = acked.size;
    const attemptsAtKill = attempts;
    await waitFor('sends tried while the broker is away', () => attempts >= attemptsAtKill + 3, 60_000);
    await kafka.start();
    await waitFor('sends acknowledged again after the broker returned', () => acked.size >= ackedAtKill + 200, 60_000);
    sending = false;
    await load;

    const inLog = new Set(await eventIdsInLog());
    const lost = [...acked].filter((id) => !inLog.has(id));
    expect(lost).toEqual([]);
    // The processors resume on their own and count every event in the log exactly once (a send
    // that failed may still have been written: it is in the log and counted, never twice).
    const counted = async () => {
      let total = 0;
      for (const c of clients) total += Number((await procs!.redis.hget(featureKeys.counts(config.redisPrefix, c), 'examples')) ?? 0);
      return total;
    };
    await waitFor('the processors caught up after the broker returned', () => caughtUp(streams!, 'processors.features', FEATURE_TOPICS), 60_000, 200);
    expect(await counted()).toBe(inLog.size);
    expect(procs.runners.features?.crashError).toBeUndefined();
  }, 180_000);

  it('a commit the dead broker refuses makes the consumer join again, not stop: it reads the batch again and goes on', async () => {
    const seen: string[] = [];
    let killed = false;
    const group = `commit-${randomUUID().slice(0, 8)}`;
    const event = (i: number): AnyEvent => ({
      name: 'LabeledExample' as const,
      value: { eventId: `commit-${group}-${i}`, clientId: 'acme', occurredAt: Date.now(), exampleId: `c${i}`, text: 'printer jam', label: 'Hardware', source: 'ASSIGNMENT' as const, metadata: {}, predictionId: null },
    });
    // Only this test's events (the log also holds the first test's).
    const mine = (id: string) => id.startsWith(`commit-${group}-`);
    // One record per call and the events produced before the start: the client's fetch stream is
    // paused (more than 4 records wait), so the commit, not a fetch, is the first request to fail.
    await streams!.producer.sendAll(Array.from({ length: 20 }, (_, i) => event(i)));
    const runner = streams!.consumer({
      group, topics: ['examples'], fromBeginning: true, maxRecordsPerCall: 1,
      handler: {
        async handle(records) {
          for (const r of records) if (mine(r.event.value.eventId)) seen.push(r.event.value.eventId);
          // The broker dies under the first batch of ours: the handler succeeds, the commit cannot.
          if (!killed && records.some((r) => mine(r.event.value.eventId))) {
            killed = true;
            await kafka.kill();
          }
        },
      },
    });
    const assigned = runner.waitForAssignment(60_000);
    await runner.start();
    try {
      await assigned;
      await waitFor('the broker killed under a batch', () => killed, 60_000);
      // Long enough for the client to give up on the commit (8 retries 200 ms apart: ~2 s; the old
      // runner had crashed by then), then the broker returns.
      await new Promise((r) => setTimeout(r, 6_000));
      expect(runner.crashError).toBeUndefined();
      await kafka.start();
      await waitFor('the producer reaches the returned broker', async () => {
        try {
          await streams!.producer.sendAll([20, 21].map(event));
          return true;
        } catch {
          return false;
        }
      }, 60_000, 1_000);
      await waitFor('the consumer reads on after the broker returned', () => seen.includes(`commit-${group}-21`), 90_000, 200);
      expect(runner.crashError).toBeUndefined();
      expect(runner.isRunning).toBe(true);
      // The uncommitted batch is read again (at least once), and nothing is skipped.
      for (let i = 0; i <= 21; i++) expect(seen).toContain(`commit-${group}-${i}`);
      expect(seen.filter((id) => id === `commit-${group}-0`).length).toBeGreaterThanOrEqual(2);
    } finally {
      // A runner that failed the test may fail to stop too (broker away): the assertion is the news.
      await runner.stop().catch(() => undefined);
    }
  }, 240_000);
});
