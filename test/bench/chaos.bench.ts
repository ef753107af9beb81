/**
 * `npm run bench:chaos`: fault injection on a whole private platform under steady load, then a
 * count of what survived (docs/reliability.md). Nothing here touches the shared stack: the
 * broker, the schema registry, Redis and ClickHouse are private instances (test/chaos-support.ts,
 * test/processors-support.ts) that may be killed; processors, trainer and server are the real
 * `eddy` commands as child processes.
 *
 * 1. Load: ~10 clients (labels and texts from test/quality/workload.ts) send LabeledExample at
 *    BENCH_RATE events/s in total (default 400), and ~BENCH_PREDICT_RATE (default 50) HTTP
 *    predictions/s go to the server, each with its own requestId.
 * 2. In turn, kill -9 and restart: processors, trainer, server, registry, ClickHouse, Redis,
 *    broker (BENCH_FAULTS picks and orders them; the broker last, as a broker loss can stop a
 *    consumer for good: docs/reliability.md). The processes are started again at once; the
 *    servers are away BENCH_DOWN_MS (3 s). After each, the processors' commit rate over the
 *    steady pause (BENCH_STEADY_MS) shows whether they kept working.
 *    Recovery is timed from the component's return (the process spawned again) to its first
 *    useful work, measured: the processors' first commit; the trainer's first retrain started
 *    (its 'retrain started' log line; the trainers log at info) and its first answer
 *    (ModelPublished/ModelRejected; a MANUAL request is sent at its restart so there is work);
 *    the server's first 200; after the broker, the processors' first commit and the load
 *    producer's first acknowledged send; after the registry, the first schema registration of a
 *    new codec (what a process starting needs; running ones keep their cached ids); after
 *    ClickHouse, the first new row; after Redis, the first counter moved.
 * 3. Drain (the load stops, the processors catch up; if they do not within BENCH_DRAIN_MS, they
 *    are restarted by hand and the report says so), then count: events the producer saw
 *    acknowledged vs the examples topic vs ClickHouse (raw rows and distinct event ids; the offsets
 *    with no row, by partition, when some are missing) vs the
 *    Redis counters; predictions answered 200 vs PredictionMade on the topic for those request
 *    ids (each missing one is attributed to the fault whose window holds its answer); model
 *    versions per client (unique) and retrain requests answered more than once; dead letters by
 *    group, code and reason.
 *
 * Replicas (BENCH_REPLICAS, default 2; 1 is the run of one of each): that many processors (one
 * consumer group per processor, shared), trainers (one group) and servers (each on its own port
 * with its own spool directory, as containers with their own volumes). Predictions go through the
 * typed client given every server's URL, with its documented retries and failover (client/http.ts).
 * With two, the process faults kill replica 0 and leave it away until the survivor has taken over
 * (or BENCH_GIVE_UP_MS), then start it again; besides the killed instance's recovery (its return to
 * its own first useful work, read from its /metrics) the report gives the survivor's takeover: from
 * the kill to the survivor's first useful work in the dead one's place (every partition of the
 * features group committed again; the survivor's first retrain started on a partition the dead
 * trainer owned, and answered, with a MANUAL retrain sent at the kill on every partition; the first
 * request that failed on the dead server answered by the other one).
 * BENCH_REDIS picks the private Redis: `single` (default) or `cluster`, a 3-master Redis Cluster (see startPrivateRedis).
 *
 * CPU per unit of work (from /proc) is given for the steady window before the first fault
 * (BENCH_REFERENCE_MS, the reference) and for the whole run, so the cost of the work done again after crashes shows as a ratio.
 * BENCH_CHILD_LOG_DIR=<dir> keeps each child's output there, the killed ones' too (BENCH_CHILD_LOG_LEVEL, default warn).
 * Prints progress lines on stderr and a markdown report on stdout; `--write` also writes
 * docs/benchmarks/chaos.md. The whole run takes about 8–10 minutes on the 2-core machine.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { compatibilityPartitioner } from '@platformatic/kafka';
import { EddyClient, type EddyClientError } from '../../client/index.ts';
import { identifier } from '../../common/clickhouse.ts';
import { createClickHouse } from '../../common/clickhouse.ts';
import { featureKeys } from '../../common/keyspace.ts';
import { connectRedis, SlotPipelines } from '../../common/redis.ts';
import type { AnyEvent } from '../../streams/index.ts';
import { EventCodec, FETCH_EACH_EVENT } from '../../streams/index.ts';
import { cpuSeconds, eddyEnv, firstTime, privateKafka, privateRegistry, readLog, spawnEddy, type EddyProcess } from '../chaos-support.ts';
import { testConfig, testStreams, waitFor } from '../helpers.ts';
import { caughtUp, committedOffsets, freePort, privateClickHouse, privateRedis, privateRedisCluster, type PrivateServer } from '../processors-support.ts';
import { generateClient, type WorkloadClient } from '../quality/workload.ts';

const RATE = Number(process.env.BENCH_RATE ?? 400);
const PREDICT_RATE = Number(process.env.BENCH_PREDICT_RATE ?? 50);
const CLIENTS = Number(process.env.BENCH_CLIENTS ?? 10);
const DOWN_MS = Number(process.env.BENCH_DOWN_MS ?? 3000);
const STEADY_MS = Number(process.env.BENCH_STEADY_MS ?? 15_000);
const REFERENCE_MS = Number(process.env.BENCH_REFERENCE_MS ?? 45_000);
const GIVE_UP_MS = Number(process.env.BENCH_GIVE_UP_MS ?? 60_000);
const DRAIN_MS = Number(process.env.BENCH_DRAIN_MS ?? 60_000);
const REPLICAS = Number(process.env.BENCH_REPLICAS ?? 2);
const PROCESSORS = ['processors', 'run', '--only', 'features,analytics,triggers'];
const t0 = Date.now();
const say = (line: string) => process.stderr.write(`[chaos ${((Date.now() - t0) / 1000).toFixed(0).padStart(4)} s] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const secs = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : 'never');
const loadBefore = os.loadavg().map((x) => x.toFixed(1)).join(' ');

// ---------------------------------------------------------------- the private stack
say('starting a private Kafka broker, schema registry, Redis and ClickHouse …');
const kafka = await privateKafka();
await kafka.start();
/**
 * The private Redis the platform runs on: one server (BENCH_REDIS=single, the default) or a
 * private 3-master Redis Cluster (BENCH_REDIS=cluster; the Redis fault kills every node at once).
 * The cluster's nodes keep an append-only file, so the counters survive the kill as the single
 * server's do.
 */
