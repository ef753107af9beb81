import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { countArrival, decideRetrain, emptyTriggerState, type ClientTriggerState } from '../processors/triggers/policy.ts';
import { readClientCounts, TRIGGER_TOPICS, TriggerProcessor } from '../processors/triggers/processor.ts';
import { createLogger } from '../common/log.ts';
import { logEnd, type AnyEvent, type EventRecord, type TopicName } from '../streams/index.ts';
import type { ModelPublished, QualityAlert, RetrainRequested } from '../schemas/events.ts';
import { caughtUp, example, labelAdded } from './processors-support.ts';
import { cleanupProcessorsTest, testStreamsRetrying } from './processors-support.ts';

// Catch-up and the quiet wait off here: the rules before them are tested on their own (see below for theirs).
const trigger = {
  minExamples: 4, minLabels: 2, newExamples: 3, growth: 100, cooldownMs: 0, outstandingTimeoutMs: 3_600_000, staleMs: 30 * 86_400_000,
  catchUpGrowth: 0, quietMs: 0, quietMaxWaitMs: 0, quietBurst: 10, minExamplesPerLabel: 2,
};

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

  describe('catch-up, quiet moment and thin labels', () => {
    const c = { ...t, cooldownMs: 600_000, newExamples: 500, catchUpGrowth: 2, quietMs: 1_500, quietMaxWaitMs: 30_000 };
    // v1 answered the request made at 50 examples; the cooldown after it runs until 600_000.
    const live = base({ examples: 50, baselineExamples: 50, examplesAtLastModel: 50, labelCounts: { A: 25, B: 25 }, lastModelVersion: 'v1', lastModelAt: 1_000, lastRequestAt: 0 });

    it('a client whose data doubled since its model is retrained within the cooldown, once the data stops arriving', () => {
      const grown = { ...live, examples: 100, labelCounts: { A: 50, B: 50 }, lastExampleSeenAt: 10_000 };
      expect(decideRetrain({ ...grown, examples: 99 }, 10_000, c, 20_000)).toMatchObject({ kind: 'hold', reason: 'NEW_DATA', blockedBy: 'COOLDOWN' }); // 1.98x
      expect(decideRetrain(grown, 10_000, c, 10_500)).toMatchObject({ kind: 'hold', reason: 'NEW_DATA', blockedBy: 'QUIET' });
      expect(decideRetrain(grown, 10_000, c, 11_500)).toMatchObject({ kind: 'request', reason: 'NEW_DATA', detail: expect.stringMatching(/catch-up: 100 examples, 2.0x the 50/) });
      // Never while a request is outstanding.
      expect(decideRetrain({ ...grown, outstanding: { eventId: 'e', at: 9_000 } }, 10_000, c, 60_000)).toMatchObject({ kind: 'hold', blockedBy: 'OUTSTANDING' });
      // A stream that never pauses is asked for after quietMaxWaitMs of waiting.
      expect(decideRetrain({ ...grown, lastExampleSeenAt: 40_000, waitingSince: 10_500 }, 40_000, c, 40_100)).toMatchObject({ kind: 'hold', blockedBy: 'QUIET' });
      expect(decideRetrain({ ...grown, lastExampleSeenAt: 40_500, waitingSince: 10_500 }, 40_500, c, 40_500)).toMatchObject({ kind: 'request' });
      // Relative to what the last request saw too: a refused catch-up at 100 needs 200 for the next.
      const refused = { ...grown, baselineExamples: 100, lastRequestAt: 12_000, examples: 150, lastExampleSeenAt: 0 };
      expect(decideRetrain(refused, 20_000, c, 20_000)).toMatchObject({ kind: 'hold', blockedBy: 'COOLDOWN' });
      expect(decideRetrain({ ...refused, examples: 200 }, 20_000, c, 20_000)).toMatchObject({ kind: 'request', reason: 'NEW_DATA' });
      // Off: the cooldown holds it.
      expect(decideRetrain(grown, 10_000, { ...c, catchUpGrowth: 0 }, 20_000)).toMatchObject({ kind: 'hold', blockedBy: 'COOLDOWN' });
      // A label change folded after the first request does not hold the catch-up back for a cooldown.
      expect(decideRetrain({ ...grown, labelsChanged: true }, 10_000, c, 20_000)).toMatchObject({ kind: 'request', reason: 'NEW_DATA', detail: expect.stringMatching(/catch-up/) });
      expect(decideRetrain({ ...grown, labelsChanged: true, examples: 99 }, 10_000, c, 20_000)).toMatchObject({ kind: 'hold', reason: 'LABELS_CHANGED', blockedBy: 'COOLDOWN' });
    });

    it('a first model waits for a quiet moment (processing time), bounded by the max wait', () => {
      const importing = base({ examples: 5_000, labelCounts: { A: 2_500, B: 2_500 }, lastExampleSeenAt: 100_000 });
      // Event time is old (a backlog being read): only processing time says whether it is still arriving.
      expect(decideRetrain(importing, 1_000, c, 100_200)).toMatchObject({ kind: 'hold', reason: 'NEW_CLIENT', blockedBy: 'QUIET' });
      expect(decideRetrain(importing, 1_000, c, 101_500)).toMatchObject({ kind: 'request', reason: 'NEW_CLIENT' });
      expect(decideRetrain({ ...importing, waitingSince: 70_000 }, 1_000, c, 100_000)).toMatchObject({ kind: 'request' });
      expect(decideRetrain(importing, 1_000, { ...c, quietMs: 0 }, 100_000)).toMatchObject({ kind: 'request' });
    });

    it('only a burst is waited out: a client whose history came in one go and whose live traffic goes on gets its first model once the burst has passed', () => {
      // What the processor folds: 200 examples of history within 200 ms, then one a second (live traffic).
      const s = base({});
      let at = 100_000;
      for (let i = 0; i < 200; i++) {
        s.examples++;
        s.labelCounts[i % 2 ? 'A' : 'B'] = (s.labelCounts[i % 2 ? 'A' : 'B'] ?? 0) + 1;
        countArrival(s, (at += 1), c.quietMs);
        s.lastExampleSeenAt = at;
      }
      expect(decideRetrain(s, 1_000, c, at + 100)).toMatchObject({ kind: 'hold', reason: 'NEW_CLIENT', blockedBy: 'QUIET' });
      const decisions: string[] = [];
      for (let second = 1; second <= 8; second++) {
        s.examples++;
        countArrival(s, (at += 1_000), c.quietMs);
        s.lastExampleSeenAt = at;
        const d = decideRetrain(s, 1_000, c, at + 100);
        decisions.push(d.kind === 'hold' ? d.blockedBy : d.kind);
      }
      // Held while the burst's weight decays (~1.5 s x ln(200 / 10)), then asked for, though an example came 100 ms ago.
      expect(decisions.slice(0, 3)).toEqual(['QUIET', 'QUIET', 'QUIET']);
      expect(decisions.slice(5)).toEqual(['request', 'request', 'request']);
      // A state saved before arrivals were kept waits for silence as before; so does quietBurst 0.
      expect(decideRetrain({ ...s, arrivals: undefined }, 1_000, c, at + 100)).toMatchObject({ kind: 'hold', blockedBy: 'QUIET' });
      expect(decideRetrain(s, 1_000, { ...c, quietBurst: 0 }, at + 100)).toMatchObject({ kind: 'hold', blockedBy: 'QUIET' });
      // A steady import (20 a second) stays a burst until it stops or the max wait passes.
      const importing = { ...s, arrivals: 30 };
      expect(decideRetrain(importing, 1_000, c, at + 100)).toMatchObject({ kind: 'hold', blockedBy: 'QUIET' });
    });

    it('a retrain refused for a label with too few examples is asked again as soon as that label has enough, cooldown or not', () => {
      // The request was made on A 30, B 20 and no example of the new team C; it came back LABEL_TOO_FEW_EXAMPLES.
      const refused = { ...live, lastRequestAt: 5_000, baselineExamples: 50, thin: { reason: 'LABELS_CHANGED' as const, counts: { A: 30, B: 20 } } };
      expect(decideRetrain({ ...refused, examples: 51, labelCounts: { A: 30, B: 20, C: 1 } }, 6_000, c).kind).toBe('none');
      expect(decideRetrain({ ...refused, examples: 52, labelCounts: { A: 30, B: 20, C: 2 } }, 6_000, c))
        .toMatchObject({ kind: 'request', reason: 'LABELS_CHANGED', detail: expect.stringMatching(/C now has 2\+/) });
      // Growth of a label that had enough is no reason to skip the cooldown.
      expect(decideRetrain({ ...refused, examples: 60, labelCounts: { A: 40, B: 20 } }, 6_000, c)).toMatchObject({ kind: 'hold', reason: 'NEW_DATA', blockedBy: 'COOLDOWN' });
    });
  });
});

