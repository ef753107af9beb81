/**
 * `npx tsx test/bench/spool.bench.ts`: what the PredictionMade spool (server/spool.ts) costs the
 * request thread, beside a reference measured in the same run: encoding the same events
 * (FramedEventWriter.append, which the request thread does for every prediction anyway).
 *
 * For group commits of 1, 4 and 16 events (one request per turn of the event loop is the worst
 * case; at 5,000 req/s over 10 connections several requests share a turn), with EDDY_SERVER_SPOOL
 * `write` and `fsync`: CPU µs per event (process.cpuUsage: user + system, which is where write(2)
 * is paid) and wall µs per commit. Env: BENCH_SPOOL_EVENTS (default 200,000), BENCH_SPOOL_DIR
 * (default: the temp directory; put it on the disk the server would use).
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/log.ts';
import type { PredictionMade } from '../../schemas/events.ts';
import { PredictionSpool } from '../../server/spool.ts';
import { FramedEventWriter } from '../../streams/index.ts';

const EVENTS = Number(process.env.BENCH_SPOOL_EVENTS ?? 200_000);
const base = process.env.BENCH_SPOOL_DIR ?? os.tmpdir();

const event = (i: number): PredictionMade => ({
  eventId: randomUUID(), clientId: `c${i % 1000}`, occurredAt: Date.now(), requestId: randomUUID(),
  text: 'My laptop will not boot after the update this morning, the screen stays black', metadata: { requester: `user${i % 3}` },
  label: 'Team0', scores: [{ label: 'Team0', score: 0.71 }, { label: 'Team1', score: 0.2 }, { label: 'Team2', score: 0.09 }],
  modelVersion: 'v1', variant: 'LIVE', latencyMs: 0.42, channel: 'HTTP', featuresDefaulted: false, unsure: false,
});

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

const events = Array.from({ length: 1000 }, (_, i) => event(i));
const logger = createLogger('bench', 'silent');
const rows: string[] = [];

/**
 * One pass: `n` events encoded in commits of `group` (as the request thread does), written to a
 * spool when `mode` is set. Returns CPU µs per event and wall µs per commit.
 */
function pass(mode: 'write' | 'fsync' | undefined, group: number, n: number): { cpu: number; wall: number; bytes: number } {
  const dir = fs.mkdtempSync(path.join(base, 'eddy-spool-bench-'));
  const spool = mode ? new PredictionSpool({ dir, topic: 'bench', fsync: mode === 'fsync', logger }) : undefined;
  const writer = new FramedEventWriter('PredictionMade');
  let bytes = 0;
  const c0 = cpuUs();
  const t0 = performance.now();
  for (let i = 0; i < n; i += group) {
    for (let j = 0; j < group; j++) writer.append(events[(i + j) % events.length]!);
    const r = writer.unsynced(true)!;
    bytes += r.bytes.length;
    spool?.append(r.bytes, r.count);
    // Kafka acknowledges as it goes: settled events are truncated away, as in the server.
    if (spool && i % 1024 < group) spool.settle(spool.unsettled);
  }
  const out = { cpu: (cpuUs() - c0) / n, wall: ((performance.now() - t0) * 1000) / (n / group), bytes: bytes / n };
  spool?.settle(spool.unsettled);
  spool?.close(false);
  fs.rmSync(dir, { recursive: true, force: true });
  return out;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
// Warm the JIT on both paths first.
pass(undefined, 4, 20_000);
pass('write', 4, 20_000);
for (const mode of ['write', 'fsync'] as const) {
  for (const group of [1, 4, 16]) {
    // fsync is slow: fewer events. Three alternating rounds of (encoding only, encoding + spool).
    const n = mode === 'fsync' ? Math.min(EVENTS, 1_000 * group) : EVENTS;
    const ref: number[] = [];
    const spooled: number[] = [];
    const walls: number[] = [];
    let bytes = 0;
    for (let round = 0; round < 3; round++) {
      ref.push(pass(undefined, group, n).cpu);
      const r = pass(mode, group, n);
      spooled.push(r.cpu);
      walls.push(r.wall);
      bytes = r.bytes;
    }
    const enc = median(ref);
    const extra = median(spooled.map((x, i) => x - ref[i]!));
    rows.push(`| spool ${mode}, ${group} event(s) per commit (${bytes.toFixed(0)} B each) | ${group} | ${enc.toFixed(2)} | ${extra.toFixed(2)} | ${(extra / enc).toFixed(2)}× | ${median(walls).toFixed(1)} |`);
  }
}

process.stdout.write(`\n## spool — ${new Date().toISOString()} — ${os.cpus().length} cores, node ${process.version}, ${EVENTS} events, dir ${base}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}\n\n`);
process.stdout.write('| what | events per commit | encoding, CPU µs per event (reference) | spool, CPU µs per event beyond it (median of 3 alternating rounds) | spool ÷ encoding | wall µs per commit (encoding included) |\n|---|---:|---:|---:|---:|---:|\n');
process.stdout.write(rows.join('\n') + '\n');