async function startPrivateRedis(): Promise<PrivateServer> {
  const mode = process.env.BENCH_REDIS ?? 'single';
  if (mode === 'single') return privateRedis();
  if (mode === 'cluster') return privateRedisCluster({ appendOnly: true });
  throw new Error(`BENCH_REDIS=${mode}: 'single' or 'cluster'`);
}
const redisServer = await startPrivateRedis();
const chServer = await privateClickHouse();
await Promise.all([redisServer.start(), chServer.start()]);
const registry = await privateRegistry(kafka.endpoint);
await registry.start();
const storeDir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-chaos-'));
const config = testConfig({
  EDDY_KAFKA_BROKERS: kafka.endpoint, EDDY_SCHEMA_REGISTRY_URL: registry.endpoint, EDDY_REDIS_URL: redisServer.url,
  EDDY_CLICKHOUSE_URL: chServer.url, EDDY_MODEL_STORE_DIR: storeDir,
});
const streams = await testStreams(config);
const redis = await connectRedis(config);
redis.on('error', () => undefined);
const clickhouse = createClickHouse(config);
const replicas = Array.from({ length: REPLICAS }, (_, i) => i);
const ports = async () => Promise.all(replicas.map(() => freePort()));
const serverPorts = await ports();
const serverUrls = serverPorts.map((p) => `http://127.0.0.1:${p}`);
/** Each child's own /metrics: what the killed instance itself did after its return, apart from its twin. */
const metricsPorts = { processors: await ports(), trainer: await ports(), server: await ports() };
const workloads: WorkloadClient[] = Array.from({ length: CLIENTS }, (_, i) => generateClient({ clientId: `chaos-${i}`, examples: 2000, labels: 4, noise: 0.05, seed: 100 + i }));
const apiKey = (clientId: string) => `key-${clientId}-0123456789abcdef`;
const env = eddyEnv(config, {
  // Retrains keep coming during the run (the first model of each client, catch-ups, then one a minute at most).
  EDDY_TRIGGER_QUIET_MS: '0', EDDY_TRIGGER_COOLDOWN_MS: '60000', EDDY_TRIGGER_MIN_EXAMPLES: '100',
  EDDY_LOG_LEVEL: process.env.BENCH_CHILD_LOG_LEVEL ?? 'warn',
  EDDY_SERVER_API_KEYS: workloads.map((w) => `${apiKey(w.clientId)}=${w.clientId}`).join(','),
});

/** The environment of replica `i` of a component: its own metrics port; a server's own port and spool. */
const envOf = (component: Component, i: number): NodeJS.ProcessEnv => component === 'server'
  ? { ...env, EDDY_SERVER_PORT: String(serverPorts[i]), EDDY_SERVER_METRICS_PORT: String(metricsPorts.server[i]), EDDY_SERVER_SPOOL_DIR: path.join(config.server.spoolDir, `replica-${i}`) }
  : {
    ...env, EDDY_METRICS_PORT: String(metricsPorts[component][i]),
    // The trainers at info (a few lines per retrain): their 'partitions assigned' and 'retrain started' lines time their takeover and return.
    // Everything shares one host here, so the trainers yield the cores as docker-compose.yml has them do (BENCH_TRAINER_NICE=0: they do not).
    ...(component === 'trainer' ? { EDDY_LOG_LEVEL: process.env.BENCH_CHILD_LOG_LEVEL ?? 'info', EDDY_TRAINER_NICE: process.env.BENCH_TRAINER_NICE ?? '10' } : {}),
  };
/** The sum of a counter's samples on a child's /metrics whose labels match (0 while it does not answer). */
async function counterOf(port: number, name: string, labels: RegExp = /.*/): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const m = /^(\w+)(\{[^}]*\})? ([0-9.e+-]+)$/.exec(line);
    if (m && m[1] === name && labels.test(m[2] ?? '')) sum += Number(m[3]);
  }
  return sum;
}
/** The partition of a client on a topic of `config.partitions` (the producer's partitioner, as streams/ configures it). */
const partitionOf = (clientId: string) => compatibilityPartitioner(undefined as never, Buffer.from(clientId)) % config.partitions;
/** One client per partition (where the workload has one): a request for each lands on every member of a group. */
const clientPerPartition = () => [...new Map(workloads.map((w) => [partitionOf(w.clientId), w.clientId])).values()];

// ---------------------------------------------------------------- what is watched
interface Fault {
  component: string;
  killedAt: number;
  /** The component spawned again. */
  returnedAt: number;
  /** Its ready line / port / ping. */
  readyAt: number;
  /** First useful work after the return, with what it was. */
  useful: Array<{ what: string; at: number }>;
  /** With replicas: the survivor's first useful work in the dead one's place, timed from the kill. */
  takeover?: Array<{ what: string; at: number }>;
  /** Counted while it was away: predictions that failed, events not acknowledged. */
  failedRequests: number;
  /** Requests answered only after more than one attempt, and of them answered by another server than the first tried. */
  retried: number;
  failedOver: number;
  unacked: number;
  note: string;
  /** The processors' commit rate in the steady pause after the recovery. */
  after?: string;
}
const faults: Fault[] = [];
const acked = new Set<string>();
const unacked = new Set<string>();
let lastAckAt = 0;
interface Answer { requestId: string; clientId: string; at: number; defaulted: boolean; version: string | null; server: string; attempts: number; failedOn: string[] }
const answered: Answer[] = [];
let failedRequests = 0;
let retriedRequests = 0;
let failedOverRequests = 0;
const failures = new Map<string, number>();
const modelEvents: AnyEvent[] = [];

/** Who asked and through which channel: the entities whose real-time features Redis keeps and the server reads. */
const metadataOf = (n: number): Record<string, string> => ({ requester: `user-${n % 40}`, channel: n % 3 === 0 ? 'email' : 'portal' });

let loading = true;
let sendingExamples = true;
const loaders = workloads.map(async (w, i) => {
  await streams.producer.sendAll(w.labels.map((l) => ({ name: 'LabelSetChanged' as const, value: {
    eventId: randomUUID(), clientId: w.clientId, occurredAt: Date.now(), change: 'ADDED' as const, label: l.name, previousLabel: null, description: l.description, keywords: l.keywords,
  } })));
  const perTick = RATE / CLIENTS / 10;
  let carry = 0;
  for (let n = 0; sendingExamples; n++) {
    const t = Date.now();
    carry += perTick;
    const k = Math.floor(carry);
    carry -= k;
    const events: AnyEvent[] = Array.from({ length: k }, (_, j) => {
      const e = w.examples[(n * 7 + j + i) % w.examples.length]!;
      return { name: 'LabeledExample' as const, value: {
        eventId: randomUUID(), clientId: w.clientId, occurredAt: Date.now(), exampleId: randomUUID(), text: e.text, label: e.label, source: 'ASSIGNMENT' as const, metadata: metadataOf(n + j), predictionId: null,
      } };
    });
    if (events.length > 0) {
      try {
        await streams.producer.sendAll(events);
        for (const e of events) acked.add(e.value.eventId);
        lastAckAt = Date.now();
      } catch {
        // Not acknowledged: it may or may not be in the log (counted apart).
        for (const e of events) unacked.add(e.value.eventId);
      }
    }
    await sleep(Math.max(0, 100 - (Date.now() - t)));
  }
});