const config = testConfig({
  EDDY_TRIGGER_MIN_EXAMPLES: '4', EDDY_TRIGGER_MIN_LABELS: '2', EDDY_TRIGGER_NEW_EXAMPLES: '3', EDDY_TRIGGER_GROWTH: '100',
  EDDY_TRIGGER_COOLDOWN_MS: '0', EDDY_TRIGGER_CATCH_UP_GROWTH: '0', EDDY_TRIGGER_QUIET_MS: '0',
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

  /** Where each partition of a topic ends in the real log (the processors' ProcessorContext.endOffsets). */
  const logEndOf = (topic: TopicName) => s.withAdmin((a) => logEnd(a, s.topics.physical(topic)));

  /** A trigger processor fed records by hand (event time from t0 on), for one client on one partition. */
  function harness(clientId: string, partition: number) {
    const triggers = new TriggerProcessor(redis, { keyPrefix: prefix, trigger: { ...trigger, cooldownMs: cooldown } });
    // Emits through the real producer; the sweep is not scheduled: the test calls it with its own clock.
    void triggers.init({ logger: createLogger('test', 'silent'), emit: (events) => s.producer.sendAll(events), schedule: () => undefined, endOffsets: logEndOf });
    const t0 = Date.now() - 60_000;
    let offset = 0;
    const ctx = { heartbeat: async () => undefined, isRunning: () => true, isAssigned: () => true, logger: createLogger('test', 'silent') };
    const feed = (topic: string, events: Array<{ name: string; value: object }>) => triggers.handle(events.map((e) =>
      ({ event: e, topic, partition, offset: String(offset++), key: clientId, timestamp: t0 }) as EventRecord), ctx);
    const examples = (fromMs: number, labels: string[]) =>
      feed('examples', labels.map((l, i) => ({ name: 'LabeledExample', value: { ...example(clientId, l), occurredAt: t0 + fromMs + i } })));
    const model = (atMs: number, version: string, retrainEventId: string, dataComplete = true) =>
      feed('models', [{ name: 'ModelPublished', value: { ...published(version, retrainEventId), clientId, occurredAt: t0 + atMs, dataComplete } }]);
    return { triggers, t0, examples, model, feed };
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

  it('retrains on a quality drop or a biased model, not on a segment gap or a regression (the monitor rolls that back)', async () => {
    const { triggers, t0, examples, model, feed } = harness('segmented', 2);
    await examples(0, ['A', 'B', 'A', 'B']);
    await model(500, 'v1', triggers.emitted[0]!.eventId);
    const alert = (kind: QualityAlert['kind'], atMs: number): { name: string; value: QualityAlert } => ({
      name: 'QualityAlert',
      value: {
        eventId: randomUUID(), clientId: 'segmented', occurredAt: t0 + atMs, kind, metric: 'accuracy', label: null, modelVersion: 'v1',
        currentValue: 0.5, previousValue: 0.8, dropPercent: 37.5, support: 60, window: '7d', segment: kind === 'SEGMENT_GAP' ? 'channel=email' : null,
      },
    });
    // After the cooldown, so that nothing but the kind decides.
    await feed('alerts', [alert('SEGMENT_GAP', 2 * cooldown), alert('MODEL_REGRESSION', 2 * cooldown + 1)]);
    expect(triggers.emitted).toHaveLength(1);
    expect(await triggers.sweep(() => true, t0 + 3 * cooldown)).toEqual([]);
    await feed('alerts', [alert('QUALITY_DROP', 3 * cooldown)]);
    expect(triggers.emitted.map((r) => r.reason)).toEqual(['NEW_CLIENT', 'QUALITY_DROP']);
    await triggers.close();
  });

  it('a first model waits until the processor has read what the log held when the client went quiet, bounded by the max wait', async () => {
    // The import is in Kafka; the processor has folded only its first tenth, as a consumer stalled
    // on a starved machine would have, and no example arrived for longer than the quiet gap.
    const quiet = { ...trigger, cooldownMs: cooldown, quietMs: 1_000, quietMaxWaitMs: 60_000 };
    const imports = { starved: Array.from({ length: 40 }, (_, i) => example('starved', i % 2 ? 'A' : 'B')), bounded: Array.from({ length: 40 }, (_, i) => example('bounded', i % 2 ? 'A' : 'B')) };
    await s.producer.sendAll([...imports.starved, ...imports.bounded].map((value): AnyEvent => ({ name: 'LabeledExample', value })));
    const logged: EventRecord[] = [];
    const reader = s.consumer({ group: `starved-reader-${randomUUID()}`, topics: ['examples'], handler: { async handle(records: EventRecord[]) { logged.push(...records); } } });
    await reader.start();
    await waitFor('the imports read back with their offsets', () => logged.length >= 80);
    await reader.stop();
    const recordsOf = (clientId: string) => logged.filter((r) => (r.event.value as { clientId: string }).clientId === clientId);
    const ctx = { heartbeat: async () => undefined, isRunning: () => true, isAssigned: () => true, logger: createLogger('test', 'silent') };
    const make = () => {
      const triggers = new TriggerProcessor(redis, { keyPrefix: `${prefix}:${randomUUID()}`, trigger: quiet });
      void triggers.init({ logger: createLogger('test', 'silent'), emit: (events) => s.producer.sendAll(events), schedule: () => undefined, endOffsets: logEndOf });
      return triggers;
    };

    const starved = make();
    const records = recordsOf('starved');
    await starved.handle(records.slice(0, 4), ctx);
    const later = Date.now() + 5_000; // past the quiet gap, well within the max wait
    expect(await starved.sweep(() => true, later)).toEqual([]); // 36 examples still unread: held
    await starved.handle(records.slice(4), ctx);
    const [whole] = await starved.sweep(() => true, later + 1);
    expect(whole).toMatchObject({ clientId: 'starved', reason: 'NEW_CLIENT' });
    expect(whole!.detail).toMatch(/^40 examples/);
    expect(whole!.dataAsOf?.examplesEventId).toBe(imports.starved.at(-1)!.eventId);
    await starved.close();

    // The wait is bounded: a consumer that never gets further still gets a model after quietMaxWaitMs.
    const bounded = make();
    await bounded.handle(recordsOf('bounded').slice(0, 4), ctx);
    const heldAt = Date.now() + 5_000;
    expect(await bounded.sweep(() => true, heldAt)).toEqual([]);
    const [partial] = await bounded.sweep(() => true, heldAt + quiet.quietMaxWaitMs);
    expect(partial).toMatchObject({ clientId: 'bounded', reason: 'NEW_CLIENT' });
    expect(partial!.detail).toMatch(/^4 examples/);
    await bounded.close();
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

describe('trigger processor on the real stack: a bulk import is trained on whole, within the cooldown', () => {
  // A cooldown far longer than the test: every request after the first is the catch-up's or the thin-label retry's.
  const bulk = testConfig({
    EDDY_TRIGGER_MIN_EXAMPLES: '4', EDDY_TRIGGER_MIN_LABELS: '2', EDDY_TRIGGER_NEW_EXAMPLES: '100000', EDDY_TRIGGER_GROWTH: '1000',
    EDDY_TRIGGER_COOLDOWN_MS: '600000', EDDY_TRIGGER_CATCH_UP_GROWTH: '2', EDDY_TRIGGER_QUIET_MS: '1000', EDDY_TRIGGER_QUIET_MAX_WAIT_MS: '20000',
    EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL: '2',
  });
  let st: Awaited<ReturnType<typeof testStreams>>;
  let running: RunningProcessors;
  const got: RetrainRequested[] = [];
  const settle = async () => {
    await waitFor('the trigger processor caught up', () => caughtUp(st, 'processors.triggers', TRIGGER_TOPICS), 30_000, 100);
    await waitFor('the reader caught up with retrain-requests', () => caughtUp(st, 'bulk-reader', ['retrain-requests']), 30_000, 100);
  };
  const modelFor = (clientId: string, version: string, req: RetrainRequested): ModelPublished => ({ ...published(version, req.eventId), clientId });

  beforeAll(async () => {
    st = await testStreamsRetrying(bulk);
    const reader = st.consumer({
      group: 'bulk-reader', topics: ['retrain-requests'],
      handler: { async handle(records: EventRecord[]) { for (const r of records) if (r.event.name === 'RetrainRequested') got.push(r.event.value); } },
    });
    const assigned = reader.waitForAssignment();
    await reader.start();
    await assigned;
    running = await startProcessors(bulk, { only: ['triggers'], waitForAssignment: true });
  });

  afterAll(async () => {
    await running?.stop();
    await cleanupProcessorsTest(bulk, st, { keepDatabase: true });
  });

  /** Sends `n` examples in batches of 25 with short pauses (shorter than the quiet gap); returns the last one's eventId. */
  async function burst(clientId: string, n: number): Promise<string> {
    let last = '';
    for (let i = 0; i < n; i += 25) {
      const events = Array.from({ length: Math.min(25, n - i) }, (_, j) => example(clientId, (i + j) % 2 ? 'A' : 'B'));
      last = events.at(-1)!.eventId;
      await st.producer.sendAll(events.map((value): AnyEvent => ({ name: 'LabeledExample', value })));
      await new Promise((r) => setTimeout(r, 150));
    }
    return last;
  }

  it('one first model on the whole import, one catch-up on the whole second import, nothing for a little more', async () => {
    const c1 = 'importer';
    const lastOfFirst = await burst(c1, 200);
    await waitFor('the first request', () => got.length === 1);
    await settle();
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ clientId: c1, reason: 'NEW_CLIENT' });
    expect(got[0]!.detail).toMatch(/^200 examples/);
    expect(got[0]!.dataAsOf?.examplesEventId).toBe(lastOfFirst); // trained on all 200, not on the first 4

    await st.producer.send('ModelPublished', modelFor(c1, 'v1', got[0]!));
    const lastOfSecond = await burst(c1, 300); // 500 = 2.5x what v1 saw, well within the 10-minute cooldown
    await waitFor('the catch-up request', () => got.length === 2);
    await settle();
    expect(got).toHaveLength(2);
    expect(got[1]).toMatchObject({ clientId: c1, reason: 'NEW_DATA' });
    expect(got[1]!.detail).toMatch(/catch-up: 500 examples/);
    expect(got[1]!.dataAsOf?.examplesEventId).toBe(lastOfSecond);

    await st.producer.send('ModelPublished', modelFor(c1, 'v2', got[1]!));
    await burst(c1, 50); // 550 < 2 x 500: the cooldown holds it
    await new Promise((r) => setTimeout(r, 2_500)); // past the quiet gap: a catch-up would have been asked by now
    await settle();
    expect(got).toHaveLength(2);
  });

  it('a retrain refused for too few examples of a new label is asked again when the label has them, cooldown or not', async () => {
    const c2 = 'new-team';
    await st.producer.sendAll(['A', 'A', 'B', 'B'].map((l): AnyEvent => ({ name: 'LabeledExample', value: example(c2, l) })));
    await waitFor('the first request', () => got.some((r) => r.clientId === c2));
    const first = got.find((r) => r.clientId === c2)!;
    // A new team with one example: a label change is held by the cooldown (the first request was just made).
    await st.producer.send('LabelSetChanged', labelAdded(c2, 'C'));
    await st.producer.send('LabeledExample', example(c2, 'C'));
    await settle();
    const mine = () => got.filter((r) => r.clientId === c2);
    expect(mine()).toHaveLength(1);
    // The first request's answer: refused, a label had too few examples.
    await st.producer.send('ModelRejected', {
      eventId: randomUUID(), clientId: c2, occurredAt: Date.now(), candidateVersion: null, liveVersion: null, stage: 'VALIDATION', reasons: ['LABEL_TOO_FEW_EXAMPLES'],
      detail: 'labels with fewer than 2 examples (definitions count): C (1)', candidateMetrics: {}, liveMetrics: {}, retrainEventId: first.eventId, dataComplete: true,
    });
    await settle();
    expect(mine()).toHaveLength(1);
    await st.producer.send('LabeledExample', example(c2, 'C'));
    await waitFor('the retry', () => mine().length === 2);
    await settle();
    expect(mine()).toHaveLength(2);
    expect(mine()[1]!.detail).toMatch(/C now has 2\+/);
  });
});
