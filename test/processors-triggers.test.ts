import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { decideRetrain, emptyTriggerState, type ClientTriggerState } from '../processors/triggers/policy.ts';
import { readClientCounts, TRIGGER_TOPICS, TriggerProcessor } from '../processors/triggers/processor.ts';
import { createLogger } from '../common/log.ts';
import type { EventRecord } from '../streams/index.ts';
import type { ModelPublished, RetrainRequested } from '../schemas/events.ts';
import { caughtUp, example, labelAdded } from './processors-support.ts';
import { cleanupProcessorsTest, testStreamsRetrying } from './processors-support.ts';

const trigger = { minExamples: 4, minLabels: 2, newExamples: 3, growth: 100, cooldownMs: 0, outstandingTimeoutMs: 3_600_000, staleMs: 30 * 86_400_000 };

describe('retrain policy (pure)', () => {
  const base = (over: Partial<ClientTriggerState>): ClientTriggerState => ({ ...emptyTriggerState(), ...over });
  const t = { ...trigger, cooldownMs: 60_000, growth: 0.2, newExamples: 1000 };

  it('needs enough examples over at least two labels for a new client', () => {
    expect(decideRetrain(base({ examples: 10, labelCounts: { A: 10 } }), 0, t).kind).toBe('none');
    expect(decideRetrain(base({ examples: 3, labelCounts: { A: 2, B: 1 } }), 0, t).kind).toBe('none');
    expect(decideRetrain(base({ examples: 4, labelCounts: { A: 2, B: 2 } }), 0, t)).toMatchObject({ kind: 'request', reason: 'NEW_CLIENT' });
  });

  it('requests on growth, holds during cooldown and while a request is outstanding, and after a timeout lets go', () => {
    const s = base({ examples: 130, baselineExamples: 100, labelCounts: { A: 70, B: 60 }, lastModelVersion: 'v1', lastModelAt: 0, lastRequestAt: 0 });
    expect(decideRetrain(s, 10_000, t)).toMatchObject({ kind: 'hold', reason: 'NEW_DATA', blockedBy: 'COOLDOWN' });
    expect(decideRetrain(s, 60_000, t)).toMatchObject({ kind: 'request', reason: 'NEW_DATA' });
    expect(decideRetrain({ ...s, examples: 110 }, 60_000, t).kind).toBe('none'); // +10% < 20%
    const outstanding = { ...s, outstanding: { eventId: 'e', at: 60_000 } };
    expect(decideRetrain(outstanding, 120_000, t)).toMatchObject({ kind: 'hold', blockedBy: 'OUTSTANDING' });
    expect(decideRetrain(outstanding, 60_000 + t.outstandingTimeoutMs, t)).toMatchObject({ kind: 'request' });
  });

  it('asks again for the reason of a retrain that missed data, after the cooldown, before the other rules', () => {
    const s = base({ examples: 100, baselineExamples: 100, labelCounts: { A: 50, B: 50 }, lastModelVersion: 'v1', lastModelAt: 0, lastRequestAt: 0, incomplete: 'LABELS_CHANGED' });
    expect(decideRetrain(s, 10_000, t)).toMatchObject({ kind: 'hold', reason: 'LABELS_CHANGED', blockedBy: 'COOLDOWN' });
    expect(decideRetrain(s, 60_000, t)).toMatchObject({ kind: 'request', reason: 'LABELS_CHANGED', detail: expect.stringMatching(/asking again/) });
    expect(decideRetrain({ ...s, qualityAlert: 'f1 fell' }, 60_000, t)).toMatchObject({ reason: 'QUALITY_DROP' });
  });

  it('retrains a stale model only when new data exists', () => {
    const s = base({ examples: 100, baselineExamples: 100, labelCounts: { A: 50, B: 50 }, lastModelVersion: 'v1', lastModelAt: 0, lastRequestAt: 0 });
    expect(decideRetrain(s, t.staleMs + 1, t).kind).toBe('none');
    expect(decideRetrain({ ...s, examples: 101 }, t.staleMs + 1, t)).toMatchObject({ kind: 'request', reason: 'STALE' });
    expect(decideRetrain({ ...s, examples: 101 }, t.staleMs - 1, t).kind).toBe('none');
  });
});

