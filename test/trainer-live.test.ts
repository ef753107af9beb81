import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ModelPublished, ModelRejected } from '../schemas/events.ts';
import { trainerSettings, type TrainerSettings } from '../trainer/pipeline.ts';
import { uniqueName } from './helpers.ts';
import { generateClient } from './quality/workload.ts';
import { TrainerTestStack } from './trainer-support.ts';

/**
 * The trainer compares against the version that is LIVE per the models topic, not the newest in
 * the store: after a ModelRolledBack v2 -> v1, the next training's gate, warm start and retention
 * use v1. Real stack: processors fill ClickHouse, the retrain consumer follows the models topic.
 */
const stack = await TrainerTestStack.create('trainer-live');
const { config, store } = stack;
// keepVersions 1: retention keeps only the newest plus whatever the live view says to keep.
const good: TrainerSettings = { ...trainerSettings(config.trainer, { epochs: 6 }), keepVersions: 1 };
// No solver iteration and no warm start: every weight stays zero, one label for everything. 600
// examples give ~60 test examples, enough for the gate's significance test to refuse it surely.
const worse: TrainerSettings = { ...good, warmStart: false, model: { ...good.model, params: { ...good.model.params, maxIterations: 0 } } };

const clientId = uniqueName('client');
const workload = generateClient({ clientId, examples: 600, labels: 4, noise: 0, seed: 7 });
const withTrainer = <T>(settings: TrainerSettings, fn: () => Promise<T>) => stack.withTrainer(settings, fn);
const retrain = () => stack.retrain(clientId);

beforeAll(() => stack.start(workload), 180_000);

afterAll(() => stack.cleanup());

describe('trainer compares against the live version from the models topic', () => {
  it('publishes v1 then v2, each replacing the one live before it (its own publish is seen before the next training)', async () => {
    const [first, second] = await withTrainer(good, async () => [await retrain(), await retrain()]);
    expect(first).toMatchObject({ modelVersion: 'v1', previousVersion: null });
    expect(second).toMatchObject({ modelVersion: 'v2', previousVersion: 'v1' });
    expect((await store.list(clientId)).map((r) => r.modelVersion)).toEqual(['v1', 'v2']);
  }, 120_000);

  it('after ModelRolledBack v2 -> v1, the gate compares against v1, warm start uses v1 and retention keeps v1', async () => {
    await stack.streams.producer.send('ModelRolledBack', {
      eventId: randomUUID(), clientId, occurredAt: Date.now(), fromVersion: 'v2', toVersion: 'v1', actor: 'test', reason: 'v2 misroutes',
    });
    // A trainer started now catches up with the models topic (rollback included) before training.
    const rejected = await withTrainer(worse, () => retrain());
    expect(rejected).toMatchObject({ stage: 'GATE', reasons: ['WORSE_THAN_LIVE'], liveVersion: 'v1', candidateVersion: 'v3' });
    const v1 = (await store.list(clientId)).find((r) => r.modelVersion === 'v1')!;
    // The live figures are v1's, scored on the same test split it was published with.
    expect((rejected as ModelRejected).liveMetrics.macroF1).toBeCloseTo(v1.metrics.macroF1!, 10);
    expect((rejected as ModelRejected).detail).toContain('live v1');

    const published = await withTrainer(good, () => retrain());
    expect(published).toMatchObject({ modelVersion: 'v3', previousVersion: 'v1' });
    // Same data, same deterministic test split: the live figure is v1's own.
    expect((published as ModelPublished).metrics.liveMacroF1).toBeCloseTo(v1.metrics.macroF1!, 10);
    const refs = await store.list(clientId);
    expect(refs.find((r) => r.modelVersion === 'v3')!.parentVersion).toBe('v1');
    // keepVersions 1: the newest (v3) and the version live before it (v1); v2 was rolled back from.
    expect(refs.map((r) => r.modelVersion)).toEqual(['v1', 'v3']);
  }, 120_000);
});
