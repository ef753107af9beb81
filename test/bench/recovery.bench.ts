/**
 * `npm run bench:recovery`: how long a component takes to do useful work again after a crash, on
 * a PRIVATE Kafka broker (the shared one on 9092 must never die) with the shared registry, Redis
 * and ClickHouse under a private topic prefix, key prefix and database.
 *
 * - processors: `eddy processors run --only features,analytics` under a steady load of
 *   LabeledExample, kill -9, restart at once; time from the restart to the first commit (its ready
 *   line can come after the group join, which is what waits for the dead member).
 * - trainer: `eddy trainer run`, kill -9, restart; time from the restart to the answer (a
 *   ModelRejected: the client has no data, so no training time is counted) to a RetrainRequested
 *   sent when it printed its ready line.
 * - broker: the processors running under load, kill -9 of the broker, restart after 3 s; time from
 *   the broker's port opening to the processors' first commit, and to the load producer's first
 *   acknowledged send.
 * The components are the real `eddy` commands as child processes. Prints one line per measurement.
 * BENCH_ROUNDS (default 1) repeats each scenario.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AnyEvent } from '../../streams/index.ts';
import { eddyEnv, privateKafka, spawnEddy, type EddyProcess } from '../chaos-support.ts';
import { testConfig, testStreams, waitFor } from '../helpers.ts';
import { cleanupProcessorsTest, committedOffsets } from '../processors-support.ts';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 1);
const RATE = Number(process.env.BENCH_RATE ?? 200);
const PROCESSORS_READY = /processors running/;
const TRAINER_READY = /trainer running/;

const kafka = await privateKafka();
await kafka.start();
const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-recovery-'));
const config = testConfig({ EDDY_KAFKA_BROKERS: kafka.endpoint, EDDY_MODEL_STORE_DIR: storeDir });
const streams = await testStreams(config);
const env = eddyEnv(config);
const results: Array<{ scenario: string; ms: number }> = [];
const say = (scenario: string, ms: number, note = '') => {
  results.push({ scenario, ms });
  const shown = Number.isFinite(ms) ? `${(ms / 1000).toFixed(1).padStart(6)} s` : `> ${GIVE_UP_MS / 1000} s (nothing)`;
  process.stdout.write(`${scenario.padEnd(44)} ${shown} ${note}\n`);
};

/** A steady load of examples; records when sends fail and when they succeed again. */
let loadRunning = true;
let lastAckAt = 0;
let seq = 0;
const load = (async () => {
  while (loadRunning) {
    const t = Date.now();
    const events: AnyEvent[] = Array.from({ length: RATE / 10 }, () => ({
      name: 'LabeledExample' as const,
      value: { eventId: randomUUID(), clientId: `c${seq % 7}`, occurredAt: Date.now(), exampleId: `e${seq++}`, text: 'vpn is down again', label: 'IT', source: 'ASSIGNMENT' as const, metadata: {}, predictionId: null },
    }));
    try {
      await streams.producer.sendAll(events);
      lastAckAt = Date.now();
    } catch {
      // the broker is away: try again on the next tick
    }
    await new Promise((r) => setTimeout(r, Math.max(0, 100 - (Date.now() - t))));
  }
})();

async function committedTotal(): Promise<bigint> {
  const offsets = await committedOffsets(streams, 'processors.features', 'examples').catch(() => ({}));
  return Object.values(offsets).reduce((a, o) => a + (BigInt(o) > 0n ? BigInt(o) : 0n), 0n);
}

const GIVE_UP_MS = Number(process.env.BENCH_GIVE_UP_MS ?? 90_000);

/** Resolves with the time at which the group's committed offsets first move past `from` (Infinity: not within GIVE_UP_MS). */
async function firstCommitAfter(from: bigint, timeoutMs = GIVE_UP_MS): Promise<number> {
  try {
    await waitFor('a commit of the processors', async () => (await committedTotal()) > from, timeoutMs, 100);
    return Date.now();
  } catch {
    return Infinity;
  }
}

let procs: EddyProcess | undefined;
let trainer: EddyProcess | undefined;
try {
  procs = await spawnEddy(env, ['processors', 'run', '--only', 'features,analytics'], PROCESSORS_READY);
  await firstCommitAfter(0n);

  for (let round = 0; round < ROUNDS; round++) {
    // --- processors: kill -9 and restart at once
    await procs.kill9();
    const before = await committedTotal();
    procs = await spawnEddy(env, ['processors', 'run', '--only', 'features,analytics'], PROCESSORS_READY);
    const committedAt = await firstCommitAfter(before);
    say('processors: start -> first commit', committedAt - procs.startedAt, `(ready after ${((procs.readyAt - procs.startedAt) / 1000).toFixed(1)} s)`);

    // --- broker: kill -9, 3 s away, restart
    await kafka.kill();
    await new Promise((r) => setTimeout(r, 3000));
    const during = await committedTotal().catch(() => 0n);
    await kafka.start();
    const brokerBack = Date.now();
    const atRestart = await committedTotal();
    const ack = waitFor('the load producer acknowledged again', () => lastAckAt > brokerBack, GIVE_UP_MS, 50).then(() => lastAckAt, () => Infinity);
    say('broker: back -> processors first commit', (await firstCommitAfter(atRestart > during ? atRestart : during)) - brokerBack);
    say('broker: back -> producer first ack', (await ack) - brokerBack);
  }

  // --- trainer: kill -9 and restart, answer to a request sent at ready
  trainer = await spawnEddy(env, ['trainer', 'run'], TRAINER_READY);
  const answers: string[] = [];
  const reader = streams.consumer({
    group: 'recovery-models-reader', topics: ['models'], fromBeginning: true,
    handler: { handle: async (records) => { for (const r of records) if ('retrainEventId' in r.event.value) answers.push(String(r.event.value.retrainEventId)); } },
  });
  await reader.start();
  const ask = async (): Promise<string> => {
    const eventId = randomUUID();
    await streams.producer.send('RetrainRequested', { eventId, clientId: `nodata-${eventId.slice(0, 6)}`, occurredAt: Date.now(), reason: 'MANUAL', detail: 'recovery bench', requestedBy: 'bench', dataAsOf: null });
    return eventId;
  };
  const first = await ask();
  await waitFor('the trainer answers', () => answers.includes(first), 120_000, 50);
  for (let round = 0; round < ROUNDS; round++) {
    await trainer.kill9();
    trainer = await spawnEddy(env, ['trainer', 'run'], TRAINER_READY);
    const id = await ask();
    const answered = await waitFor('the restarted trainer answers', () => answers.includes(id), GIVE_UP_MS, 50).then(() => Date.now(), () => Infinity);
    say('trainer: start -> request answered', answered - trainer.startedAt, `(ready after ${((trainer.readyAt - trainer.startedAt) / 1000).toFixed(1)} s; asked at ready)`);
  }
} finally {
  loadRunning = false;
  await load;
  await procs?.kill9();
  await trainer?.kill9();
  await cleanupProcessorsTest(config, streams).catch((err: unknown) => process.stderr.write(`cleanup: ${String(err)}\n`));
  await kafka.cleanup();
  fs.rmSync(storeDir, { recursive: true, force: true });
}
process.exit(0);