let inFlight = 0;
/** Opened once the servers are first ready: failures are counted from then on. */
let serverFirstReady!: () => void;
const serverReady = new Promise<void>((r) => { serverFirstReady = r; });
/** Each attempt of a request, by requestId, as the typed client made it: which server, and whether an answer came. */
const attemptsOf = new Map<string, Array<{ server: string; ok: boolean }>>();
const observedFetch: typeof fetch = async (input, init) => {
  const url = String(input);
  const server = serverUrls.find((u) => url.startsWith(u)) ?? url;
  const { requestId } = JSON.parse(String(init?.body ?? '{}')) as { requestId?: string };
  const record = (ok: boolean) => {
    if (!requestId) return;
    const list = attemptsOf.get(requestId) ?? [];
    list.push({ server, ok });
    attemptsOf.set(requestId, list);
  };
  try {
    const res = await fetch(input, init);
    record(res.ok);
    return res;
  } catch (err) {
    record(false);
    throw err;
  }
};
// One client per tenant (each has its own key), each given every server, retrying as documented (docs/client.md).
const clients = new Map(workloads.map((w) => [w.clientId, new EddyClient({ url: serverUrls, apiKey: apiKey(w.clientId), fetch: observedFetch })]));
const predictor = (async () => {
  await Promise.race([serverReady, new Promise((r) => setTimeout(r, GIVE_UP_MS * 3))]);
  for (let n = 0; loading; n++) {
    const t = Date.now();
    if (inFlight < 100) {
      const w = workloads[n % workloads.length]!;
      const requestId = randomUUID();
      inFlight++;
      void (async () => {
        try {
          const p = await clients.get(w.clientId)!.predict(w.clientId, { text: w.examples[n % w.examples.length]!.text, metadata: metadataOf(n), requestId });
          const tried = attemptsOf.get(requestId) ?? [];
          const server = [...tried].reverse().find((a) => a.ok)?.server ?? '?';
          if (tried.length > 1) retriedRequests++;
          if (tried.length > 1 && tried[0]!.server !== server) failedOverRequests++;
          answered.push({ requestId, clientId: w.clientId, at: Date.now(), defaulted: p.featuresDefaulted, version: p.modelVersion, server, attempts: tried.length, failedOn: tried.filter((a) => !a.ok).map((a) => a.server) });
        } catch (err) {
          failedRequests++;
          const e = err as EddyClientError & { status?: number; cause?: { cause?: { code?: string }; code?: string } };
          const code = e.status !== undefined ? `HTTP ${e.status} ${e.code}` : `${e.code ?? e.name}${e.cause?.cause?.code ?? e.cause?.code ? ` (${e.cause?.cause?.code ?? e.cause?.code})` : ''}`;
          failures.set(code, (failures.get(code) ?? 0) + 1);
        } finally {
          attemptsOf.delete(requestId);
          inFlight--;
        }
      })();
    } else {
      failures.set('not sent (100 in flight)', (failures.get('not sent (100 in flight)') ?? 0) + 1);
    }
    await sleep(Math.max(0, 1000 / PREDICT_RATE - (Date.now() - t)));
  }
})();

async function committed(group: string, topic: 'examples'): Promise<bigint> {
  const offsets = await committedOffsets(streams, group, topic).catch(() => ({}));
  return Object.values(offsets).reduce((a, o) => a + (BigInt(o) > 0n ? BigInt(o) : 0n), 0n);
}
const featuresCommitted = () => committed('processors.features', 'examples');
/** Records on a topic (the sum of its partitions' end offsets): moves when anything is published to it. */
async function topicEnd(topic: 'predictions' | 'examples'): Promise<bigint> {
  const ends = await streams.withAdmin((admin) => admin.fetchTopicOffsets(streams.topics.physical(topic)));
  return ends.reduce((a, e) => a + BigInt(e.high), 0n);
}
async function rowsInClickHouse(): Promise<number> {
  const rs = await clickhouse.query({ query: `SELECT count() AS n FROM ${identifier(config.clickhouseDatabase)}.examples`, format: 'JSONEachRow' });
  return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
}
async function redisExamples(): Promise<number> {
  // One pipeline on a single Redis, one per client's slot on a cluster (SlotPipelines).
  const pipelines = new SlotPipelines(redis);
  for (const w of workloads) {
    const key = featureKeys.counts(config.redisPrefix, w.clientId);
    pipelines.queue(key, (p) => p.hget(key, 'examples'));
  }
  try {
    return (await pipelines.exec('reading the example counters')).reduce<number>((a, v) => a + Number(v ?? 0), 0);
  } catch {
    return 0; // Redis away: nothing counted yet (firstIncrease reads again)
  }
}
/**
 * The first time `read` gives more than its first successful reading (Infinity: not within
 * GIVE_UP_MS). Called once the component is back: a baseline read before the kill would count
 * work acknowledged between that read and the kill as work done after the return.
 */
async function firstIncrease(read: () => Promise<number | bigint>, from?: number | bigint): Promise<number> {
  let base = from;
  return firstTime(async () => {
    const now = await read();
    if (base === undefined) {
      base = now;
      return false;
    }
    return now > base;
  }, GIVE_UP_MS, 100);
}

type Component = 'processors' | 'trainer' | 'server';
/** The running child of each replica of each component. */
const children: Record<Component, Array<EddyProcess | undefined>> = { processors: replicas.map(() => undefined), trainer: replicas.map(() => undefined), server: replicas.map(() => undefined) };
const everyChild = () => Object.entries(children).flatMap(([name, list]) => list.map((child, i) => ({ name: REPLICAS > 1 ? `${name}-${i}` : name, child })));
/** CPU seconds of each child process that has exited (read just before each kill), by component. */
const cpuSpent: Record<string, number> = { processors: 0, trainer: 0, server: 0 };
const cpuOf = (name: Component) => cpuSpent[name]! + children[name].reduce((a, c) => a + cpuSeconds(c?.child.pid), 0);
/** The output of each killed child, kept for BENCH_CHILD_LOG_DIR (the death a run is about is in it). */
const killedOutput: Array<{ name: string; output: string }> = [];
async function kill(name: Component, i = 0): Promise<number> {
  cpuSpent[name]! += cpuSeconds(children[name][i]?.child.pid);
  const at = Date.now();
  const child = children[name][i];
  await child?.kill9();
  if (child) killedOutput.push({ name: REPLICAS > 1 ? `${name}-${i}` : name, output: child.output() });
  return at;
}
const startProcessors = async (i = 0) => (children.processors[i] = await spawnEddy(envOf('processors', i), PROCESSORS, /processors running/, GIVE_UP_MS));
const startTrainer = async (i = 0) => (children.trainer[i] = await spawnEddy(envOf('trainer', i), ['trainer', 'run'], /trainer running/, GIVE_UP_MS));
const startServer = async (i = 0) => {
  const s = (children.server[i] = await spawnEddy(envOf('server', i), ['serve', '--no-kafka-predict'], /listening/, GIVE_UP_MS));
  await waitFor('the server ready', async () => (await fetch(`${serverUrls[i]}/readyz`)).status === 200, GIVE_UP_MS, 100);
  return s;
};
const everyReplica = <T>(start: (i: number) => Promise<T>) => Promise.all(replicas.map((i) => start(i)));
const manualRetrain = async (clientId: string) => {
  const eventId = randomUUID();
  await streams.producer.send('RetrainRequested', { eventId, clientId, occurredAt: Date.now(), reason: 'MANUAL', detail: 'bench:chaos', requestedBy: 'bench', dataAsOf: null });
  return eventId;
};
/** Every partition of the group's commit is past `base` (taken right after a kill: the dead member commits nothing more). */
async function movedPast(group: string, topic: 'examples' | 'retrain-requests', base: Record<number, string>): Promise<boolean> {
  const now = await committedOffsets(streams, group, topic);
  return Array.from({ length: config.partitions }, (_, p) => p).every((p) => BigInt(now[p] ?? '-1') > BigInt(base[p] ?? '-1'));
}
/** A child's JSON log lines (a line cut short by a kill is skipped). */
function logLines(child: EddyProcess | undefined): Array<{ time: number; msg: string; [field: string]: unknown }> {
  const lines = [];
  for (const line of (child?.output() ?? '').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as { time: number; msg: string });
    } catch {
      // cut short
    }
  }
  return lines;
}
/** The retrain-requests partitions a trainer owned after its last rebalance, from its 'partitions assigned' line. */
const trainerPartitions = (child: EddyProcess | undefined): number[] => logLines(child)
  .map((l) => (l.msg === 'partitions assigned' ? (l.assigned as Record<string, number[]>)['retrain-requests'] : undefined))
  .filter((p) => p !== undefined).at(-1) ?? [];
