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

// Reference: encoding alone (what every prediction already pays).
{
  const w = new FramedEventWriter('PredictionMade');
  const c = cpuUs();
  for (let i = 0; i < EVENTS; i++) {
    w.append(events[i % events.length]!);
    if (w.count >= 256) w.take();
  }
  const us = (cpuUs() - c) / EVENTS;
  rows.push(`| encode one PredictionMade (reference) | — | ${us.toFixed(2)} | — | 1.00× |`);
  for (const mode of ['write', 'fsync'] as const) {
    for (const group of [1, 4, 16]) {
      const dir = fs.mkdtempSync(path.join(base, 'eddy-spool-bench-'));
      const spool = new PredictionSpool({ dir, topic: 'bench', fsync: mode === 'fsync', logger });
      const writer = new FramedEventWriter('PredictionMade');
      // fsync is slow: fewer events.
      const n = mode === 'fsync' ? Math.min(EVENTS, 2_000 * group) : EVENTS;
      let bytes = 0;
      const c0 = cpuUs();
      const t0 = performance.now();
      for (let i = 0; i < n; i += group) {
        for (let j = 0; j < group; j++) writer.append(events[(i + j) % events.length]!);
        const r = writer.unsynced(true)!;
        bytes += r.bytes.length;
        spool.append(r.bytes, r.count);
        // Kafka acknowledges as it goes: settled events are truncated away, as in the server.
        if (i % 1024 === 0) spool.settle(spool.unsettled);
      }
      const cpu = (cpuUs() - c0) / n;
      const wall = ((performance.now() - t0) * 1000) / (n / group);
      spool.settle(spool.unsettled);
      spool.close(false);
      fs.rmSync(dir, { recursive: true, force: true });
      rows.push(`| spool ${mode}, ${group} event(s) per commit (${(bytes / n).toFixed(0)} B each) | ${group} | ${(cpu - us).toFixed(2)} | ${wall.toFixed(1)} | ${((cpu - us) / us).toFixed(2)}× |`);
    }
  }
}

process.stdout.write(`\n## spool — ${new Date().toISOString()} — ${os.cpus().length} cores, node ${process.version}, ${EVENTS} events, dir ${base}, load ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}\n\n`);
process.stdout.write('| what | events per commit | CPU µs per event (spool rows: beyond the encoding) | wall µs per commit | ÷ encoding |\n|---|---:|---:|---:|---:|\n');
process.stdout.write(rows.join('\n') + '\n');