const config = testConfig({
  EDDY_TRIGGER_MIN_EXAMPLES: '4', EDDY_TRIGGER_MIN_LABELS: '2', EDDY_TRIGGER_NEW_EXAMPLES: '3', EDDY_TRIGGER_GROWTH: '100',
  EDDY_TRIGGER_COOLDOWN_MS: '0',
});
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
const requests: RetrainRequested[] = [];
const c = 'initech';

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
  const reader = streams.consumer({
    group: 'test-reader', topics: ['retrain-requests'],
    handler: { async handle(records: EventRecord[]) { for (const r of records) if (r.event.name === 'RetrainRequested') requests.push(r.event.value); } },
  });
  const assigned = reader.waitForAssignment();
  await reader.start();
  await assigned;
  procs = await startProcessors(config, { only: ['triggers'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  await cleanupProcessorsTest(config, streams, { keepDatabase: true });
});

function published(version: string, retrainEventId: string | null): ModelPublished {
  return {
    eventId: randomUUID(), clientId: c, occurredAt: Date.now(), modelVersion: version, previousVersion: null, artifactUri: `file:///${version}`, artifactSha256: '0'.repeat(64),
    featurizer: 'f', labels: ['A', 'B'], metrics: {}, trainingExamples: 4, trainingDataSha256: '0'.repeat(64), backend: 'wasm', trainingMs: 1, retrainEventId, dataComplete: true, modelConfig: '', cvMacroF1: null, searched: false,
  };
}

/**
 * Everything sent so far was handled AND everything the processor emitted was read: the processor
 * produces before it commits, so once it caught up the topic's end holds its requests, and once
 * the reader caught up with that end `requests` holds them. ("None emitted" and "exactly one"
 * checks would otherwise pass while a request is still on its way.)
 */
async function settled(): Promise<void> {
  await waitFor('the trigger processor caught up', () => caughtUp(streams, 'processors.triggers', TRIGGER_TOPICS), 30_000, 100);
  await waitFor('the reader caught up with retrain-requests', () => caughtUp(streams, 'test-reader', ['retrain-requests']), 30_000, 100);
}

describe('trigger processor', () => {
  it('requests NEW_CLIENT, then NEW_DATA, LABELS_CHANGED and QUALITY_DROP, one outstanding request at a time', async () => {
    for (let i = 0; i < 3; i++) await streams.producer.send('LabeledExample', example(c, 'A'));
    await settled();
    expect(requests).toHaveLength(0); // 3 examples, one label
    const fourth = example(c, 'B');
    await streams.producer.send('LabeledExample', fourth);
    await waitFor('NEW_CLIENT', () => requests.length === 1);
    expect(requests[0]).toMatchObject({ clientId: c, reason: 'NEW_CLIENT', requestedBy: 'trigger' });
    // The watermark names the newest example it decided on, so the trainer waits for exactly that data.
    expect(requests[0]!.dataAsOf).toEqual({ examplesEventId: fourth.eventId, labelChangesEventId: null });

    // While it is outstanding, more data is held back (logged), not requested.
    for (let i = 0; i < 4; i++) await streams.producer.send('LabeledExample', example(c, 'B'));
    await settled();
    expect(requests).toHaveLength(1);

    // The model for that request arrives: the 4 examples held back while it trained are judged
    // at once (no need to wait for the client's next event): NEW_DATA.
    await streams.producer.send('ModelPublished', published('v1', requests[0]!.eventId));
    await waitFor('NEW_DATA', () => requests.length === 2);
    expect(requests[1]).toMatchObject({ reason: 'NEW_DATA' });
    expect(requests[1]!.detail).toMatch(/4 new examples/);
    await streams.producer.send('LabeledExample', example(c, 'A'));
    await settled();
    expect(requests).toHaveLength(2); // the NEW_DATA request is outstanding
    // v1 was trained on the 4 examples there were at the first request: 5 arrived since.
    expect(await readClientCounts(procs.redis, config.redisPrefix, c)).toMatchObject({ sinceLastModel: 5, lastModelVersion: 'v1' });

    // Rejected: no longer outstanding. A label change triggers LABELS_CHANGED.
    await streams.producer.send('ModelRejected', {
      eventId: randomUUID(), clientId: c, occurredAt: Date.now(), candidateVersion: 'v2', liveVersion: 'v1', stage: 'GATE', reasons: ['WORSE_THAN_LIVE'],
      detail: '', candidateMetrics: {}, liveMetrics: {}, retrainEventId: requests[1]!.eventId, dataComplete: true,
    });
    await settled();
    const added = labelAdded(c, 'C');
    await streams.producer.send('LabelSetChanged', added);
    await waitFor('LABELS_CHANGED', () => requests.length === 3);
    expect(requests[2]).toMatchObject({ reason: 'LABELS_CHANGED' });
    expect(requests[2]!.dataAsOf).toMatchObject({ labelChangesEventId: added.eventId });

    await streams.producer.send('ModelPublished', published('v2', requests[2]!.eventId));
    await settled();
    await streams.producer.send('QualityAlert', {
      eventId: randomUUID(), clientId: c, occurredAt: Date.now(), kind: 'QUALITY_DROP', metric: 'f1', label: null, modelVersion: 'v2',
      currentValue: 0.5, previousValue: 0.8, dropPercent: 37.5, support: 200, window: '7d', segment: null,
    });
    await waitFor('QUALITY_DROP', () => requests.length === 4);
    expect(requests[3]).toMatchObject({ reason: 'QUALITY_DROP' });
    expect(requests[3]!.detail).toMatch(/f1 fell 37.5%/);
    expect(new Set(requests.map((r) => r.eventId)).size).toBe(4);
  });

  it('does not re-emit after a restart (state and offsets survive in Redis)', async () => {
    const before = requests.length;
    await procs.stop();
    procs = await startProcessors(config, { only: ['triggers'], waitForAssignment: true });
    await streams.producer.send('LabeledExample', example(c, 'A')); // 1 new since the last request: below every threshold
    await settled();
    expect(requests.length).toBe(before);
  });
});

describe('trigger sweep: held-back retrains are not forgotten when the client goes quiet', () => {
  const prefix = `sweep-${randomUUID()}`;
  const cooldown = 10_000;
  let s: Awaited<ReturnType<typeof testStreams>>;
  let redis: RunningProcessors['redis'];
  beforeAll(async () => {
    s = await testStreamsRetrying(testConfig());
    const { Redis } = await import('ioredis');
    redis = new Redis(s.config.redisUrl);
  });
  afterAll(async () => {
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
    await s.cleanup();
  });

  /** A trigger processor fed records by hand (event time from t0 on), for one client on one partition. */
  function harness(clientId: string, partition: number) {
    const triggers = new TriggerProcessor(redis, { keyPrefix: prefix, trigger: { ...trigger, cooldownMs: cooldown } });
    // Emits through the real producer; the sweep is not scheduled: the test calls it with its own clock.
    void triggers.init({ logger: createLogger('test', 'silent'), emit: (events) => s.producer.sendAll(events), schedule: () => undefined });
    const t0 = Date.now() - 60_000;
    let offset = 0;
    const ctx = { heartbeat: async () => undefined, isRunning: () => true, logger: createLogger('test', 'silent') };
    const feed = (topic: string, events: Array<{ name: string; value: object }>) => triggers.handle(events.map((e) =>
      ({ event: e, topic, partition, offset: String(offset++), key: clientId, timestamp: t0 }) as EventRecord), ctx);
    const examples = (fromMs: number, labels: string[]) =>
      feed('examples', labels.map((l, i) => ({ name: 'LabeledExample', value: { ...example(clientId, l), occurredAt: t0 + fromMs + i } })));
    const model = (atMs: number, version: string, retrainEventId: string, dataComplete = true) =>
      feed('models', [{ name: 'ModelPublished', value: { ...published(version, retrainEventId), clientId, occurredAt: t0 + atMs, dataComplete } }]);
    return { triggers, t0, examples, model };
  }

  it('requests the retrain a cooldown held back once the cooldown ends, only on the member that owns the client', async () => {
    const { triggers, t0, examples, model } = harness('quiet', 1);
    // Four examples over two labels: NEW_CLIENT. Three more while it trains: held (outstanding).
    await examples(0, ['A', 'B', 'A', 'B']);
    expect(triggers.emitted).toHaveLength(1);
    await examples(10, ['A', 'B', 'A']);
    // The model lands within the cooldown: NEW_DATA is wanted but held until t0 + cooldown.
    await model(500, 'v1', triggers.emitted[0]!.eventId);
    expect(triggers.emitted).toHaveLength(1);
    const everything = () => true;
    expect(await triggers.sweep(everything, t0 + cooldown - 1)).toEqual([]); // not due yet
    const due = t0 + 3 + cooldown; // the NEW_CLIENT request was made at the fourth example
    expect(await triggers.sweep(() => false, due)).toEqual([]); // due, but another member owns partition 1
    const [req] = await triggers.sweep((topic, partition) => partition === 1 && ['examples', 'models'].includes(topic), due);
    expect(req).toMatchObject({ clientId: 'quiet', reason: 'NEW_DATA', occurredAt: due });
    expect(req!.detail).toMatch(/3 new examples/);
    expect(req!.dataAsOf?.examplesEventId).toBeTruthy();
    expect(await triggers.sweep(everything, t0 + 2 * cooldown)).toEqual([]); // done: no longer held
    await triggers.close();
  });

  it('asks again, for the same reason, when the answer says the trainer read its data before ClickHouse had all of it', async () => {
    const { triggers, t0, examples, model } = harness('partial', 0);
    await examples(0, ['A', 'B', 'A', 'B']);
    expect(triggers.emitted).toMatchObject([{ clientId: 'partial', reason: 'NEW_CLIENT' }]);
    const first = triggers.emitted[0]!;
    // No new example arrives; the model comes back trained on less than the request named.
    await model(500, 'v1', first.eventId, false);
    expect(triggers.emitted).toHaveLength(1); // within the cooldown: held, not forgotten
    const [again] = await triggers.sweep(() => true, t0 + 3 + cooldown);
    expect(again).toMatchObject({ clientId: 'partial', reason: 'NEW_CLIENT', dataAsOf: first.dataAsOf });
    expect(again!.detail).toMatch(/asking again/);
    // Its complete answer ends it.
    await model(cooldown + 600, 'v2', again!.eventId);
    expect(await triggers.sweep(() => true, t0 + 3 * cooldown)).toEqual([]);
    expect(triggers.emitted).toHaveLength(2);
    await triggers.close();
  });
});