/** When (its own log time) the child of `current()` first logged a 'retrain started' line that `match` accepts; Infinity if not within `timeoutMs`. */
async function retrainStarted(current: () => EddyProcess | undefined, match: (line: { time: number; clientId?: unknown }) => boolean, timeoutMs: number): Promise<number> {
  let found: { time: number } | undefined;
  const polled = await firstTime(() => (found = logLines(current()).find((l) => l.msg === 'retrain started' && match(l))) !== undefined, timeoutMs, 50);
  return found?.time ?? polled;
}
const trainerAnswerAfter = (since: number) => firstTime(() => modelEvents.some((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && (e.value as { occurredAt: number }).occurredAt > since), GIVE_UP_MS, 50);

/** What the load saw so far: a fault's share is the difference across it. */
const snapshot = () => ({ failed: failedRequests, unacked: unacked.size, retried: retriedRequests, failedOver: failedOverRequests });
function record(f: Omit<Fault, 'failedRequests' | 'unacked' | 'retried' | 'failedOver'>, before: ReturnType<typeof snapshot>): void {
  const now = snapshot();
  const fault = { ...f, failedRequests: now.failed - before.failed, unacked: now.unacked - before.unacked, retried: now.retried - before.retried, failedOver: now.failedOver - before.failedOver };
  faults.push(fault);
  if (f.useful.some((u) => !Number.isFinite(u.at))) {
    for (const { name, child } of everyChild()) say(`${name} output (tail):\n${child?.output().slice(-1500) ?? ''}`);
  }
  say(`${f.component}: killed${f.takeover?.length ? `, the survivor took over: ${f.takeover.map((u) => `${u.what} ${secs(u.at - f.killedAt)}`).join('; ')}` : ''}, back after ${secs(f.returnedAt - f.killedAt)}, ready ${secs(f.readyAt - f.returnedAt)} after its return; ${f.useful.map((u) => `${u.what} ${secs(u.at - f.returnedAt)}`).join('; ')}; failed requests ${fault.failedRequests}, retried ${fault.retried} (on another server ${fault.failedOver}), unacknowledged events ${fault.unacked}${f.note ? ` (${f.note})` : ''}`);
}

type Cpu = { processors: number; trainer: number; server: number };
/** A progress line every 10 s: what was acknowledged, committed, stored and answered so far. */
const ticker = setInterval(() => {
  void (async () => {
    const [c, rows, counted] = await Promise.all([featuresCommitted().catch(() => -1n), rowsInClickHouse().catch(() => -1), redisExamples().catch(() => -1)]);
    say(`acknowledged ${acked.size} · processors committed ${c} · ClickHouse rows ${rows} · Redis count ${counted} · answered ${answered.length}, failed ${failedRequests} · models ${modelEvents.filter((e) => e.name === 'ModelPublished').length}`);
  })();
}, 10_000);

let reference: { seconds: number; events: number; predictions: number; cpu: Cpu } | undefined;
let report = '';
try {
  const modelsReader = streams.consumer({
    group: 'chaos-models-reader', topics: ['models'], fromBeginning: true,
    fetch: FETCH_EACH_EVENT, // it times the trainers' answers: each event at once
    handler: { handle: async (records) => { for (const r of records) modelEvents.push(r.event); } },
  });
  await modelsReader.start();
  say(REPLICAS > 1 ? `starting ${REPLICAS} processors, ${REPLICAS} trainers and ${REPLICAS} servers …` : 'starting processors, trainer and server …');
  // One replica of each at a time: six Node processes starting at once on two cores would each take a minute.
  for (const i of replicas) await Promise.all([startProcessors(i), startTrainer(i), startServer(i)]);
  serverFirstReady();
  say(`load: ${RATE} examples/s over ${CLIENTS} clients, ${PREDICT_RATE} predictions/s; waiting for a model of every client …`);
  const modelled = () => workloads.filter((w) => modelEvents.some((e) => e.name === 'ModelPublished' && e.value.clientId === w.clientId)).length;
  if (!Number.isFinite(await firstTime(() => modelled() === workloads.length, 3 * 60_000, 200))) {
    say(`only ${modelled()} of ${workloads.length} clients have a model after 3 minutes; going on (predictions of the others are answered without one)`);
  }
  await waitFor('the processors committing', async () => (await featuresCommitted()) > 0n, GIVE_UP_MS, 200);

  // Reference: a steady window before any fault.
  say(`${modelled()} of ${workloads.length} clients have a model; steady reference window of ${REFERENCE_MS / 1000} s …`);
  const refStart = { at: Date.now(), events: await featuresCommitted(), predictions: answered.length, cpu: { processors: cpuOf('processors'), trainer: cpuOf('trainer'), server: cpuOf('server') } };
  await sleep(REFERENCE_MS);
  reference = {
    seconds: (Date.now() - refStart.at) / 1000,
    events: Number((await featuresCommitted()) - refStart.events),
    predictions: answered.length - refStart.predictions,
    cpu: { processors: cpuOf('processors') - refStart.cpu.processors, trainer: cpuOf('trainer') - refStart.cpu.trainer, server: cpuOf('server') - refStart.cpu.server },
  };
  say(`reference: ${(reference.events / reference.seconds).toFixed(0)} events/s committed, ${(reference.predictions / reference.seconds).toFixed(0)} predictions/s answered`);
  const runStart = { cpu: { processors: cpuOf('processors'), trainer: cpuOf('trainer'), server: cpuOf('server') }, events: await featuresCommitted(), predictions: answered.length, at: Date.now() };

  const scenarios: Record<string, () => Promise<void>> = {
    processors: async () => {
      const before = snapshot();
      const killedAt = await kill('processors');
      const atKill = await committedOffsets(streams, 'processors.features', 'examples');
      const takeover: Fault['takeover'] = [];
      if (REPLICAS > 1) {
        // The dead member's partitions stay its own until its session expires; then the survivor takes them.
        takeover.push({ what: 'every partition committed again', at: await firstTime(() => movedPast('processors.features', 'examples', atKill), GIVE_UP_MS, 100) });
      }
      const beforeReturn = await featuresCommitted();
      const returnedAt = Date.now();
      const p = await startProcessors();
      // Its own first commit: its processed counter (events handled and committed) moving from 0.
      const at = REPLICAS > 1
        ? await firstTime(async () => (await counterOf(metricsPorts.processors[0]!, 'eddy_consumer_processed_total', /processors\.features/)) > 0, GIVE_UP_MS, 100)
        : await firstIncrease(featuresCommitted, beforeReturn);
      record({ component: 'processors', killedAt, returnedAt, readyAt: p.readyAt, useful: [{ what: 'first commit', at }], takeover, note: REPLICAS > 1 ? 'replica 0 away until the survivor took its partitions; its rejoining is a rebalance' : '' }, before);
    },
    trainer: async () => {
      const before = snapshot();
      // The partitions it owned: their requests are the survivor's to take over.
      const owned = new Set(trainerPartitions(children.trainer[0]));
      const killedAt = await kill('trainer');
      const takeover: Fault['takeover'] = [];
      if (REPLICAS > 1) {
        // Work on every partition (a MANUAL retrain each). The survivor gets the dead one's
        // partitions when its session expires; it starts their requests once the retrain in its
        // hands (if any) is done: a trainer trains one request at a time.
        const theirs = (clientId: unknown) => typeof clientId === 'string' && owned.has(partitionOf(clientId));
        await Promise.all(clientPerPartition().map((c) => manualRetrain(c)));
        const taken = await retrainStarted(() => children.trainer[1], (l) => l.time > killedAt && theirs(l.clientId), GIVE_UP_MS);
        const answeredThere = await firstTime(() => modelEvents.some((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && (e.value as { occurredAt: number }).occurredAt > killedAt && theirs(e.value.clientId)), GIVE_UP_MS, 50);
        takeover.push({ what: `a retrain on its partitions (${[...owned].join(', ')}) started`, at: taken }, { what: 'answered', at: answeredThere });
      }
      const returnedAt = Date.now();
      const t = await startTrainer();
      if (REPLICAS > 1) await Promise.all(clientPerPartition().map((c) => manualRetrain(c)));
      else await manualRetrain(workloads[0]!.clientId);
      // Its first request taken (training begins) and answered; twice the usual patience for the answer:
      // its first request may be one of a backlog that the survivor did not get to, trained from scratch.
      const [taken, at] = await Promise.all([
        retrainStarted(() => children.trainer[0], (l) => l.time >= returnedAt, GIVE_UP_MS),
        REPLICAS > 1
          ? firstTime(async () => (await counterOf(metricsPorts.trainer[0]!, 'eddy_trainer_outcomes_total')) > 0, 2 * GIVE_UP_MS, 100)
          : trainerAnswerAfter(returnedAt),
      ]);
      const answer = modelEvents.find((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && (e.value as { occurredAt: number }).occurredAt > returnedAt);
      record({
        component: 'trainer', killedAt, returnedAt, readyAt: t.readyAt, takeover,
        useful: [{ what: 'first retrain started', at: taken }, { what: REPLICAS > 1 ? 'its first answer' : `first answer (${answer?.name ?? 'none'})`, at }],
        note: REPLICAS > 1 ? 'a MANUAL retrain on every partition at the kill; replica 0 away until the survivor answered there; at its ready line a MANUAL retrain on every partition again' : 'a MANUAL retrain of one client sent at its ready line',
      }, before);
    },
    server: async () => {
      const before = snapshot();
      const killedAt = await kill('server');
      const takeover: Fault['takeover'] = [];
      if (REPLICAS > 1) {
        // A request that failed on the dead server (reset, refused) answered by the other one.
        takeover.push({ what: 'first request failed on it answered by the other', at: await firstTime(() => answered.some((a) => a.at > killedAt && a.failedOn.includes(serverUrls[0]!)), GIVE_UP_MS, 20) });
        await sleep(Math.max(0, killedAt + DOWN_MS - Date.now()));
      }
      const returnedAt = Date.now();
      const s = await startServer();
      const [at, publishedAt] = await Promise.all([
        firstTime(() => answered.some((a) => a.at > returnedAt && a.server === serverUrls[0]), GIVE_UP_MS, 20),
        firstTime(async () => (await counterOf(metricsPorts.server[0]!, 'eddy_server_predictions_published_total')) > 0, GIVE_UP_MS, 50),
      ]);
      record({
        component: 'server', killedAt, returnedAt, readyAt: s.readyAt, takeover,
        useful: [{ what: 'first 200', at }, { what: 'first PredictionMade', at: publishedAt }],
        note: REPLICAS > 1 ? `replica 0 away ${DOWN_MS / 1000} s; the typed client sent its requests to the other` : 'one replica: requests fail until it is back',
      }, before);
    },
    broker: async () => {
      const before = snapshot();
      const killedAt = Date.now();
      await kafka.kill();
      await sleep(DOWN_MS);
      const returnedAt = Date.now();
      await kafka.start();
      const readyAt = Date.now();
      const [commitAt, ackAt, publishedAt] = await Promise.all([
        firstIncrease(featuresCommitted),
        firstTime(() => lastAckAt > readyAt, GIVE_UP_MS, 20),
        firstIncrease(() => topicEnd('predictions')),
      ]);
      record({ component: 'broker', killedAt, returnedAt, readyAt, useful: [{ what: 'processors first commit', at: commitAt }, { what: 'load producer first ack', at: ackAt }, { what: 'server first PredictionMade', at: publishedAt }], note: `away ${DOWN_MS / 1000} s; the server answered throughout (it needs no broker to answer)` }, before);
    },
    registry: async () => {
      const before = snapshot();
      const killedAt = Date.now();
      await registry.kill();
      const duringFrom = await featuresCommitted();
      await sleep(DOWN_MS);
      const returnedAt = Date.now();
      const processedWhileAway = Number((await featuresCommitted()) - duringFrom);
      await registry.start();
      const readyAt = Date.now();
      const at = await firstTime(async () => {
        await EventCodec.connect({ url: registry.endpoint, connectAttempts: 1 });
        return true;
      }, GIVE_UP_MS, 100);
      record({ component: 'registry', killedAt, returnedAt, readyAt, useful: [{ what: 'a new codec registers every schema', at }], note: `away ${secs(readyAt - killedAt)} in all (its start-up included); the processors committed ${processedWhileAway} events in the ${DOWN_MS / 1000} s it was down (cached schema ids)` }, before);
    },
    ClickHouse: async () => {
      const before = snapshot();
      const killedAt = Date.now();
      await chServer.kill();
      await sleep(DOWN_MS);
      const returnedAt = Date.now();
      await chServer.start();
      const readyAt = Date.now();
      const at = await firstIncrease(rowsInClickHouse);
      record({ component: 'ClickHouse', killedAt, returnedAt, readyAt, useful: [{ what: 'first new row', at }], note: `away ${DOWN_MS / 1000} s` }, before);
    },
    Redis: async () => {
      const before = snapshot();
      const killedAt = Date.now();
      await redisServer.kill();
      const defaultedBefore = answered.filter((a) => a.defaulted).length;
      await sleep(DOWN_MS);
      const returnedAt = Date.now();
      await redisServer.start();
      const readyAt = Date.now();
      const at = await firstIncrease(redisExamples);
      record({ component: 'Redis', killedAt, returnedAt, readyAt, useful: [{ what: 'first counter moved', at }], note: `away ${DOWN_MS / 1000} s; ${answered.filter((a) => a.defaulted).length - defaultedBefore} predictions answered with default features meanwhile` }, before);
    },
  };
  const order = (process.env.BENCH_FAULTS ?? 'processors,trainer,server,registry,ClickHouse,Redis,broker').split(',').map((s) => s.trim()).filter(Boolean);
  for (const name of order) {
    if (!scenarios[name]) throw new Error(`BENCH_FAULTS: no fault '${name}' (${Object.keys(scenarios).join(', ')})`);
    say(`kill -9: ${name} …`);
    await scenarios[name]!();
    // Recovered means still working afterwards, not one commit: the processors' progress over the steady pause.
    const from = { at: Date.now(), committed: await featuresCommitted().catch(() => -1n) };
    await sleep(STEADY_MS);
    const fault = faults[faults.length - 1]!;
    const moved = Number((await featuresCommitted().catch(() => -1n)) - from.committed);
    fault.after = `${(moved / ((Date.now() - from.at) / 1000)).toFixed(0)} events/s`;
    if (moved <= 0) fault.after = `**0 events/s: stalled**`;
    say(`${name}: processors committed ${moved} events in the ${((Date.now() - from.at) / 1000).toFixed(0)} s after`);
  }

  // ---------------------------------------------------------------- drain and count
  const run = {
    seconds: (Date.now() - runStart.at) / 1000,
    events: Number((await featuresCommitted()) - runStart.events),
    predictions: answered.length - runStart.predictions,
    cpu: { processors: cpuOf('processors') - runStart.cpu.processors, trainer: cpuOf('trainer') - runStart.cpu.trainer, server: cpuOf('server') - runStart.cpu.server },
  };
  say('stopping the load; draining …');
  sendingExamples = false;
  await Promise.all(loaders);
  loading = false;
  await predictor;
  await waitFor('the last requests', () => inFlight === 0, 15_000, 50);
  const drainStart = Date.now();
  const drained = await firstTime(async () =>
    (await caughtUp(streams, 'processors.features', ['examples'])) && (await caughtUp(streams, 'processors.analytics', ['predictions'])), DRAIN_MS, 500);
  let drainNote = `caught up ${secs(drained - drainStart)} after the load stopped`;
  if (!Number.isFinite(drained)) {
    // What an operator would do: restart them. Said in the report; the counts are after it.
    const dump = path.join(os.tmpdir(), `eddy-chaos-processors-${Date.now()}.log`);
    fs.writeFileSync(dump, children.processors.map((c) => c?.output() ?? '').join('\n---- next replica ----\n'));
    say(`the processors did not catch up within ${DRAIN_MS / 1000} s (their whole output: ${dump}); tail:\n${children.processors.map((c) => c?.output().slice(-3000)).join('\n----\n')}\nrestarting them (kill -9, start) and draining again …`);
    for (const i of replicas) await kill('processors', i);
    const restartAt = Date.now();
    await everyReplica(startProcessors);
    const again = await firstTime(async () =>
      (await caughtUp(streams, 'processors.features', ['examples'])) && (await caughtUp(streams, 'processors.analytics', ['predictions'])), DRAIN_MS, 500);
    drainNote = `**did not catch up within ${DRAIN_MS / 1000} s** after the load stopped (stalled: see the fault table); after a restart by hand: ${Number.isFinite(again) ? `caught up in ${secs(again - restartAt)}` : `still not caught up after ${DRAIN_MS / 1000} s`}`;
  }
  // BENCH_CHILD_LOG_DIR=<dir>: each child's whole output, the killed ones' too (`<name>.killed-<n>.log`;
  // with BENCH_CHILD_LOG_LEVEL=info, their start-up in detail).
  const logDir = process.env.BENCH_CHILD_LOG_DIR;
  if (logDir) {
    fs.mkdirSync(logDir, { recursive: true });
    for (const { name, child } of everyChild()) fs.writeFileSync(path.join(logDir, `${name}.log`), child?.output() ?? '');
    killedOutput.forEach(({ name, output }, n) => fs.writeFileSync(path.join(logDir, `${name}.killed-${n + 1}.log`), output));
  }
  // The server's publisher flushes every 50 ms; its ClickHouse rows come through the analytics group.
  await sleep(2000);
  say(`drain: ${drainNote}; reading the log …`);
  const log = await readLog(streams, ['examples', 'predictions', 'dead-letters']);
  const examplesInLog = log.filter((e) => e.name === 'LabeledExample').map((e) => e.value.eventId);
  const distinctInLog = new Set(examplesInLog);
  const lost = [...acked].filter((id) => !distinctInLog.has(id));
  const unackedInLog = [...unacked].filter((id) => distinctInLog.has(id)).length;
  // Request id -> the event ids of its PredictionMade records. A replayed spool re-sends an event
  // Kafka may already hold under the same eventId (at-least-once, docs/reliability.md): readers
  // dedupe those. Two event ids for one request would be a prediction logged twice.
  const predictionIds = new Map<string, Set<string>>();
  let predictionRecords = 0;
  for (const e of log) if (e.name === 'PredictionMade') {
    predictionRecords++;
    const ids = predictionIds.get(e.value.requestId) ?? new Set<string>();
    ids.add(e.value.eventId);
    predictionIds.set(e.value.requestId, ids);
  }
  const missing = answered.filter((a) => !predictionIds.has(a.requestId));
  const loggedTwice = [...predictionIds.values()].filter((ids) => ids.size > 1).length;
  const predictionEvents = [...predictionIds.values()].reduce((a, ids) => a + ids.size, 0);
  const deadLetters = new Map<string, number>();
  for (const e of log) if (e.name === 'DeadLetter') {
    const k = `${e.value.consumerGroup.slice(config.topicPrefix.length)} ${e.value.errorCode}: ${e.value.reason.slice(0, 120)}`;
    deadLetters.set(k, (deadLetters.get(k) ?? 0) + 1);
  }
  const ch = async (q: string) => Number((await (await clickhouse.query({ query: q, format: 'JSONEachRow' })).json<{ n: string }>())[0]?.n ?? 0);
  const db = identifier(config.clickhouseDatabase);
  const chRaw = await ch(`SELECT count() AS n FROM ${db}.examples`);
  const chDistinct = await ch(`SELECT uniqExact(event_id) AS n FROM ${db}.examples`);
  const chFinal = await ch(`SELECT count() AS n FROM ${db}.examples FINAL`);
  const chPredRaw = await ch(`SELECT count() AS n FROM ${db}.predictions`);
  const chPredDistinct = await ch(`SELECT uniqExact(event_id) AS n FROM ${db}.predictions`);
  const inRedis = await redisExamples();
  // Where a loss is: the examples topic's offsets with no ClickHouse row, as ranges per partition
  // (each row carries its partition and offset). A record sent twice shows here too (one row).
  const noRow: string[] = [];
  if (chDistinct < distinctInLog.size) {
    const rows = await (await clickhouse.query({ query: `SELECT DISTINCT kafka_partition AS p, kafka_offset AS o FROM ${db}.examples`, format: 'JSONEachRow' })).json<{ p: number; o: string }>();
    const have = new Set(rows.map((r) => `${r.p}:${r.o}`));
    for (const e of await streams.withAdmin((admin) => admin.fetchTopicOffsets(streams.topics.physical('examples')))) {
      let from = -1n;
      for (let o = BigInt(e.low); o <= BigInt(e.high); o++) {
        const missingHere = o < BigInt(e.high) && !have.has(`${e.partition}:${o}`);
        if (missingHere && from < 0n) from = o;
        if (!missingHere && from >= 0n) {
          noRow.push(`p${e.partition} ${from}–${o - 1n} (${o - from})`);
          from = -1n;
        }
      }
    }
  }
  // Model versions: each (client, version) published once; each retrain request answered with one version.
  const published = modelEvents.filter((e) => e.name === 'ModelPublished').map((e) => e.value as { clientId: string; modelVersion: string; retrainEventId: string });
  const versionKeys = new Map<string, Set<string>>();
  for (const p of published) {
    const k = `${p.clientId}/${p.modelVersion}`;
    versionKeys.set(k, (versionKeys.get(k) ?? new Set()).add(p.retrainEventId));
  }
  const versionsForTwoRequests = [...versionKeys.values()].filter((s) => s.size > 1).length;
  const republished = published.length - versionKeys.size;
  const byRequest = new Map<string, Set<string>>();
  for (const e of modelEvents) {
    if (e.name !== 'ModelPublished' && e.name !== 'ModelRejected') continue;
    const v = e.value as { retrainEventId: string; modelVersion?: string; previousVersion?: string | null; searched?: boolean; cvMacroF1?: number | null };
    // A quick first model (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES) is followed, by design, by the searched version answering the same request.
    if (e.name === 'ModelPublished' && v.previousVersion === null && v.searched === false && v.cvMacroF1 === null) continue;
    byRequest.set(v.retrainEventId, (byRequest.get(v.retrainEventId) ?? new Set()).add(e.name === 'ModelPublished' ? v.modelVersion! : 'rejected'));
  }
  const requestsTwoVersions = [...byRequest.values()].filter((s) => s.size > 1).length;
  // Answers per request: more than one is a request trained twice (two versions) or a version announced again after a crash.
  const answersPerRequest = new Map<string, number>();
  for (const e of modelEvents) {
    if (e.name !== 'ModelPublished' && e.name !== 'ModelRejected') continue;
    const id = (e.value as { retrainEventId: string | null }).retrainEventId;
    if (id) answersPerRequest.set(id, (answersPerRequest.get(id) ?? 0) + 1);
  }
  const answeredMoreThanOnce = [...answersPerRequest.values()].filter((n) => n > 1).length;
  const rejected = modelEvents.filter((e) => e.name === 'ModelRejected').length;
  // Attribute each missing PredictionMade to the fault whose window (10 s before the kill to 10 s after the first useful work) holds its answer.
  const windowOf = (at: number) => faults.find((f) => at >= f.killedAt - 10_000 && at <= Math.max(...f.useful.map((u) => (Number.isFinite(u.at) ? u.at : f.readyAt))) + 10_000)?.component ?? 'no fault';
  const missingBy = new Map<string, number>();
  for (const m of missing) missingBy.set(windowOf(m.at), (missingBy.get(windowOf(m.at)) ?? 0) + 1);
  const defaulted = answered.filter((a) => a.defaulted).length;

  // ---------------------------------------------------------------- report
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const ok = (good: boolean) => (good ? 'ok' : '**NO**');
  const ratio = (cpu: number, n: number, refCpu: number, refN: number) => (n > 0 && refN > 0 && refCpu > 0 ? ((cpu / n) / (refCpu / refN)).toFixed(2) : 'n/a');
  const perUnit = (cpu: number, n: number, unit: number) => (n > 0 ? ((cpu * 1000 * unit) / n).toFixed(0) : 'n/a');
  const usefulCell = (f: Fault, from: 'returnedAt' | 'readyAt') => f.useful.map((u) => `${u.what}: ${from === 'returnedAt' ? '**' : ''}${secs(u.at - f[from])}${from === 'returnedAt' ? '**' : ''}`).join('; ');
  const lines = [
    `Command: \`npm run bench:chaos\` (BENCH_REPLICAS=${REPLICAS}, BENCH_RATE=${RATE}, BENCH_PREDICT_RATE=${PREDICT_RATE}, ${CLIENTS} clients, ${config.partitions} partitions, away ${DOWN_MS / 1000} s) · ${new Date().toISOString()} · ${machine}`,
    REPLICAS > 1
      ? `${REPLICAS} processors (shared consumer groups), ${REPLICAS} trainers (one group) and ${REPLICAS} servers (own ports and spools); predictions through the typed client given every server's URL (round-robin, failover; default retries: 3, 5 s per attempt). The process faults kill replica 0; "takeover" is from the kill to the survivor's first useful work in its place, "back" from replica 0's return to its own.`
      : 'One of each; predictions through the typed client (default retries: 3, 5 s per attempt).',
    `Load average (1/5/15 min) at start: ${loadBefore}; at end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} (2 cores, shared with unrelated runs). Run: ${secs(Date.now() - t0)}.`,
    '',
    '| fault (kill -9) | the survivor\'s takeover (kill → its first useful work in the dead one\'s place) | back → ready | back → first useful work | ready → first useful work | processors after it | requests failed meanwhile | requests retried / answered by another server | sends not acknowledged | notes |',
    '|---|---|---:|---|---|---:|---:|---:|---:|---|',
    ...faults.map((f) => `| ${f.component} | ${f.takeover?.length ? f.takeover.map((u) => `${u.what}: **${secs(u.at - f.killedAt)}**`).join('; ') : '—'} | ${secs(f.readyAt - f.returnedAt)} | ${usefulCell(f, 'returnedAt')} | ${usefulCell(f, 'readyAt')} | ${f.after ?? ''} | ${f.failedRequests} | ${f.retried} / ${f.failedOver} | ${f.unacked} | ${f.note} |`),
    '',
    '| count | value | check |',
    '|---|---:|---|',
    `| drain (processors at the end of the examples and predictions topics) | | ${drainNote} |`,
    `| LabeledExample acknowledged to the producer | ${acked.size} | |`,
    `| acknowledged but not on the topic (lost) | ${lost.length} | ${ok(lost.length === 0)} |`,
    `| on the topic: records / distinct event ids | ${examplesInLog.length} / ${distinctInLog.size} | ${ok(examplesInLog.length === distinctInLog.size)} (a redelivered send would show as records > distinct) |`,
    `| sends that failed (not acknowledged) / of them on the topic anyway | ${unacked.size} / ${unackedInLog} | |`,
    `| ClickHouse examples: raw rows / distinct event ids / FINAL | ${chRaw} / ${chDistinct} / ${chFinal} | ${ok(chDistinct === distinctInLog.size && chFinal === distinctInLog.size)} (raw − distinct = ${chRaw - chDistinct} rows inserted again after a crash; they collapse at merge, readers use FINAL or uniqExact)${noRow.length ? `; offsets with no row: ${noRow.slice(0, 10).join(', ')}${noRow.length > 10 ? ` and ${noRow.length - 10} more ranges` : ''}` : ''} |`,
    `| Redis example counters (sum over clients) | ${inRedis} | ${ok(inRedis === distinctInLog.size)} |`,
    `| predictions answered 200 | ${answered.length} | |`,
    `| … of them with no PredictionMade on the topic | ${missing.length} | ${ok(missing.length === 0)}${missing.length ? ` (${[...missingBy].map(([k, n]) => `${n} around the ${k} kill`).join(', ')})` : ''} |`,
    `| PredictionMade on the topic: records / distinct event ids | ${predictionRecords} / ${predictionEvents} | ${predictionRecords > predictionEvents ? `${predictionRecords - predictionEvents} sent again with their eventId (a spool replayed after the server kill); readers dedupe them` : 'no record sent twice'} |`,
    `| request ids with more than one PredictionMade event id | ${loggedTwice} | ${ok(loggedTwice === 0)} |`,
    `| ClickHouse predictions: raw rows / distinct event ids | ${chPredRaw} / ${chPredDistinct} | ${ok(chPredDistinct === predictionEvents)} (distinct = the topic's distinct event ids) |`,
    `| predictions answered with default features (Redis timeout or away) | ${defaulted} (${((100 * defaulted) / Math.max(1, answered.length)).toFixed(1)} %) | |`,
    `| requests answered only after a retry / of them by another server than the first tried | ${retriedRequests} / ${failedOverRequests} | |`,
    `| requests that failed (by cause) | ${failedRequests} | ${REPLICAS > 1 ? `${ok(failedRequests === 0)} ` : ''}${[...failures].filter(([k]) => !k.startsWith('not sent')).map(([k, n]) => `${k}: ${n}`).join(', ') || '—'}${failures.has('not sent (100 in flight)') ? `; besides, ${failures.get('not sent (100 in flight)')} requests not sent while 100 were in flight` : ''} |`,
    `| ModelPublished / distinct (client, version) / ModelRejected | ${published.length} / ${versionKeys.size} / ${rejected} | ${ok(versionsForTwoRequests === 0 && requestsTwoVersions === 0)} (${republished} re-announced; ${versionsForTwoRequests} versions answering two requests; ${requestsTwoVersions} requests answered by two versions) |`,
    `| retrain requests answered / answered more than once (by two versions; the same version announced again) | ${answersPerRequest.size} / ${answeredMoreThanOnce} (${requestsTwoVersions}; ${answeredMoreThanOnce - requestsTwoVersions}) | ${ok(requestsTwoVersions === 0)}${answeredMoreThanOnce > requestsTwoVersions ? ' (an announcement again is a trainer killed after storing a version and before committing its request: the next one re-announces it, by design)' : ''} |`,
    `| dead letters | ${[...deadLetters.values()].reduce((a, b) => a + b, 0)} | ${[...deadLetters].map(([k, n]) => `${n} × ${k}`).join('; ') || '—'} |`,
    '',
    '| CPU per unit of work | steady reference (no fault, first) | whole fault run | ratio |',
    '|---|---:|---:|---:|',
    ...(reference ? [
      `| window | ${reference.seconds.toFixed(0)} s, ${reference.events} events, ${reference.predictions} predictions | ${run.seconds.toFixed(0)} s, ${run.events} events, ${run.predictions} predictions | |`,
      `| processors: CPU ms per 1,000 examples committed | ${perUnit(reference.cpu.processors, reference.events, 1000)} | ${perUnit(run.cpu.processors, run.events, 1000)} | ${ratio(run.cpu.processors, run.events, reference.cpu.processors, reference.events)} |`,
      `| server: CPU ms per 100 predictions answered | ${perUnit(reference.cpu.server, reference.predictions, 100)} | ${perUnit(run.cpu.server, run.predictions, 100)} | ${ratio(run.cpu.server, run.predictions, reference.cpu.server, reference.predictions)} |`,
      `| trainer: CPU s per minute | ${((60 * reference.cpu.trainer) / reference.seconds).toFixed(1)} | ${((60 * run.cpu.trainer) / run.seconds).toFixed(1)} | ${ratio(run.cpu.trainer, run.seconds, reference.cpu.trainer, reference.seconds)} |`,
    ] : []),
  ];
  report = lines.join('\n');
} finally {
  clearInterval(ticker);
  loading = false;
  serverFirstReady();
  sendingExamples = false;
  await Promise.allSettled(loaders);
  await predictor.catch(() => undefined);
  await Promise.allSettled(everyChild().map(({ child }) => child?.kill9()));
  for (const c of clients.values()) await c.close().catch(() => undefined);
  redis.disconnect();
  await clickhouse.close().catch(() => undefined);
  // Everything lived on the private broker, Redis and ClickHouse: removing them removes it all.
  await streams.close().catch((err: unknown) => say(`close: ${String(err)}`));
  await Promise.allSettled([registry.cleanup(), redisServer.cleanup(), chServer.cleanup()]);
  await kafka.cleanup();
  fs.rmSync(storeDir, { recursive: true, force: true });
}
process.stdout.write(`${report}\n`);
if (process.argv.includes('--write')) {
  fs.mkdirSync('docs/benchmarks', { recursive: true });
  fs.writeFileSync('docs/benchmarks/chaos.md', `## Fault injection (\`npm run bench:chaos\`)\n\n${report}\n`);
}
process.exit(0);
