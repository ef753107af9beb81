import { randomUUID } from 'node:crypto';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { MONITOR_TOPICS, MonitorProcessor, monitorOptions } from '../processors/monitor/processor.ts';
import { createLogger } from '../common/log.ts';
import type { EventRecord } from '../streams/consumer.ts';
import { monitorKeys } from '../common/keyspace.ts';
import { metricsRegistry } from '../common/metrics.ts';
import type { AnyEvent } from '../streams/codec.ts';
import type { ModelPublished, ModelRolledBack, QualityAlert } from '../schemas/events.ts';
import { caughtUp, deleteRedisPrefix } from './processors-support.ts';
import { collect, DAY, judged } from './monitor-support.ts';

const config = testConfig({
  EDDY_MONITOR_MIN_SUPPORT: '30', EDDY_MONITOR_BIAS_THRESHOLD: '0.1',
  EDDY_MONITOR_AUTO_ROLLBACK: 'true', EDDY_MONITOR_ROLLBACK_DROP_PCT: '15', EDDY_MONITOR_ROLLBACK_MIN_SUPPORT: '50',
});
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
let seen: Awaited<ReturnType<typeof collect>>;
const redis = new Redis(config.redisUrl);
const now = Date.now();
const labels = ['Network', 'Hardware', 'Access'];
/** The monitor handled everything sent, and what it emitted was read (it produces before it commits). */
const monitorDone = async () => (await caughtUp(streams, 'processors.monitor', MONITOR_TOPICS)) && seen.drained();

