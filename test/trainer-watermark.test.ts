import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../common/log.ts';
import { identifier, quoteString, type ClickHouseClient } from '../common/clickhouse.ts';
import type { LabeledExample, LabelSetChanged, ModelPublished } from '../schemas/events.ts';
import type { AnyEvent } from '../streams/index.ts';
import { startTrainer } from '../trainer/consumer.ts';
import { latestWatermark, loadTrainingSet, waitForWatermark } from '../trainer/dataset.ts';
import { trainerSettings } from '../trainer/pipeline.ts';
import { uniqueName, waitFor } from './helpers.ts';
import { generateClient } from './quality/workload.ts';
import { TrainerTestStack } from './trainer-support.ts';

/**
 * The retrain watermark on the real stack: the trigger decides on events it has seen, but the
 * trainer reads ClickHouse, which the feature/analytics processors fill later. A request names
 * the newest events it was based on (dataAsOf), and the trainer waits (bounded) for them.
 */
const stack = await TrainerTestStack.create('trainer-watermark');
const { config, modelEvents } = stack;
const clientId = uniqueName('client');
const workload = generateClient({ clientId, examples: 120, labels: 3, noise: 0, seed: 11 });
const db = () => identifier(config.clickhouseDatabase);
const rowsIn = (table: 'examples' | 'label_changes') => stack.rowsIn(table, clientId);

function labelAdded(label: string, description: string, keywords: string[]): LabelSetChanged {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), change: 'ADDED', label, previousLabel: null, description, keywords };
}

function example(exampleId: string, text: string, label: string): LabeledExample {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId, text, label, source: 'ASSIGNMENT', metadata: {}, predictionId: null };
}

let streams: typeof stack.streams;
let clickhouse: ClickHouseClient;
beforeAll(async () => {
  await stack.start(workload, () => ({}));
  ({ streams, clickhouse } = stack);
}, 180_000);

afterAll(() => stack.cleanup(), 60_000);

describe('retrain watermark (dataAsOf)', () => {
  it('takes, per table, the newest event id any coalesced request names', () => {
    expect(latestWatermark([{ dataAsOf: null }])).toBeNull();
    expect(latestWatermark([
      { dataAsOf: { examplesEventId: 'e1', labelChangesEventId: 'l1' } },
      { dataAsOf: null },
      { dataAsOf: { examplesEventId: 'e2', labelChangesEventId: null } },
    ])).toEqual({ examplesEventId: 'e2', labelChangesEventId: 'l1' });
  });

  it('trains on the data a request names even when it reaches ClickHouse after the request', async () => {
    // The feature/analytics processors lag (here: stopped): the new team reaches Kafka, not ClickHouse.
    await stack.procs!.stop();
    stack.procs = undefined;
    const team = 'team-coffee-machines';
    const added = labelAdded(team, 'coffee machine, espresso, kitchen appliances', ['coffee', 'espresso', 'machine']);
    const texts = ['coffee machine leaking water', 'espresso machine shows descale error', 'coffee machine out of beans again', 'espresso grinder jammed in kitchen',
      'coffee machine on floor two broken', 'milk frother of the espresso machine dead', 'coffee machine makes cold coffee', 'kitchen espresso machine error light',
      'coffee machine drip tray overflowing', 'espresso machine needs new filter', 'coffee machine display blank', 'coffee beans container stuck'];
    const late = texts.map((t, i) => example(`coffee-${i}`, t, team));
    await streams.producer.sendAll([{ name: 'LabelSetChanged', value: added }, ...late.map((value): AnyEvent => ({ name: 'LabeledExample', value }))]);
    const lastExample = late.at(-1)!.eventId;

    // Observe the trainer's ClickHouse queries (a real client; only the query text is recorded).
    const queries: string[] = [];
    const observed = new Proxy(clickhouse, {
      get(target, prop) {
        if (prop === 'query') return (params: Parameters<ClickHouseClient['query']>[0]) => (queries.push(params.query), target.query(params));
        const v = Reflect.get(target, prop, target) as unknown;
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
    const trainer = await startTrainer(streams, config, { settings: trainerSettings(config.trainer, { epochs: 6 }), clickhouse: observed });
    try {
      const eventId = randomUUID();
      await streams.producer.send('RetrainRequested', {
        eventId, clientId, occurredAt: Date.now(), reason: 'LABELS_CHANGED', detail: 'test', requestedBy: 'test',
        dataAsOf: { examplesEventId: lastExample, labelChangesEventId: added.eventId },
      });
      // Polling a third time proves it is still waiting: a trainer that trained on the stale set after
      // its first look would not ask again (and its answer would be on the models topic by then).
      await waitFor('the trainer polling ClickHouse for the watermark three times', () => queries.filter((q) => q.includes(lastExample)).length >= 3, 30_000);
      // It is waiting, not training on the stale set: the new team is not in ClickHouse and no answer exists.
      expect(await rowsIn('examples')).toBe(workload.examples.length);
      expect(modelEvents.find((e) => e.name !== 'ModelPromoted' && (e.value as { retrainEventId?: string | null }).retrainEventId === eventId)).toBeUndefined();

      stack.procs = await stack.startProcessors(); // the lagging processors catch up
      const answer = await waitFor(`the trainer's answer to ${eventId}`, () =>
        modelEvents.find((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && e.value.retrainEventId === eventId), 120_000);
      expect(answer.name).toBe('ModelPublished');
      const published = answer.value as ModelPublished;
      expect(published.dataComplete).toBe(true);
      expect(published.labels).toEqual([...workload.labels.map((l) => l.name), team].sort());
    } finally {
      await trainer.stop();
    }
  }, 240_000);

  it('waits a bounded time for a watermark that never arrives, then reads the set as it is (with a warning)', async () => {
    const logger = createLogger('test-watermark', 'silent');
    const warn = vi.spyOn(logger, 'warn');
    const missing = randomUUID();
    const set = await loadTrainingSet(clickhouse, config.clickhouseDatabase, clientId, {
      watermark: { examplesEventId: missing, labelChangesEventId: null }, waitMs: 1_000, firstDelayMs: 50, logger,
    });
    expect(set.labels).toEqual(expect.arrayContaining(workload.labels.map((l) => l.name)));
    expect(set.examples.length).toBeGreaterThanOrEqual(workload.examples.length);
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]![0]).toMatchObject({ clientId, missing: [{ table: 'examples', eventId: missing }] });
    // The set says so, and the trainer's answer carries it (dataComplete: false), so the trigger asks again.
    expect(set.dataComplete).toBe(false);
    const present = await loadTrainingSet(clickhouse, config.clickhouseDatabase, clientId, { watermark: null, waitMs: 1_000 });
    expect(present.dataComplete).toBeUndefined();
  });

  it('passes at once when the watermark is already in ClickHouse, and ends a wait when the consumer stops', async () => {
    const rs = await clickhouse.query({ query: `SELECT event_id FROM ${db()}.examples WHERE client_id = ${quoteString(clientId)} LIMIT 1`, format: 'JSONEachRow' });
    const present = (await rs.json<{ event_id: string }>())[0]!.event_id;
    expect(await waitForWatermark(clickhouse, config.clickhouseDatabase, clientId, { watermark: { examplesEventId: present, labelChangesEventId: null }, waitMs: 60_000 })).toBe(true);
    await expect(waitForWatermark(clickhouse, config.clickhouseDatabase, clientId, {
      watermark: { examplesEventId: randomUUID(), labelChangesEventId: null }, waitMs: 60_000, firstDelayMs: 10, isRunning: () => false,
    })).rejects.toMatchObject({ retriable: true });
  });
});
