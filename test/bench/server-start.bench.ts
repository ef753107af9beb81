/**
 * How long an `eddy serve` process takes from its spawn to its readiness and to its first answer,
 * over a log that holds many labelled examples (a restart in a deployment that has been running).
 * Run: `npm run bench:server-start` (starts the stack if needed); it uses the shared stack under a
 * private topic prefix, key prefix and model store, removed at the end.
 *
 * BENCH_EXAMPLES (default 100,000) LabeledExample events for two clients without a model are
 * written first; then, BENCH_ROUNDS times (default 3), each checkout of BENCH_CHECKOUTS (default:
 * this one; a comma-separated list of directories, e.g. a `git worktree` of an older commit, for
 * an A/B in one run, taken in turn) starts a server there and is timed: spawn → GET /readyz 200 →
 * the first 200 of a predict (the baseline: no model). BENCH_BUSY busy-looping processes (default
 * 0) run beside it, to see the start-up on a loaded machine.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { testStreams } from '../helpers.ts';
import { freePort } from '../processors-support.ts';
import { CLIENT_KEYS, serverProcessEnv, serverTestConfig } from '../server-fixtures.ts';

const EXAMPLES = Number(process.env.BENCH_EXAMPLES ?? 100_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 3);
const CHECKOUTS = (process.env.BENCH_CHECKOUTS ?? process.cwd()).split(',').filter(Boolean);
const BUSY = Number(process.env.BENCH_BUSY ?? 0);
const PORT = await freePort();

const config = await serverTestConfig();
const streams = await testStreams(config);
const clients = ['acme', 'globex'];
const labels = ['Network', 'Hardware', 'Payroll'];
await streams.producer.sendAll(clients.flatMap((clientId) => labels.map((label) => ({
  name: 'LabelSetChanged' as const,
  value: { eventId: randomUUID(), clientId, occurredAt: Date.now(), change: 'ADDED' as const, label, previousLabel: null, description: `the ${label} team`, keywords: [] },
}))));
for (let i = 0; i < EXAMPLES; i += 2000) {
  await streams.producer.sendAll(Array.from({ length: Math.min(2000, EXAMPLES - i) }, (_, j) => ({
    name: 'LabeledExample' as const,
    value: {
      eventId: randomUUID(), clientId: clients[(i + j) % 2]!, occurredAt: Date.now(), exampleId: randomUUID(), text: `request number ${i + j} about something`,
      label: labels[(i + j) % 3]!, source: 'ASSIGNMENT' as const, metadata: { requester: `user-${j % 50}` }, predictionId: null,
    },
  })));
}
const busy = Array.from({ length: BUSY }, () => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
process.on('exit', () => busy.forEach((b) => b.kill()));
console.log(`${EXAMPLES} examples in the log; ${BUSY} busy processes beside the server; ${os.cpus().length} × ${os.cpus()[0]?.model}, Node ${process.version}, ${new Date().toISOString()}`);

async function startOnce(dir: string): Promise<{ ready: number; first: number }> {
  const t0 = Date.now();
  const child = spawn(process.execPath, ['bin/eddy.mjs', 'serve', '--no-kafka-predict'], { cwd: dir, env: serverProcessEnv(config, PORT), stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', r));
  try {
    let ready = 0;
    for (;;) {
      if (Date.now() - t0 > 120_000) throw new Error(`the server in ${dir} did not answer within 120 s`);
      try {
        if (!ready && (await fetch(`http://127.0.0.1:${PORT}/readyz`)).status === 200) ready = Date.now() - t0;
        if (ready) {
          const r = await fetch(`http://127.0.0.1:${PORT}/v1/clients/acme/predict`, {
            method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${CLIENT_KEYS.acme}` }, body: JSON.stringify({ text: 'the wifi is down' }),
          });
          if (r.status === 200) return { ready, first: Date.now() - t0 };
          if (r.status !== 503) throw new Error(`HTTP ${r.status}: ${await r.text()}`);
        }
      } catch (err) {
        if (!/fetch failed/.test(String(err))) throw err; // not listening yet
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  } finally {
    child.kill('SIGTERM');
    await exited;
  }
}

try {
  for (let round = 1; round <= ROUNDS; round++) {
    for (const dir of CHECKOUTS) {
      const t = await startOnce(dir);
      console.log(`round ${round} ${dir}: ready ${(t.ready / 1000).toFixed(1)} s, first 200 ${(t.first / 1000).toFixed(1)} s`);
    }
  }
} finally {
  busy.forEach((b) => b.kill());
  await streams.cleanup();
  await config.cleanupStore();
}
process.exit(0);
