import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eddyEnv, spawnEddy, type EddyProcess } from './chaos-support.ts';
import { waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';
import { TrainerTestStack } from './trainer-support.ts';
import { generateClient } from './quality/workload.ts';

/**
 * kill -9 of a `trainer run` process while it trains: the request was not committed, so the
 * restarted trainer answers it, and exactly one model version answers it.
 */
const clientId = 'crash-acme';
const workload = generateClient({ clientId, examples: 1500, labels: 4, noise: 0, seed: 21 });
let stack: TrainerTestStack;
let trainer: EddyProcess | undefined;

beforeAll(async () => {
  stack = await TrainerTestStack.create('death-trainer');
  await stack.start(workload);
}, 120_000);

afterAll(async () => {
  await trainer?.kill9();
  await stack?.cleanup();
}, 60_000);

async function received(port: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith('eddy_consumer_received_total') && l.includes('topic="retrain-requests"'));
  return line ? Number(line.split(' ').pop()) : 0;
}

/** The nice value of a process's main thread (/proc/<pid>/stat, field 19). */
function niceOf(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
}

describe('the trainer process', () => {
  it.runIf(process.platform === 'linux')('trains at the CPU priority EDDY_TRAINER_NICE asks for once running, and at the normal one by default', async () => {
    const lowered = await spawnEddy(eddyEnv(stack.config, { EDDY_TRAINER_NICE: '10' }), ['trainer', 'run'], /trainer running/);
    try {
      await waitFor('nice 10', () => niceOf(lowered.child.pid!) === 10, 10_000, 20);
    } finally {
      await lowered.kill9();
    }
    const normal = await spawnEddy(eddyEnv(stack.config), ['trainer', 'run'], /trainer running/);
    try {
      await new Promise((r) => setTimeout(r, 300));
      expect(niceOf(normal.child.pid!)).toBe(0);
    } finally {
      await normal.kill9();
    }
  }, 60_000);
});

describe('the trainer killed mid-retrain', () => {
  it('answers the request after a restart, with exactly one model version', async () => {
    const port = await freePort();
    // Many epochs: the training takes seconds, so the kill lands inside it.
    const env = eddyEnv(stack.config, { EDDY_TRAINER_EPOCHS: '200', EDDY_METRICS_PORT: String(port) });
    trainer = await spawnEddy(env, ['trainer', 'run'], /trainer running/);
    const eventId = randomUUID();
    await stack.streams.producer.send('RetrainRequested', { eventId, clientId, occurredAt: Date.now(), reason: 'MANUAL', detail: 'death test', requestedBy: 'test', dataAsOf: null });
    await waitFor('the trainer holding the request', async () => (await received(port)) >= 1, 60_000, 50);
    await trainer.kill9();
    const answers = () => stack.modelEvents.filter((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && e.value.retrainEventId === eventId);
    expect(answers()).toEqual([]);

    trainer = await spawnEddy(env, ['trainer', 'run'], /trainer running/);
    await stack.answerTo(eventId, 120_000);
    // Anything still to come (a second training, a re-announcement) comes before the request is committed.
    await waitFor('the request committed', async () => {
      const [t] = await stack.streams.withAdmin((admin) => admin.fetchOffsets({ groupId: stack.streams.topics.group('trainer'), topics: [stack.streams.topics.physical('retrain-requests')] }));
      return (t?.partitions ?? []).some((p) => BigInt(p.offset) > 0n);
    }, 60_000, 100);
    const versions = new Set(answers().map((e) => (e.name === 'ModelPublished' ? e.value.modelVersion : 'rejected')));
    expect(answers()[0]!.name).toBe('ModelPublished');
    expect([...versions]).toHaveLength(1);
    const stored = (await stack.store.list(clientId)).filter((ref) => ref.retrainEventId === eventId);
    expect(stored.map((r) => r.modelVersion)).toEqual([...versions]);
  }, 300_000);
});