beforeAll(async () => {
  streams = await testStreams(config);
  seen = await collect(streams, ['alerts', 'models']);
  procs = await startProcessors(config, { only: ['monitor'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  await streams?.cleanup();
  await deleteRedisPrefix(redis, config.redisPrefix);
  redis.disconnect();
});

const alerts = (clientId: string) => seen.filter((e) => e.name === 'QualityAlert' && e.value.clientId === clientId).map((e) => e.value as QualityAlert);
const rollbacks = (clientId: string) => seen.filter((e) => e.name === 'ModelRolledBack' && e.value.clientId === clientId).map((e) => e.value as ModelRolledBack);

function published(clientId: string, version: string, previousVersion: string | null, at: number): AnyEvent {
  const e: ModelPublished = {
    eventId: randomUUID(), clientId, occurredAt: at, modelVersion: version, previousVersion, artifactUri: `file:///nowhere/${version}`,
    artifactSha256: '0'.repeat(64), featurizer: 'test@1', labels, metrics: { macroF1: 0.9 }, trainingExamples: 300,
    trainingDataSha256: '0'.repeat(64), backend: 'test', trainingMs: 1200, retrainEventId: null, dataComplete: true, modelConfig: '', cvMacroF1: null, searched: false,
  };
  return { name: 'ModelPublished', value: e };
}

describe('prediction bias', () => {
  it('fires on a skewed stream and not on a balanced one, even a less accurate one', async () => {
    // Both clients: 90 judged predictions whose right labels are uniform over three labels.
    // skewed: in 2 of 3 blocks the model says Network whatever the request (56% right);
    // balanced: in those blocks it says the next label instead (33% right, but no label favoured).
    const truth = (i: number) => labels[i % 3]!;
    const skewed = judged('skewed-co', 'v1', now, 90, (i) => (Math.floor(i / 3) % 3 !== 0 ? 'Network' : truth(i)), truth);
    const balanced = judged('balanced-co', 'v1', now, 90, (i) => (Math.floor(i / 3) % 3 !== 0 ? labels[(i + 1) % 3]! : truth(i)), truth);
    await streams.producer.sendAll([...skewed, ...balanced]);
    const alert = await waitFor('a bias alert', () => alerts('skewed-co').find((a) => a.kind === 'PREDICTION_BIAS'), 30_000);
    expect(alert).toMatchObject({ metric: 'jensen_shannon', label: 'Network', previousValue: 0.1, window: '7d' });
    expect(alert.currentValue).toBeGreaterThan(0.1);
    expect(alert.support).toBe(90);
    await waitFor('the monitor to catch up', monitorDone, 30_000);
    expect(alerts('balanced-co')).toEqual([]);
    expect(alerts('skewed-co').filter((a) => a.kind === 'PREDICTION_BIAS')).toHaveLength(1);
    // The divergence the monitor measured (its gauge) for each: clearly apart.
    const gauge = await metricsRegistry.getSingleMetric('eddy_monitor_prediction_bias')!.get();
    const of = (c: string) => gauge.values.find((v) => v.labels.client_id === c)?.value;
    expect(of('balanced-co')).toBeCloseTo(0, 6);
    expect(of('skewed-co')).toBeGreaterThan(0.14);
  });
});

describe('automatic rollback', () => {
  it('rolls back a fresh version clearly worse than its predecessor on live feedback, saying why', async () => {
    const c = 'regress-co';
    const truth = (i: number) => labels[i % 3]!;
    await streams.producer.sendAll([published(c, 'v1', null, now - 3 * DAY)]);
    // v1 served 60 judged predictions, 54 right (90%).
    await streams.producer.sendAll(judged(c, 'v1', now - 2 * DAY, 60, (i) => (i % 10 === 9 ? labels[(i + 1) % 3]! : truth(i)), truth));
    await waitFor('v1 judged', monitorDone, 30_000);
    await streams.producer.sendAll([published(c, 'v2', 'v1', now - DAY)]);
    // v2: 50 judged, 30 right (60%): accuracy -33% against v1.
    await streams.producer.sendAll(judged(c, 'v2', now - DAY + 1000, 50, (i) => (i % 5 >= 3 ? labels[(i + 1) % 3]! : truth(i)), truth));
    const rb = await waitFor('a rollback', () => rollbacks(c)[0], 30_000);
    expect(rb).toMatchObject({ clientId: c, fromVersion: 'v2', toVersion: 'v1', actor: 'monitor' });
    expect(rb.reason).toContain('v2 kept 60.0% of 50 judged predictions, v1 kept 90.0% of 60');
    const regression = await waitFor('a regression alert', () => alerts(c).find((a) => a.kind === 'MODEL_REGRESSION'), 30_000);
    expect(regression).toMatchObject({ modelVersion: 'v2', metric: 'accuracy', support: 50 });
    expect(regression.dropPercent).toBeCloseTo(100 / 3, 4);
    // The monitor reads its own rollback back from the log: v1 is live again, the decision is not repeated.
    await waitFor('v1 live again', async () => (await redis.hget(monitorKeys.summary(config.redisPrefix, c), 'live')) === 'v1', 30_000);
    await streams.producer.sendAll(judged(c, 'v2', now - DAY + 5000, 20, () => 'Access', truth));
    await waitFor('the monitor to catch up', monitorDone, 30_000);
    expect(rollbacks(c)).toHaveLength(1);
  });

  it('keeps a fresh version that holds up on live feedback', async () => {
    const c = 'steady-co';
    const truth = (i: number) => labels[i % 3]!;
    await streams.producer.sendAll([published(c, 'v1', null, now - 3 * DAY)]);
    await streams.producer.sendAll(judged(c, 'v1', now - 2 * DAY, 60, (i) => (i % 10 === 9 ? labels[(i + 1) % 3]! : truth(i)), truth));
    await streams.producer.sendAll([published(c, 'v2', 'v1', now - DAY)]);
    // v2: 85% right: 5.6% below v1, within the 15% tolerance.
    await streams.producer.sendAll(judged(c, 'v2', now - DAY + 1000, 60, (i) => (i % 20 >= 17 ? labels[(i + 1) % 3]! : truth(i)), truth));
    await waitFor('the decision', async () => (await redis.hget(monitorKeys.summary(config.redisPrefix, c), 'fresh_decision')) !== null, 30_000);
    await waitFor('the monitor to catch up', monitorDone, 30_000);
    const decision = JSON.parse((await redis.hget(monitorKeys.summary(config.redisPrefix, c), 'fresh_decision'))!) as { rolledBack: boolean; accuracy: number };
    expect(decision.rolledBack).toBe(false);
    expect(decision.accuracy).toBeGreaterThan(0.8);
    expect(decision.accuracy).toBeLessThan(0.9);
    expect(rollbacks(c)).toEqual([]);
  });
});

/**
 * The monitor's handler on the test's Redis, driven call by call as the runner would call it for
 * one partition at a time (so the order of the topics is the test's); what it emits is collected.
 */
async function directMonitor(): Promise<{ handle(events: AnyEvent[]): Promise<void>; emitted: AnyEvent[] }> {
  const processor = new MonitorProcessor(redis, monitorOptions(config));
  const emitted: AnyEvent[] = [];
  const logger = createLogger('test', 'silent');
  await processor.init({ logger, emit: async (events) => { emitted.push(...events); }, schedule: () => undefined, endOffsets: async () => new Map() });
  const ctx = { heartbeat: async () => undefined, isRunning: () => true, isAssigned: () => true, logger };
  return {
    emitted,
    handle: (events) => processor.handle(events.map((event, i): EventRecord => ({
      event, topic: event.name === 'PredictionMade' ? 'predictions' : event.name === 'PredictionFeedback' ? 'feedback' : 'models',
      partition: 0, offset: String(i), key: (event.value as { clientId: string }).clientId, timestamp: Date.now(),
    })), ctx),
  };
}

describe('automatic rollback, whatever the order of the topics', () => {
  const truth = (i: number) => labels[i % 3]!;
  const v1Judged = (c: string) => judged(c, 'v1', now - 2 * DAY, 60, (i) => (i % 10 === 9 ? labels[(i + 1) % 3]! : truth(i)), truth);
  // 60 % right against v1's 90 %: a rollback.
  const v2Judged = (c: string, from: number, n: number) => judged(c, 'v2', now - DAY + from, n, (i) => (i % 5 >= 3 ? labels[(i + 1) % 3]! : truth(i)), truth);

  it("decides on a fresh version whose feedback was handled before its ModelPublished (another topic's call)", async () => {
    const c = 'feedback-first-co';
    const m = await directMonitor();
    await m.handle([published(c, 'v1', null, now - 3 * DAY)]);
    await m.handle(v1Judged(c));
    await m.handle(v2Judged(c, 1000, 60));
    expect(await redis.hget(monitorKeys.summary(config.redisPrefix, c), 'fresh_decision')).toBeNull();
    await m.handle([published(c, 'v2', 'v1', now - DAY)]);
    const decision = JSON.parse((await redis.hget(monitorKeys.summary(config.redisPrefix, c), 'fresh_decision')) ?? 'null') as { rolledBack: boolean } | null;
    expect(decision?.rolledBack).toBe(true);
    expect(m.emitted.filter((e) => e.name === 'ModelRolledBack')).toHaveLength(1);
  });

  it('takes the decision once when several calls evaluate the client at the same time', async () => {
    const clients = ['two-calls-a', 'two-calls-b', 'two-calls-c'];
    const m = await directMonitor();
    for (const c of clients) {
      await m.handle([published(c, 'v1', null, now - 3 * DAY)]);
      await m.handle(v1Judged(c));
      await m.handle(v2Judged(c, 1000, 60));
    }
    // Per client, the publish (models topic) and more feedback (two more calls) handled at once.
    await Promise.all(clients.flatMap((c) => [m.handle([published(c, 'v2', 'v1', now - DAY)]), m.handle(v2Judged(c, 5000, 10)), m.handle(v2Judged(c, 6000, 10))]));
    for (const c of clients) {
      const of = (e: AnyEvent) => (e.value as { clientId: string }).clientId === c;
      expect(m.emitted.filter((e) => of(e) && e.name === 'ModelRolledBack'), c).toHaveLength(1);
      expect(m.emitted.filter((e) => of(e) && e.name === 'QualityAlert' && e.value.kind === 'MODEL_REGRESSION'), c).toHaveLength(1);
    }
  });
});
