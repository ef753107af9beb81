/**
 * `npm run bench:monitor`: the quality monitor and the dashboard on the real stack.
 *
 * 1. Drain: BENCH_JUDGED predictions + as many feedback events over BENCH_CLIENTS clients are
 *    produced first; then the monitor consumer group starts (as in `eddy processors run --only
 *    monitor`) and the time until it committed everything is measured (events/s end to end:
 *    Kafka fetch, Avro decode, one Lua call per event, daily evaluations).
 * 2. Handler only: the same kind of events handed to MonitorProcessor.handle in calls of 1000,
 *    without Kafka (what Redis costs).
 * 3. Dashboard: GET /dashboard/api/overview (100 clients a page, each with its 7-day window) and
 *    GET /dashboard/api/clients/:id, sequential requests, latency percentiles.
 * Prints a markdown table; `--write` also writes docs/benchmarks/monitor.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import Fastify from 'fastify';
import { loadConfig } from '../../common/config.ts';
import { createLogger } from '../../common/log.ts';
import { connectStreams, deleteTopics, logEnd, type AnyEvent, type EventRecord, type Streams } from '../../streams/index.ts';
import { startProcessors } from '../../processors/run.ts';
import { MONITOR_TOPICS, MonitorProcessor, monitorOptions } from '../../processors/monitor/processor.ts';
import { connectRedis } from '../../common/redis.ts';
import { dashboardRoutes } from '../../server/dashboard/plugin.ts';

const JUDGED = Number(process.env.BENCH_JUDGED ?? 50_000);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 500);
const REQUESTS = Number(process.env.BENCH_REQUESTS ?? 200);
const id = `bmon${Date.now().toString(36)}`;
const config = loadConfig({
  ...process.env, EDDY_TOPIC_PREFIX: `${id}.`, EDDY_REDIS_PREFIX: id, EDDY_CLICKHOUSE_DATABASE: `eddy_${id}`,
  EDDY_PARTITIONS: process.env.EDDY_PARTITIONS ?? '6', EDDY_LOG_LEVEL: 'warn',
});
const labels = ['Network', 'Hardware', 'Access', 'Payroll', 'Facilities', 'Security', 'Finance', 'Legal'];
const say = (s: string) => process.stderr.write(s + '\n');
const loadBefore = os.loadavg().map((x) => x.toFixed(1)).join(' ');

/** n judged pairs spread over the last 14 days (so evaluations read both weeks), 85% right. */
function judgedPairs(n: number, prefix: string): AnyEvent[] {
  const now = Date.now();
  const out: AnyEvent[] = [];
  for (let i = 0; i < n; i++) {
    const clientId = `${prefix}-${i % CLIENTS}`;
    const at = now - Math.floor(((i / n) * 14) * 86_400_000);
    const label = labels[i % labels.length]!;
    const requestId = `r-${prefix}-${i}`;
    out.push({
      name: 'PredictionMade', value: {
        eventId: randomUUID(), clientId, occurredAt: at, requestId, text: 'laptop will not boot after the update', metadata: { requester: `u${i % 3000}` },
        label, scores: [{ label, score: 0.8 }], modelVersion: 'v1', variant: 'LIVE', latencyMs: 0.4, channel: 'HTTP', featuresDefaulted: false, unsure: null,
      },
    });
    const right = i % 20 < 17;
    out.push({
      name: 'PredictionFeedback', value: {
        eventId: randomUUID(), clientId, occurredAt: at + 1000, requestId, outcome: right ? 'ACCEPTED' : 'REASSIGNED',
        correctLabel: right ? null : labels[(i + 1) % labels.length]!, actor: null,
      },
    });
  }
  return out;
}

async function caughtUp(streams: Streams, group: string): Promise<boolean> {
  return streams.withAdmin(async (admin) => {
    for (const t of MONITOR_TOPICS) {
      const physical = streams.topics.physical(t);
      const ends = await admin.fetchTopicOffsets(physical);
      const committed = (await admin.fetchOffsets({ groupId: streams.topics.group(group), topics: [physical] }))[0]?.partitions ?? [];
      for (const e of ends) {
        if (e.high === e.low) continue;
        const c = committed.find((p) => p.partition === e.partition)?.offset ?? '-1';
        if (BigInt(c) < BigInt(e.high)) return false;
      }
    }
    return true;
  });
}

