import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { predictionKey } from '../common/keyspace.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { exampleEventIdFor } from '../processors/feedback/processor.ts';
import { metricsRegistry } from '../common/metrics.ts';
import { feedback, prediction, tableRows } from './processors-support.ts';
import { cleanupProcessorsTest, testStreamsRetrying } from './processors-support.ts';

const config = testConfig({ EDDY_FEEDBACK_MAX_WAITS: '5' });
let streams: Awaited<ReturnType<typeof testStreams>>;
let procs: RunningProcessors;
const db = config.clickhouseDatabase;
const c = 'globex';

beforeAll(async () => {
  streams = await testStreamsRetrying(config);
  procs = await startProcessors(config, { only: ['features', 'analytics', 'feedback'], waitForAssignment: true });
});

afterAll(async () => {
  await procs?.stop();
  await cleanupProcessorsTest(config, streams);
});

async function waitingRetries(): Promise<number> {
  const m = await metricsRegistry.getSingleMetric('eddy_consumer_retries_total')?.get();
  return (m?.values ?? []).filter((v) => v.labels.code === 'PREDICTION_NOT_YET_KNOWN').reduce((a, v) => a + v.value, 0);
}

describe('feedback processor', () => {
  it('turns ACCEPTED and REASSIGNED feedback into LabeledExamples with the prediction text, waits for late predictions, dead-letters unknown ones', async () => {
    const early = feedback(c, 'r5', 'REASSIGNED', 'Printing');
    // Feedback overtakes its prediction: it must wait (retriable), not be lost.
    const retriesBefore = await waitingRetries();
    await streams.producer.send('PredictionFeedback', early);
    await waitFor('the feedback waits for its prediction', async () => (await waitingRetries()) > retriesBefore);
    await streams.producer.sendAll([
      { name: 'PredictionMade', value: prediction(c, 'r5', 'Network', { text: 'printer jam', metadata: { requester: 'eve' } }) },
      { name: 'PredictionMade', value: prediction(c, 'r1', 'Network', { text: 'vpn down', metadata: { requester: 'ann', channel: 'chat' } }) },
      { name: 'PredictionMade', value: prediction(c, 'r2', 'Network', { text: 'screen broken' }) },
      { name: 'PredictionMade', value: prediction(c, 'r3', 'Network', { text: 'hello' }) },
      // a shadow prediction for r1 must not replace what the user saw
      { name: 'PredictionMade', value: prediction(c, 'r1', 'Hardware', { text: 'vpn down', variant: 'SHADOW' }) },
    ]);
    const accepted = feedback(c, 'r1', 'ACCEPTED');
    const reassigned = feedback(c, 'r2', 'REASSIGNED', 'Hardware');
    const rejected = feedback(c, 'r3', 'REJECTED');
    const unknown = feedback(c, 'r-missing', 'ACCEPTED');
    // wait until the predictions are projected, so only r-missing waits
    await waitFor('predictions stored', async () => (await procs.redis.exists(predictionKey(config.redisPrefix, c, 'r3'))) === 1);
    await streams.producer.sendAll([accepted, reassigned, rejected, unknown].map((value) => ({ name: 'PredictionFeedback' as const, value })));

    await waitFor('3 derived examples in ClickHouse', async () => (await tableRows(procs.clickhouse, db, 'examples')).length === 3, 30_000);
    const rows = await tableRows(procs.clickhouse, db, 'examples');
    const byId = Object.fromEntries(rows.map((r) => [r.event_id, r]));
    expect(byId[exampleEventIdFor(accepted.eventId)]).toMatchObject({ example_id: 'r1', prediction_id: 'r1', label: 'Network', source: 'ASSIGNMENT', text: 'vpn down', metadata: JSON.stringify({ requester: 'ann', channel: 'chat' }) });
    expect(byId[exampleEventIdFor(reassigned.eventId)]).toMatchObject({ example_id: 'r2', label: 'Hardware', source: 'REASSIGNMENT', text: 'screen broken' });
    expect(byId[exampleEventIdFor(early.eventId)]).toMatchObject({ example_id: 'r5', label: 'Printing', source: 'REASSIGNMENT', text: 'printer jam' });

    // The feedback whose prediction never comes is dead-lettered with the reason, after its retries.
    await waitFor('the unknown feedback is dead-lettered', async () => (await tableRows(procs.clickhouse, db, 'dead_letters')).length === 1, 40_000, 200);
    const [dead] = await tableRows(procs.clickhouse, db, 'dead_letters');
    expect(dead).toMatchObject({ error_code: 'HANDLER_FAILED', client_id: c });
    expect(dead!.reason).toMatch(/r-missing.*unknown or expired after 5 retries/);
    expect((await tableRows(procs.clickhouse, db, 'examples')).length).toBe(3);
  });

  it('derives the example id from the feedback id, so a replay produces the same event', () => {
    expect(exampleEventIdFor('abc')).toBe(exampleEventIdFor('abc'));
    expect(exampleEventIdFor('abc')).not.toBe(exampleEventIdFor('abd'));
    expect(exampleEventIdFor('abc')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  });
});