function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const rows: string[][] = [];
const streams = await connectStreams(config, 'eddy-bench-monitor');
const redis = await connectRedis(config);
try {
  // --- 1. drain through Kafka ---
  const events = judgedPairs(JUDGED, 'c');
  say(`producing ${events.length} events over ${CLIENTS} clients…`);
  for (let i = 0; i < events.length; i += 5000) await streams.producer.sendAll(events.slice(i, i + 5000));
  const t0 = performance.now();
  const procs = await startProcessors(config, { only: ['monitor'] });
  while (!(await caughtUp(streams, 'processors.monitor'))) await new Promise((r) => setTimeout(r, 250));
  const drainS = (performance.now() - t0) / 1000;
  await procs.stop();
  rows.push(['Monitor drain through Kafka (group start to all committed)', `${events.length} events (${JUDGED} judged pairs, ${CLIENTS} clients, 14 days)`, `${drainS.toFixed(1)} s`, `${Math.round(events.length / drainS).toLocaleString('en')} events/s`]);
  say(`drain: ${drainS.toFixed(1)} s`);

  // --- 2. handler only ---
  const processor = new MonitorProcessor(redis, monitorOptions(config));
  await processor.init({ logger: createLogger('bench', 'warn'), emit: (events) => streams.producer.sendAll(events), schedule: () => undefined, endOffsets: (topic) => streams.withAdmin((a) => logEnd(a, streams.topics.physical(topic))) });
  const direct = judgedPairs(Math.min(JUDGED, 20_000), 'h');
  const records: EventRecord[] = direct.map((event, i) => ({ event, topic: event.name === 'PredictionMade' ? 'predictions' : 'feedback', partition: 0, offset: String(i), key: null, timestamp: Date.now() }));
  const ctx = { heartbeat: async () => undefined, isRunning: () => true, isAssigned: () => true, logger: createLogger('bench', 'warn') };
  const t1 = performance.now();
  for (let i = 0; i < records.length; i += 1000) await processor.handle(records.slice(i, i + 1000), ctx);
  const handleS = (performance.now() - t1) / 1000;
  rows.push(['MonitorProcessor.handle only (no Kafka), calls of 1000', `${records.length} events`, `${handleS.toFixed(1)} s`, `${Math.round(records.length / handleS).toLocaleString('en')} events/s`]);

  // --- 3. dashboard endpoints ---
  const app = Fastify({ logger: false });
  // The dashboard needs a key (docs/server.md, "Who sees what"): the bench reads as the admin.
  const adminKey = `bench-admin-${randomUUID()}`;
  await app.register(dashboardRoutes, { auth: { adminKey, apiKeys: new Map() }, redis, keyPrefix: config.redisPrefix, logger: createLogger('bench', 'warn') });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  for (const [name, path] of [['GET /dashboard/api/overview (100 clients a page)', '/dashboard/api/overview?limit=100'], ['GET /dashboard/api/clients/:id', '/dashboard/api/clients/c-7']] as const) {
    const times: number[] = [];
    for (let i = 0; i < REQUESTS; i++) {
      const t = performance.now();
      const res = await fetch(url + path, { headers: { authorization: `Bearer ${adminKey}` } });
      await res.arrayBuffer();
      if (res.status !== 200) throw new Error(`${path}: HTTP ${res.status}`);
      times.push(performance.now() - t);
    }
    rows.push([name, `${REQUESTS} sequential requests, ${CLIENTS + Math.min(CLIENTS, 20_000)} clients known`, `p50 ${percentile(times, 50).toFixed(1)} ms`, `p99 ${percentile(times, 99).toFixed(1)} ms`]);
  }
  await app.close();
} finally {
  await streams.withAdmin(async (admin) => {
    await deleteTopics(admin, streams.topics);
    const ours = (await admin.listGroups()).filter((g) => g.startsWith(config.topicPrefix));
    if (ours.length) await admin.deleteGroups(ours).catch(() => undefined);
  });
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${config.redisPrefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length) await redis.del(...keys);
  } while (cursor !== '0');
  redis.disconnect();
  await streams.close();
}

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'} (nproc ${os.availableParallelism()}), ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const table = [
  `Command: \`npm run bench:monitor\` (BENCH_JUDGED=${JUDGED}, BENCH_CLIENTS=${CLIENTS}, BENCH_REQUESTS=${REQUESTS}, ${config.partitions} partitions) · ${new Date().toISOString()} · ${machine}`,
  '',
  'Stack on the same machine: Kafka 4.1.1 (KRaft), Apicurio registry, Redis, ClickHouse 18.16; producer, monitor and dashboard in one Node process. Unrelated work may share the same 2 cores during a run.',
  `Load average (1/5/15 min) at start: ${loadBefore}; at end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} (2 cores: above 2 means we got a fraction of the machine).`,
  '',
  '| what | load | time | rate / latency |',
  '|---|---|---|---|',
  ...rows.map((r) => `| ${r.join(' | ')} |`),
];
process.stdout.write(table.join('\n') + '\n');
if (process.argv.includes('--write')) {
  fs.mkdirSync('docs/benchmarks', { recursive: true });
  fs.writeFileSync('docs/benchmarks/monitor.md', `## Quality monitor and dashboard\n\n${table.join('\n')}\n`);
}
process.exit(0);
