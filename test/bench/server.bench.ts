/**
 * `npm run bench:server`: the prediction server under load, against the real stack.
 *
 * The server runs in this process (as in production: HTTP, model manager, Redis features with the
 * production 5 ms deadline, every prediction published to Kafka as PredictionMade). The load
 * generator is autocannon in a CHILD process (`server.bench.ts load ...`), so it does not share
 * the server's event loop — but it does share the machine's 2 cores, as do Kafka, Redis,
 * ClickHouse and whatever else runs here. Latency percentiles are exact (every response time is
 * kept), not autocannon's 1 ms-resolution histogram. A "fixed rate" is autocannon's rate limit:
 * each second's requests sent back to back, then a wait (see runPaced; BENCH_SERVER_PACING=paced
 * paces them instead).
 *
 * Scenarios: cold load of every client model once (10 connections, each request for a client
 * not yet loaded); max throughput over 1,000 and over 10,000 loaded client models; a fixed
 * 5,000 req/s over 10,000 models; p99 at a fixed rate over 1,000 models steady vs while new
 * versions of those models are being published and hot-swapped; p99 at a fixed rate and max
 * throughput over 1,000 models with and without `explain: true` (the cost of explanations);
 * resident memory per model.
 *
 * Finally, A/B in the same run, each variant on a fresh server over the same models: the default
 * (PredictionMade produced by the publisher thread, artifacts loaded by the loader thread), loads
 * on the request thread, the publisher on the request thread, the PredictionMade spool off (reference) and with fsync,
 * entity states not kept (EDDY_SERVER_FEATURE_CACHE_ENTRIES=0: a Redis read per prediction);
 * each at the fixed rate steady, at the fixed rate during a reload, and at max throughput, the
 * steady and max-throughput runs each right after the same load on the bare floor, so that each
 * variant's CPU per request is also reported as a multiple of a floor measured minutes, not
 * quarters of an hour, from it.
 *
 * After the cold loads (BENCH_SERVER_FLOOR=0 skips it; BENCH_SERVER_ONLY=floor runs only it, over 1,000 clients):
 * Eddy against the floor, a bare Fastify route with the same body schema answering a fixed
 * prediction in a process of its own, in alternating rounds (BENCH_SERVER_FLOOR_ROUNDS, default
 * 3): CPU per request of each and the ratio, bytes allocated per prediction, p99 and the share of
 * defaulted features and of entity states answered without Redis at the fixed rate, batch predict
 * throughput (10 and 100 per request) against the floor's batch route.
 * BENCH_SERVER_PROFILE=<dir> adds a profiled run (CPU and allocation sampling) written there
 * (BENCH_SERVER_PROFILE_BATCH=<n>: of /predict/batch with n items per request).
 * BENCH_SERVER_ENTITIES=0 sends requests that name no entity (no real-time feature read).
 * BENCH_SERVER_PACING=paced sends the fixed-rate loads paced, open loop (runPaced), instead of
 * with autocannon's per-second rate limit.
 * The Kafka predict path (kafkaPathSection): BENCH_SERVER_KAFKA_REQUESTS requests (default 50,000;
 * 0 skips it) over 1,000 clients, then over 10; BENCH_SERVER_ONLY=kafka runs only it.
 *
 * Env: BENCH_SERVER_CLIENTS (default 10000), BENCH_SERVER_SECONDS (default 10),
 * BENCH_SERVER_RATE (default 5000), BENCH_SERVER_FEATURES (stored features per model, default 3000),
 * BENCH_SERVER_RELOAD_ROUNDS (default 3), BENCH_SERVER_AB (0 skips the A/B).
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PerformanceObserver } from 'node:perf_hooks';
import v8 from 'node:v8';
import { fileURLToPath } from 'node:url';

const TEXTS = [
  'My laptop will not boot after the update this morning, the screen stays black',
  'VPN keeps disconnecting when I work from home, cannot reach the intranet',
  'I did not receive my payslip for March and the bonus seems to be missing',
  'Please order a second monitor and a docking station for the new starter',
  'Outlook asks for my password every five minutes since yesterday',
  'The badge reader at the north entrance does not accept my card any more',
];

interface LoadOptions {
  url: string;
  key: string;
  clients: number;
  mode: 'random' | 'sequence';
  connections: number;
  durationS?: number;
  amount?: number;
  rate?: number;
  /** Ask for explanations (models/explain.ts) with every prediction. */
  explain?: boolean;
  /** POST /predict/batch with this many items per request instead of /predict. */
  batch?: number;
}

interface LoadResult {
  /** Responses counted (a paced load's warm-up excluded). */
  requests: number;
  /** Responses to the warm-up (paced loads): part of the server's work, so of its CPU per request. */
  warmup?: number;
  seconds: number;
  rps: number;
  non2xx: number;
  errors: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** BENCH_SERVER_ENTITIES=0: requests name no requester or channel, so no real-time feature read (the Redis stage's cost, by difference). */
const NO_ENTITIES = process.env.BENCH_SERVER_ENTITIES === '0';

/** The i-th request of a load (HTTP body item or PredictionRequested): one of TEXTS, three requesters, two channels. */
function requestItem(i: number): { text: string; metadata: Record<string, string> } {
  return { text: TEXTS[i % TEXTS.length]!, metadata: NO_ENTITIES ? {} : { requester: `user${i % 3}`, channel: i % 2 ? 'chat' : 'email' } };
}

/**
 * BENCH_SERVER_PACING=paced: fixed-rate loads are sent by runPaced (open loop) instead of
 * autocannon's per-second rate limit (see runPaced for what each measures).
 */
const PACED = process.env.BENCH_SERVER_PACING === 'paced';

/** Child mode: drive the server (autocannon, or runPaced at a fixed rate) and print one JSON line with the result. */
async function runLoad(opts: LoadOptions): Promise<void> {
  const bodies = opts.batch
    ? TEXTS.map((_, i) => JSON.stringify({ items: Array.from({ length: opts.batch! }, (_, j) => requestItem(i + j)) }))
    : TEXTS.map((_, i) => JSON.stringify({ ...requestItem(i), ...(opts.explain ? { explain: true } : {}) }));
  const route = opts.batch ? 'predict/batch' : 'predict';
  let seq = 0;
  const nextClient = () => (opts.mode === 'sequence' ? seq++ % opts.clients : Math.floor(Math.random() * opts.clients));
  if (opts.rate && PACED) {
    const result = await runPaced(opts, opts.rate, () => {
      const i = nextClient();
      return { path: `/v1/clients/c${i}/${route}`, body: bodies[i % bodies.length]! };
    });
    process.stdout.write(JSON.stringify(result) + '\n');
    return;
  }
  const { default: autocannon } = await import('autocannon');
  const latencies: number[] = [];
  const started = performance.now();
  const instance = autocannon({
    url: opts.url,
    connections: opts.connections,
    pipelining: 1,
    duration: opts.durationS ?? 10,
    amount: opts.amount,
    overallRate: opts.rate,
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${opts.key}` },
    requests: [{
      setupRequest: (req: Record<string, unknown>) => {
        const i = nextClient();
        return { ...req, path: `/v1/clients/c${i}/${route}`, body: bodies[i % bodies.length] };
      },
    }],
  } as never);
  (instance as unknown as NodeJS.EventEmitter).on('response', (_client: unknown, _status: number, _bytes: number, responseTime: number) => {
    latencies.push(responseTime);
  });
  const result = (await instance) as unknown as { non2xx: number; errors: number; timeouts: number };
  const seconds = (performance.now() - started) / 1000;
  process.stdout.write(JSON.stringify(summarise(latencies, seconds, result.non2xx, result.errors + result.timeouts)) + '\n');
}

/** Percentiles of response times (ms, every one kept) over a run of `seconds`. */
function summarise(latencies: number[], seconds: number, non2xx: number, errors: number): LoadResult {
  const sorted = Float64Array.from(latencies).sort();
  return {
    requests: sorted.length, seconds, rps: sorted.length / seconds, non2xx, errors,
    p50: percentile(sorted, 50), p90: percentile(sorted, 90), p99: percentile(sorted, 99), p999: percentile(sorted, 99.9), max: sorted.at(-1) ?? NaN,
  };
}

/**
 * A fixed rate, paced (open loop): request i is due at start + i / rate and is issued then, on a
 * timer of about 1 ms (Node's shortest: ~5 requests at a time at 5,000/s), to `opts.connections`
 * keep-alive connections; undici's Pool queues it while every connection is busy. Its latency is
 * counted from when it was issued, queueing included, so a stall of the server counts for every
 * request issued during it (no coordinated omission), while the timer's own lateness (up to a
 * millisecond, the generator's) does not.
 *
 * What autocannon's own rate (the default) measures instead: each connection sends its share of
 * a second's requests back to back from the start of every second, then waits for the next one,
 * so "5,000 req/s" against a server that can do 7,500 is two thirds of each second at saturation
 * and one third idle, and its p99 is saturation's (docs/benchmarks/server.md, "What the fixed
 * rate measures").
 */
async function runPaced(opts: LoadOptions, rate: number, next: () => { path: string; body: string }): Promise<LoadResult> {
  const { Pool } = await import('undici');
  const pool = new Pool(opts.url, { connections: opts.connections, pipelining: 1 });
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${opts.key}` };
  // Warm-up, not counted: the connections opened and the JIT warm on both sides, requests sent
  // back to back on every connection (paced from a cold start, the first milliseconds' backlog
  // would take seconds to drain and be measured as the server's).
  const warmup = Math.round(rate);
  let warmed = 0;
  const post = () => {
    const { path: p, body } = next();
    return pool.request({ path: p, method: 'POST', headers, body });
  };
  await Promise.all(Array.from({ length: opts.connections }, async () => {
    while (warmed++ < warmup) await (await post()).body.dump();
  }));
  const total = Math.round(rate * (opts.durationS ?? 10));
  const gapMs = 1000 / rate;
  const latencies: number[] = [];
  let non2xx = 0;
  let errors = 0;
  const inFlight = new Set<Promise<void>>();
  const send = () => {
    const issued = performance.now();
    const done: Promise<void> = post().then(
      async (res) => {
        await res.body.dump();
        latencies.push(performance.now() - issued);
        if (res.statusCode < 200 || res.statusCode > 299) non2xx++;
      },
      () => {
        errors++;
      },
    ).finally(() => inFlight.delete(done));
    inFlight.add(done);
  };
  const started = performance.now();
  let sent = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      const dueNow = Math.min(total, Math.floor((now - started) / gapMs) + 1);
      for (; sent < dueNow; sent++) send();
      if (sent >= total) resolve();
      else setTimeout(tick, Math.max(0, started + sent * gapMs - performance.now()));
    };
    tick();
  });
  await Promise.all(inFlight);
  const seconds = (performance.now() - started) / 1000;
  await pool.close();
  return { ...summarise(latencies, seconds, non2xx, errors), warmup };
}

/**
 * Child mode: `n` PredictionRequested over clients c0..c(clients-1), produced as fast as the
 * producer goes (chunks of 1,000), after printing one line once connected. Its own process, so
 * that producing costs the server's process nothing.
 */
async function runKafkaLoad(opts: { config: import('../../common/config.ts').EddyConfig; n: number; clients: number }): Promise<void> {
  const { connectStreams } = await import('../../streams/index.ts');
  const streams = await connectStreams(opts.config, 'bench-kafka-load', { ensureTopics: false });
  process.stdout.write('connected\n');
  const now = Date.now();
  for (let i = 0; i < opts.n; i += 1000) {
    await streams.producer.sendAll(Array.from({ length: Math.min(1000, opts.n - i) }, (_, j) => {
      const c = Math.floor(Math.random() * opts.clients);
      return {
        name: 'PredictionRequested' as const,
        value: { eventId: randomUUID(), clientId: `c${c}`, occurredAt: now, requestId: `k${i + j}`, ...requestItem(i + j) },
      };
    }));
  }
  await streams.close();
}

/**
 * Child mode: the floor. A bare Fastify route on the predict path with the predict route's body
 * and response schemas (the same Ajv options as the server) answering a fixed prediction: what
 * HTTP, JSON parsing, validation and serialisation cost on this machine with nothing behind them.
 * It runs in its own process so its CPU is its own; GET /cpu answers its process.cpuUsage().
 */
interface FloorRedis { url: string; prefix: string }

async function runFloor(withRedis: FloorRedis | null): Promise<void> {
  const { default: Fastify } = await import('fastify');
  const { predictBodySchema, predictionSchema, predictBatchBodySchema, predictBatchSchema } = await import('../../server/http/routes.ts');
  const app = Fastify({ logger: false, ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } } });
  // Shaped like Eddy's answers, numbers included: a model's scores and a measured latency have
  // all 17 digits, and writing them is a good part of serialising a batch.
  const answer = {
    requestId: '00000000-0000-4000-8000-000000000000', clientId: 'c0', label: 'Team0',
    scores: [{ label: 'Team0', score: 0.7153846153846154 }, { label: 'Team1', score: 0.19230769230769232 }, { label: 'Team2', score: 0.09230769230769231 }],
    modelVersion: 'v1', variant: 'LIVE', featuresDefaulted: false, unsure: false, latencyMs: 0.12345678901234568,
  };
  if (withRedis) {
    // The floor plus the one thing Eddy cannot skip: a Redis round trip for the request's features.
    const { Redis } = await import('ioredis');
    const { featureKeys } = await import('../../common/keyspace.ts');
    const redis = new Redis(withRedis.url, { enableOfflineQueue: false, maxRetriesPerRequest: 0 });
    await new Promise((r) => redis.once('ready', r));
    app.post<{ Params: { clientId: string }; Body: { metadata?: Record<string, string> } }>(
      '/v1/clients/:clientId/predict', { schema: { body: predictBodySchema, response: { 200: predictionSchema } } },
      async (req) => {
        await redis.hgetall(featureKeys.entity(withRedis.prefix, req.params.clientId, 'requester', req.body.metadata?.requester ?? ''));
        return answer;
      },
    );
  } else {
    app.post('/v1/clients/:clientId/predict', { schema: { body: predictBodySchema, response: { 200: predictionSchema } } }, async () => answer);
    // The batch route's floor: the same body and answer schemas, the fixed answer for every item.
    app.post<{ Body: { items: unknown[] } }>(
      '/v1/clients/:clientId/predict/batch', { schema: { body: predictBatchBodySchema, response: { 200: predictBatchSchema } } },
      async (req) => ({ predictions: req.body.items.map(() => answer) }),
    );
  }
  app.get('/cpu', async () => process.cpuUsage());
  // The floor's own allocation, measured in its process the way the server's is (allocationMeter).
  let meter: (() => number) | undefined;
  app.post('/alloc', async () => {
    meter = allocationMeter();
    return {};
  });
  app.get('/alloc', async () => ({ bytes: meter ? meter() : null }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  process.stdout.write(JSON.stringify({ url }) + '\n');
}

/** Node flags for the load generator and the floor: this process's, without profiling (a profile is of the server). */
function childArgv(): string[] {
  return process.execArgv.filter((a) => !a.startsWith('--cpu-prof') && !a.startsWith('--heap-prof'));
}

type Floor = { url: string; cpuUs(): Promise<number>; allocStart(): Promise<void>; allocBytes(): Promise<number>; close(): void };

/** The floor in a child process; with `redis`, its route first reads the requester's feature hash (one HGETALL). */
function startFloor(redis?: FloorRedis): Promise<Floor> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...childArgv(), fileURLToPath(import.meta.url), 'floor', JSON.stringify(redis ?? null)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.on('error', reject);
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (!stdout.includes('\n')) return;
      const { url } = JSON.parse(stdout.split('\n')[0]!) as { url: string };
      resolve({
        url,
        cpuUs: async () => {
          const u = (await (await fetch(`${url}/cpu`)).json()) as { user: number; system: number };
          return u.user + u.system;
        },
        allocStart: async () => {
          await fetch(`${url}/alloc`, { method: 'POST' });
        },
        allocBytes: async () => ((await (await fetch(`${url}/alloc`)).json()) as { bytes: number }).bytes,
        close: () => child.kill(),
      });
    });
  });
}

type Measured = LoadResult & { cpuUsPerReq: number; cpuShare: number; gcMs: number; gcMaxMs: number; allocBytesPerReq: number };

/**
 * Bytes the request thread's heap allocated over an interval: what every GC freed (v8.GCProfiler
 * reports the used heap before and after each one) plus the growth of the used heap. No allocation
 * counter is exposed by V8 in Node 20, and this needs no --trace-gc parsing. The publisher and
 * loader threads have isolates of their own and are not counted.
 */
function allocationMeter(): () => number {
  const profiler = new v8.GCProfiler();
  const start = v8.getHeapStatistics().used_heap_size;
  profiler.start();
  return () => {
    const end = v8.getHeapStatistics().used_heap_size;
    const stats = profiler.stop()?.statistics ?? [];
    let freed = 0;
    for (const g of stats) freed += g.beforeGC.heapStatistics.usedHeapSize - g.afterGC.heapStatistics.usedHeapSize;
    return Math.max(0, freed + end - start);
  };
}

/**
 * Runs a load and adds the server process's CPU time per request (all its threads; independent
 * of what else runs here) and the main thread's garbage-collection pauses (total, longest): a
 * pause stops every request in flight, so it is what p99 is made of once CPU is not short.
 */
async function measured(opts: LoadOptions): Promise<Measured> {
  const pauses: number[] = [];
  const gc = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) pauses.push(e.duration);
  });
  gc.observe({ entryTypes: ['gc'] });
  const allocated = allocationMeter();
  const cpu = process.cpuUsage();
  const t = performance.now();
  const r = await load(opts);
  const used = process.cpuUsage(cpu);
  const bytes = allocated();
  gc.disconnect();
  const cpuUs = used.user + used.system;
  return {
    ...r, cpuUsPerReq: cpuUs / served(r), cpuShare: cpuUs / 1000 / (performance.now() - t),
    gcMs: pauses.reduce((a, b) => a + b, 0), gcMaxMs: Math.max(0, ...pauses), allocBytesPerReq: bytes / served(r),
  };
}

/** Every response the server gave during a load (the counted ones and a paced load's warm-up): what its CPU and allocation are divided by. */
const served = (r: LoadResult) => Math.max(1, r.requests + (r.warmup ?? 0));

function load(opts: LoadOptions): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...childArgv(), fileURLToPath(import.meta.url), 'load', JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const line = stdout.trim().split('\n').at(-1) ?? '';
      try {
        if (code !== 0) throw new Error(`load generator exited ${code}`);
        resolve(JSON.parse(line) as LoadResult);
      } catch (err) {
        reject(err);
      }
    });
  });
}

async function pool<T>(items: readonly T[], concurrency: number, fn: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < items.length) {
      const i = next++;
      await fn(items[i]!, i);
    }
  }));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Sum of a counter's values (all label sets, or those `keep` accepts) in this process's registry. */
async function counterTotal(name: string, keep: (labels: Record<string, unknown>) => boolean = () => true): Promise<number> {
  const { metricsRegistry } = await import('../../common/metrics.ts');
  const m = metricsRegistry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  return values.filter((v) => keep(v.labels)).reduce((a, v) => a + v.value, 0);
}

/** A load against a floor process, with that process's CPU and allocation per request (its GC is not observed). */
/**
 * CPU time (seconds) of every thread on this machine, by who it is: the server's request thread
 * (this process's main thread), its other threads (publisher, loader, V8's workers), the load
 * generator, Kafka, Redis, everything else; and the machine's busy time from /proc/stat. Linux
 * only (undefined elsewhere): for a budget of the 2 cores, not a figure of the server's.
 */
type MachineCpu = Record<'requestThread' | 'serverThreads' | 'loadGenerator' | 'kafka' | 'redis' | 'other' | 'machine', number>;

function machineCpu(): MachineCpu | undefined {
  const hz = 100; // USER_HZ: /proc reports ticks of 1/100 s on Linux
  let stat: string;
  try {
    stat = readFileSync('/proc/stat', 'utf8');
  } catch {
    return undefined;
  }
  // cpu  user nice system idle iowait irq softirq steal: busy = all but idle and iowait
  const f = stat.split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const out: MachineCpu = { requestThread: 0, serverThreads: 0, loadGenerator: 0, kafka: 0, redis: 0, other: 0, machine: (f[0]! + f[1]! + f[2]! + f[5]! + f[6]! + (f[7] ?? 0)) / hz };
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const who: keyof MachineCpu = Number(pid) === process.pid ? 'serverThreads'
        : cmd.includes(' load {') ? 'loadGenerator'
          : cmd.includes('kafka.Kafka') || cmd.includes('/kafka') ? 'kafka'
            : cmd.startsWith('redis-server') ? 'redis' : 'other';
      for (const tid of readdirSync(`/proc/${pid}/task`)) {
        const st = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
        const fields = st.slice(st.lastIndexOf(')') + 2).split(' ');
        const ticks = (Number(fields[11]) + Number(fields[12])) / hz;
        out[who === 'serverThreads' && tid === pid ? 'requestThread' : who] += ticks;
      }
    } catch {
      // a process or thread that ended while being read
    }
  }
  return out;
}

/** `run`'s load, with the machine's CPU sampled from `fromS` seconds into it to `toS` (the load generator's start and end left out): shares of a core over that window. */
async function withMachineCpu<T>(run: () => Promise<T>, fromS: number, toS: number): Promise<{ result: T; shares?: MachineCpu }> {
  let a: MachineCpu | undefined;
  let b: MachineCpu | undefined;
  let ta = 0;
  let tb = 0;
  const first = setTimeout(() => ((a = machineCpu()), (ta = performance.now())), fromS * 1000);
  const second = setTimeout(() => ((b = machineCpu()), (tb = performance.now())), toS * 1000);
  const result = await run();
  clearTimeout(first);
  clearTimeout(second);
  if (!a || !b) return { result };
  const seconds = (tb - ta) / 1000;
  const shares = Object.fromEntries(Object.keys(a).map((k) => [k, (b![k as keyof MachineCpu] - a![k as keyof MachineCpu]) / seconds])) as MachineCpu;
  return { result, shares };
}

async function floorMeasured(opts: LoadOptions, floor: Floor): Promise<Measured> {
  await floor.allocStart();
  const before = await floor.cpuUs();
  const t = performance.now();
  const r = await load(opts);
  const cpuUs = (await floor.cpuUs()) - before;
  const bytes = await floor.allocBytes();
  return { ...r, gcMs: NaN, gcMaxMs: NaN, allocBytesPerReq: bytes / served(r), cpuUsPerReq: cpuUs / served(r), cpuShare: cpuUs / 1000 / (performance.now() - t) };
}

/**
 * Eddy against the floor, in this run, on the same load generator: ROUNDS alternating rounds of
 * (floor, Eddy) at max throughput and at the fixed rate, over the same k hot models. CPU per
 * request is the server process's (every thread: request, publisher, loader, Kafka followers)
 * against the floor process's; the ratio is taken per round and its median reported. Then
 * allocation per prediction, the share of predictions answered with defaulted features at the
 * fixed rate, and batch predict throughput (10 and 100 items per request), each after the floor's
 * batch route at the same batch size.
 */
async function floorSection(ctx: {
  server: { url: string };
  redis: FloorRedis;
  base: Omit<LoadOptions, 'clients' | 'mode'>;
  k: number;
  seconds: number;
  rate: number;
  table: Array<{ scenario: string; r: Measured }>;
  rows: Array<[string, string]>;
  say: (line: string) => void;
}): Promise<void> {
  const { base, k, seconds, rate, table, rows, say } = ctx;
  const ROUNDS = Number(process.env.BENCH_SERVER_FLOOR_ROUNDS ?? 3);
  const floor = await startFloor();
  const floorRedis = await startFloor(ctx.redis);
  try {
    say(`floor: warm every one of ${k} models, then ${ROUNDS} alternating rounds of floor / Eddy`);
    await load({ ...base, clients: k, mode: 'sequence', amount: k });
    await load({ ...base, url: floor.url, clients: k, mode: 'random', durationS: 3 });
    await load({ ...base, url: floorRedis.url, clients: k, mode: 'random', durationS: 3 });
    await load({ ...base, clients: k, mode: 'random', durationS: 3 });
    const ratios: { max: number[]; fixed: number[]; floorMax: number[]; eddyMax: number[]; floorFixed: number[]; eddyFixed: number[]; alloc: number[]; floorAlloc: number[]; p99: number[]; defaulted: number[]; kept: number[]; perCommit: number[]; redisMax: number[]; redisFixed: number[]; floorRedisMax: number[]; floorRedisFixed: number[] } =
      { max: [], fixed: [], floorMax: [], eddyMax: [], floorFixed: [], eddyFixed: [], alloc: [], floorAlloc: [], p99: [], defaulted: [], kept: [], perCommit: [], redisMax: [], redisFixed: [], floorRedisMax: [], floorRedisFixed: [] };
    for (let round = 1; round <= ROUNDS; round++) {
      const fMax = await floorMeasured({ ...base, url: floor.url, clients: k, mode: 'random', durationS: seconds }, floor);
      table.push({ scenario: `floor (bare Fastify route): max throughput (round ${round})`, r: fMax });
      const rMax = await floorMeasured({ ...base, url: floorRedis.url, clients: k, mode: 'random', durationS: seconds }, floorRedis);
      table.push({ scenario: `floor + one Redis read: max throughput (round ${round})`, r: rMax });
      global.gc?.();
      const eMax = await measured({ ...base, clients: k, mode: 'random', durationS: seconds });
      table.push({ scenario: `Eddy: max throughput, ${k} models (round ${round})`, r: eMax });
      const fFixed = await floorMeasured({ ...base, url: floor.url, clients: k, mode: 'random', durationS: seconds, rate }, floor);
      table.push({ scenario: `floor (bare Fastify route): ${rate} req/s (round ${round})`, r: fFixed });
      const rFixed = await floorMeasured({ ...base, url: floorRedis.url, clients: k, mode: 'random', durationS: seconds, rate }, floorRedis);
      table.push({ scenario: `floor + one Redis read: ${rate} req/s (round ${round})`, r: rFixed });
      global.gc?.();
      const defaultedBefore = await counterTotal('eddy_server_features_defaulted_total');
      const statesBefore = { hit: await counterTotal('eddy_server_feature_states_total', (l) => l.result === 'hit'), all: await counterTotal('eddy_server_feature_states_total') };
      const commitsBefore = await counterTotal('eddy_server_spool_commits_total');
      const predictionsBefore = await counterTotal('eddy_server_predictions_total', (l) => l.channel === 'HTTP' && l.variant !== 'SHADOW');
      const eFixed = await measured({ ...base, clients: k, mode: 'random', durationS: seconds, rate });
      const defaulted = (await counterTotal('eddy_server_features_defaulted_total')) - defaultedBefore;
      const statesHit = (await counterTotal('eddy_server_feature_states_total', (l) => l.result === 'hit')) - statesBefore.hit;
      const statesAll = (await counterTotal('eddy_server_feature_states_total')) - statesBefore.all;
      const commits = (await counterTotal('eddy_server_spool_commits_total')) - commitsBefore;
      const predictions = (await counterTotal('eddy_server_predictions_total', (l) => l.channel === 'HTTP' && l.variant !== 'SHADOW')) - predictionsBefore;
      table.push({ scenario: `Eddy: ${rate} req/s, ${k} models (round ${round})`, r: eFixed });
      ratios.max.push(eMax.cpuUsPerReq / fMax.cpuUsPerReq);
      ratios.fixed.push(eFixed.cpuUsPerReq / fFixed.cpuUsPerReq);
      ratios.floorMax.push(fMax.cpuUsPerReq);
      ratios.eddyMax.push(eMax.cpuUsPerReq);
      ratios.floorFixed.push(fFixed.cpuUsPerReq);
      ratios.eddyFixed.push(eFixed.cpuUsPerReq);
      ratios.alloc.push(eMax.allocBytesPerReq, eFixed.allocBytesPerReq);
      ratios.floorAlloc.push(fMax.allocBytesPerReq, fFixed.allocBytesPerReq);
      ratios.redisMax.push(eMax.cpuUsPerReq / rMax.cpuUsPerReq);
      ratios.redisFixed.push(eFixed.cpuUsPerReq / rFixed.cpuUsPerReq);
      ratios.floorRedisMax.push(rMax.cpuUsPerReq);
      ratios.floorRedisFixed.push(rFixed.cpuUsPerReq);
      ratios.p99.push(eFixed.p99);
      ratios.defaulted.push(defaulted / Math.max(1, predictions));
      ratios.kept.push(statesHit / Math.max(1, statesAll));
      ratios.perCommit.push(predictions / Math.max(1, commits));
      say(`round ${round}: CPU µs/req floor ${fMax.cpuUsPerReq.toFixed(1)} / Eddy ${eMax.cpuUsPerReq.toFixed(1)} at max (${(eMax.cpuUsPerReq / fMax.cpuUsPerReq).toFixed(2)}x); floor ${fFixed.cpuUsPerReq.toFixed(1)} / Eddy ${eFixed.cpuUsPerReq.toFixed(1)} at ${rate}/s (${(eFixed.cpuUsPerReq / fFixed.cpuUsPerReq).toFixed(2)}x); floor + Redis ${rMax.cpuUsPerReq.toFixed(1)} at max, ${rFixed.cpuUsPerReq.toFixed(1)} at ${rate}/s; p99 ${eFixed.p99.toFixed(2)} ms; defaulted ${defaulted}/${predictions}`);
    }
    const f = (xs: number[], d = 1) => xs.map((x) => x.toFixed(d)).join(', ');
    rows.push(['Eddy CPU per prediction ÷ floor, max throughput', `median ${median(ratios.max).toFixed(2)}× (rounds: ${f(ratios.max, 2)}); µs/req floor ${f(ratios.floorMax)}, Eddy ${f(ratios.eddyMax)}`]);
    rows.push([`Eddy CPU per prediction ÷ floor, ${rate} req/s`, `median ${median(ratios.fixed).toFixed(2)}× (rounds: ${f(ratios.fixed, 2)}); µs/req floor ${f(ratios.floorFixed)}, Eddy ${f(ratios.eddyFixed)}`]);
    rows.push(['Eddy CPU per prediction ÷ (floor + one Redis read), max throughput', `median ${median(ratios.redisMax).toFixed(2)}× (rounds: ${f(ratios.redisMax, 2)}); µs/req floor + Redis ${f(ratios.floorRedisMax)}`]);
    rows.push([`Eddy CPU per prediction ÷ (floor + one Redis read), ${rate} req/s`, `median ${median(ratios.redisFixed).toFixed(2)}× (rounds: ${f(ratios.redisFixed, 2)}); µs/req floor + Redis ${f(ratios.floorRedisFixed)}`]);
    rows.push(['allocated per prediction (request thread)', `median ${(median(ratios.alloc) / 1024).toFixed(2)} KB (runs: ${ratios.alloc.map((x) => (x / 1024).toFixed(2)).join(', ')} KB); the floor's per request: median ${(median(ratios.floorAlloc) / 1024).toFixed(2)} KB (runs: ${ratios.floorAlloc.map((x) => (x / 1024).toFixed(2)).join(', ')} KB)`]);
    rows.push([`p99 at ${rate} req/s offered, ${k} models (${PACED ? 'paced, open loop' : "autocannon's rate: each second's requests back to back"})`, `median ${median(ratios.p99).toFixed(2)} ms (rounds: ${f(ratios.p99, 2)} ms)`]);
    rows.push([`predictions with defaulted features at ${rate} req/s`, `${ratios.defaulted.map((x) => `${(x * 100).toFixed(3)}%`).join(', ')}`]);
    // The benchmark writes no entity state while it measures: the kept states' best case (docs/server.md, "Kept entity states").
    rows.push([`entity states answered without a Redis read at ${rate} req/s (EDDY_SERVER_FEATURE_CACHE_ENTRIES=${process.env.EDDY_SERVER_FEATURE_CACHE_ENTRIES ?? 'default'}; no state changes during the run)`, `${ratios.kept.map((x) => `${(x * 100).toFixed(2)}%`).join(', ')}`]);
    rows.push([`predictions per spool commit at ${rate} req/s (EDDY_SERVER_SPOOL=${process.env.EDDY_SERVER_SPOOL ?? 'write'})`, ratios.perCommit.map((x) => x.toFixed(2)).join(', ')]);
    const profileDir = process.env.BENCH_SERVER_PROFILE;
    if (profileDir) {
      // A profiled run of its own (profiling slows the server; the rounds above are unprofiled):
      // the request thread's CPU profile and allocation samples (objects collected by GC included,
      // so it shows the allocation rate, not what is live), for test/bench/profile-stages.ts.
      const { Session } = await import('node:inspector/promises');
      const session = new Session();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('HeapProfiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: 100 });
      await session.post('Profiler.start');
      await session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true } as never);
      // BENCH_SERVER_PROFILE_BATCH=<n>: profile /predict/batch with n items per request instead.
      const profileBatch = Number(process.env.BENCH_SERVER_PROFILE_BATCH ?? 0) || undefined;
      const r = await load({ ...base, clients: k, mode: 'random', durationS: seconds, batch: profileBatch });
      const { profile: heapProfile } = await session.post('HeapProfiler.stopSampling');
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      await fs.mkdir(profileDir, { recursive: true });
      await fs.writeFile(path.join(profileDir, 'eddy.cpuprofile'), JSON.stringify(profile));
      await fs.writeFile(path.join(profileDir, 'eddy.heapprofile'), JSON.stringify(heapProfile));
      await fs.writeFile(path.join(profileDir, 'requests.txt'), String(r.requests * (profileBatch ?? 1)));
      say(`profiled ${r.requests * (profileBatch ?? 1)} predictions into ${profileDir} (tsx test/bench/profile-stages.ts ${profileDir}/eddy.cpuprofile ${profileDir}/eddy.heapprofile ${r.requests * (profileBatch ?? 1)})`);
    }
    for (const batch of [10, 100]) {
      say(`batch predict: ${batch} items per request, max throughput over ${k} models (the floor's batch route first)`);
      const fr = await floorMeasured({ ...base, url: floor.url, clients: k, mode: 'random', durationS: seconds, batch }, floor);
      table.push({ scenario: `floor (bare Fastify route): batch of ${batch}, max throughput (per request)`, r: fr });
      global.gc?.();
      // The load child needs about a second to start: the machine is sampled from 2 s in to 1 s before the end.
      const { result: r, shares } = await withMachineCpu(() => measured({ ...base, clients: k, mode: 'random', durationS: seconds, batch }), 2, Math.max(3, seconds));
      table.push({ scenario: `Eddy: batch of ${batch}, max throughput, ${k} models (per request)`, r });
      // Answered predictions only: a batch refused (503 while the PredictionMade backlog is full) predicted nothing.
      const perSecond = (m: Measured) => (((m.requests - m.non2xx) * batch) / m.seconds).toFixed(0);
      const refused = r.non2xx > 0 ? `, ${r.non2xx} of ${r.requests} requests refused` : '';
      // CPU and allocation per answered prediction (a refused batch was parsed and validated: its cost counts).
      const perPrediction = (m: Measured, x: number) => (x * m.requests) / Math.max(1, (m.requests - m.non2xx) * batch);
      if (shares) {
        const pct = (x: number) => `${(x * 100).toFixed(0)} %`;
        rows.push([`the machine's CPU during batches of ${batch} (share of one core, from /proc; ${os.cpus().length} cores)`, `the request thread ${pct(shares.requestThread)}, the server's other threads ${pct(shares.serverThreads)}, the load generator ${pct(shares.loadGenerator)}, Kafka ${pct(shares.kafka)}, Redis ${pct(shares.redis)}, the rest ${pct(shares.other)}; the machine busy ${pct(shares.machine)} of ${os.cpus().length * 100} %`]);
      }
      rows.push([`batch predict, ${batch} per request`, `${perSecond(r)} predictions/s (${r.rps.toFixed(0)} req/s${refused}, p99 ${r.p99.toFixed(2)} ms); ${perPrediction(r, r.cpuUsPerReq).toFixed(1)} µs CPU and ${(perPrediction(r, r.allocBytesPerReq) / 1024).toFixed(2)} KB allocated per prediction`]);
      rows.push([`floor's batch route, ${batch} per request`, `${perSecond(fr)} predictions/s (p99 ${fr.p99.toFixed(2)} ms); ${perPrediction(fr, fr.cpuUsPerReq).toFixed(1)} µs CPU and ${(perPrediction(fr, fr.allocBytesPerReq) / 1024).toFixed(2)} KB allocated per prediction; Eddy's CPU per prediction ${(perPrediction(r, r.cpuUsPerReq) / perPrediction(fr, fr.cpuUsPerReq)).toFixed(2)}× the floor's`]);
    }
  } finally {
    floor.close();
    floorRedis.close();
  }
}

/**
 * The Kafka predict path (PredictionRequested in, PredictionMade out): a server of its own with the
 * Kafka predict consumer on, its k models warmed over HTTP, then BENCH_SERVER_KAFKA_REQUESTS
 * (default 50,000) requests over `clients` clients produced by a child process as fast as it
 * goes; measured from the child's first send until the server has counted them all: predictions
 * per second and this process's CPU per prediction (consume and decode, predict, encode and produce
 * PredictionMade, commit; the other servers here are idle).
 */
async function kafkaPathSection(ctx: {
  config: import('../../common/config.ts').EddyConfig;
  start: (config: import('../../common/config.ts').EddyConfig) => Promise<{ url: string; ready: Promise<unknown>; close(): Promise<void> }>;
  key: string;
  k: number;
  clientsList: number[];
  rows: Array<[string, string]>;
  say: (line: string) => void;
}): Promise<void> {
  const n = Number(process.env.BENCH_SERVER_KAFKA_REQUESTS ?? 50_000);
  if (n <= 0) return;
  const config = { ...ctx.config, server: { ...ctx.config.server, replicaId: `${ctx.config.server.replicaId}-kafka` } };
  const kafkaAnswers = () => counterTotal('eddy_server_predictions_total', (l) => l.channel === 'KAFKA' && l.variant !== 'SHADOW');
  const server = await ctx.start(config);
  try {
    await server.ready;
    await load({ url: server.url, key: ctx.key, connections: 10, clients: ctx.k, mode: 'sequence', amount: ctx.k });
    for (const clients of ctx.clientsList) {
      ctx.say(`Kafka predict path: ${n} PredictionRequested over ${clients} clients, produced by a child process`);
      global.gc?.();
      const before = await kafkaAnswers();
      const child = spawn(process.execPath, [...childArgv(), fileURLToPath(import.meta.url), 'kafka-load', JSON.stringify({ config, n, clients })], { stdio: ['ignore', 'pipe', 'inherit'] });
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      await new Promise<void>((resolve, reject) => {
        child.stdout.on('data', (d: Buffer) => (d.toString().includes('connected') ? resolve() : undefined));
        child.on('exit', (code) => reject(new Error(`the Kafka load generator exited ${code} before connecting`)));
      });
      const cpu = process.cpuUsage();
      const t = performance.now();
      let answered = 0;
      while ((answered = (await kafkaAnswers()) - before) < n) {
        if (performance.now() - t > 120_000) throw new Error(`the Kafka predict path answered ${answered} of ${n} requests in 120 s`);
        await new Promise((r) => setTimeout(r, 20));
      }
      const seconds = (performance.now() - t) / 1000;
      const used = process.cpuUsage(cpu);
      if ((await exited) !== 0) throw new Error('the Kafka load generator failed');
      const perPrediction = (used.user + used.system) / n;
      ctx.say(`Kafka predict path over ${clients} clients: ${(n / seconds).toFixed(0)} predictions/s, ${perPrediction.toFixed(1)} µs CPU each`);
      ctx.rows.push([`Kafka predict path, ${n} requests over ${clients} clients (produced by a child process as fast as it goes)`, `${(n / seconds).toFixed(0)} predictions/s (first send to last answer counted); ${perPrediction.toFixed(1)} µs of the server process's CPU per prediction`]);
    }
  } finally {
    await server.close();
  }
}

async function main(): Promise<void> {
  const { Redis } = await import('ioredis');
  const { testConfig, testStreams } = await import('../helpers.ts');
  const { featureKeys } = await import('../../common/keyspace.ts');
  const { FsModelStore } = await import('../../models/store.ts');
  const { startServer, storeLoader } = await import('../../server/main.ts');
  const { modelPublished, writeFixtureModel } = await import('../server-fixtures.ts');

  // BENCH_SERVER_ONLY=floor: only the floor comparison, batches, allocation and defaulted features (over 1,000 clients).
  const ONLY_FLOOR = process.env.BENCH_SERVER_ONLY === 'floor';
  // BENCH_SERVER_ONLY=kafka: only the Kafka predict path (over 1,000 clients).
  const ONLY_KAFKA = process.env.BENCH_SERVER_ONLY === 'kafka';
  const N = Number(process.env.BENCH_SERVER_CLIENTS ?? (ONLY_FLOOR || ONLY_KAFKA ? 1000 : 10_000));
  const SECONDS = Number(process.env.BENCH_SERVER_SECONDS ?? 10);
  const RATE = Number(process.env.BENCH_SERVER_RATE ?? 5000);
  const FEATURES = Number(process.env.BENCH_SERVER_FEATURES ?? 3000);
  const ADMIN = `bench-admin-${randomUUID()}`;
  const say = (line: string) => process.stderr.write(`[bench:server] ${line}\n`);

  const loadStart = os.loadavg();
  const storeDir = await fs.mkdtemp(path.join(os.tmpdir(), 'eddy-bench-server-'));
  const config = testConfig({
    EDDY_MODEL_STORE_DIR: storeDir,
    EDDY_SERVER_PORT: '0',
    EDDY_SERVER_ADMIN_KEY: ADMIN,
    EDDY_SERVER_FEATURE_TIMEOUT_MS: process.env.EDDY_SERVER_FEATURE_TIMEOUT_MS ?? '5',
    EDDY_SERVER_MODEL_MEMORY_MB: process.env.EDDY_SERVER_MODEL_MEMORY_MB ?? '1024',
    EDDY_LOG_LEVEL: 'warn',
  });
  const streams = await testStreams(config);
  const redis = new Redis(config.redisUrl);
  const redisKeys: string[] = [];
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  const rows: Array<[string, string]> = [];
  const table: Array<{ scenario: string; r: Measured }> = [];
  try {
    const labels: Record<string, string[]> = {};
    for (let i = 0; i < 8; i++) labels[`Team${i}`] = [['laptop', 'vpn', 'payslip', 'monitor', 'outlook', 'badge', 'printer', 'phone'][i]!, `kw${i}`];
    const store = new FsModelStore(storeDir);
    const clients = Array.from({ length: N }, (_, i) => `c${i}`);
    let t = performance.now();
    const puts: Array<Awaited<ReturnType<typeof writeFixtureModel>>> = [];
    await pool(clients, 16, async (clientId, i) => {
      puts[i] = await writeFixtureModel(store, { clientId, version: 'v1', labels, extraFeatures: FEATURES, quantization: 'int8-row' });
    });
    say(`wrote ${N} artifacts of ${puts[0]!.sizeBytes} bytes in ${((performance.now() - t) / 1000).toFixed(1)} s`);
    for (let i = 0; i < N; i += 1000) {
      await streams.producer.sendAll(clients.slice(i, i + 1000).map((clientId, j) => ({
        name: 'ModelPublished' as const, value: modelPublished({ clientId, version: 'v1', ...puts[i + j]! }),
      })));
    }
    // Real-time features on: three requesters per client have label history in Redis.
    for (let i = 0; i < N; i += 1000) {
      const p = redis.pipeline();
      for (const clientId of clients.slice(i, i + 1000)) {
        for (let u = 0; u < 3; u++) {
          const key = featureKeys.entity(config.redisPrefix, clientId, 'requester', `user${u}`);
          redisKeys.push(key);
          p.hset(key, { Team0: '3', Team1: '1', _t: String(Date.now()) });
        }
      }
      await p.exec();
    }

    const loadMs: number[] = [];
    t = performance.now();
    const rssStart = process.memoryUsage().rss;
    server = await startServer(config, {
      kafkaPredict: false,
      wrapLoader: (real) => async (clientId, info) => {
        const s = performance.now();
        const p = await real(clientId, info);
        loadMs.push(performance.now() - s);
        return p;
      },
    });
    await server.ready;
    const readyS = (performance.now() - t) / 1000;
    say(`server ready (registry rebuilt from ${N} ModelPublished) in ${readyS.toFixed(1)} s`);
    rows.push(['registry rebuild to ready', `${readyS.toFixed(1)} s for ${N} ModelPublished`]);
    const base: Omit<LoadOptions, 'clients' | 'mode'> = { url: server.url, key: ADMIN, connections: 10 };
    const k = Math.min(1000, N);

    // Warm the JIT and connections on a few clients (their loads are excluded from the cold numbers).
    await load({ ...base, clients: 50, mode: 'random', durationS: 3 });

    const FLOOR = (process.env.BENCH_SERVER_FLOOR ?? '1') !== '0';
    const kafkaPath = () => kafkaPathSection({ config, start: (c) => startServer(c, {}), key: ADMIN, k, clientsList: [k, 10], rows, say });
    if (ONLY_KAFKA) {
      await kafkaPath();
      report();
      return;
    }
    if (ONLY_FLOOR) {
      await floorSection({ server, redis: { url: config.redisUrl, prefix: config.redisPrefix }, base, k, seconds: SECONDS, rate: RATE, table, rows, say });
      await kafkaPath();
      report();
      return;
    }
    loadMs.length = 0;
    global.gc?.();
    const memBefore = process.memoryUsage();
    const rssBefore = memBefore.rss;
    const modelsBefore = server.manager.stats.models;

    say(`cold: one request per client, ${N} clients`);
    const cold = await measured({ ...base, clients: N, mode: 'sequence', amount: N });
    table.push({ scenario: `cold load, ${N} clients (1 request each)`, r: cold });
    global.gc?.();
    const memAfter = process.memoryUsage();
    const rssAfter = memAfter.rss;
    const stats = server.manager.stats;
    const loadSorted = Float64Array.from(loadMs).sort();
    rows.push(['artifact load (read + sha256 + decode) p50 / p99', `${percentile(loadSorted, 50).toFixed(2)} / ${percentile(loadSorted, 99).toFixed(2)} ms over ${loadMs.length} loads`]);
    rows.push(['models loaded / budget', `${stats.models} models, ${(stats.bytes / 2 ** 20).toFixed(0)} MiB of typed arrays, budget ${(stats.budgetBytes / 2 ** 20).toFixed(0)} MiB`]);
    const perModel = (a: number, b: number) => `${((b - a) / Math.max(1, stats.models - modelsBefore) / 1024).toFixed(1)} KiB`;
    // The weights are allocated by the loader thread and moved here, so this isolate's
    // `arrayBuffers` figure does not count them: Predictor.memoryBytes is the measure, RSS the check.
    rows.push(['memory per loaded model', `${(stats.bytes / stats.models / 1024).toFixed(1)} KiB typed arrays (Predictor.memoryBytes) + ${perModel(memBefore.heapUsed, memAfter.heapUsed)} JS heap (measured after GC); RSS delta ${perModel(rssBefore, rssAfter)} (RSS reuses pages freed after the setup, so it understates)`]);
    rows.push(['process RSS', `${(rssStart / 2 ** 20).toFixed(0)} MiB at start, ${(rssBefore / 2 ** 20).toFixed(0)} MiB ready, ${(rssAfter / 2 ** 20).toFixed(0)} MiB with ${stats.models} models`]);

    // After the cold scenario (the floor section warms k models first).
    if (FLOOR) await floorSection({ server, redis: { url: config.redisUrl, prefix: config.redisPrefix }, base, k, seconds: SECONDS, rate: RATE, table, rows, say });
    await kafkaPath();
    say(`max throughput over ${k} models`);
    table.push({ scenario: `max throughput, ${k} models`, r: await measured({ ...base, clients: k, mode: 'random', durationS: SECONDS }) });
    say(`max throughput over ${N} models`);
    table.push({ scenario: `max throughput, ${N} models`, r: await measured({ ...base, clients: N, mode: 'random', durationS: SECONDS }) });
    say(`fixed ${RATE} req/s over ${N} models`);
    table.push({ scenario: `${RATE} req/s, ${N} models`, r: await measured({ ...base, clients: N, mode: 'random', durationS: SECONDS, rate: RATE }) });
    // The cost of explanations: the same load with and without explain: true, back to back.
    for (const explain of [false, true]) {
      const what = explain ? 'explain: true' : 'no explanation';
      say(`fixed ${RATE} req/s and max throughput over ${k} models, ${what}`);
      global.gc?.();
      table.push({ scenario: `${RATE} req/s, ${k} models, ${what}`, r: await measured({ ...base, clients: k, mode: 'random', durationS: SECONDS, rate: RATE, explain }) });
      table.push({ scenario: `max throughput, ${k} models, ${what}`, r: await measured({ ...base, clients: k, mode: 'random', durationS: SECONDS, explain }) });
    }

    // Reload: a new version of every one of the k hot models is published during the run; the
    // server loads each in the background and swaps (the old version answers meanwhile).
    let nextVersion = 2;
    const reloadRun = async (target: NonNullable<typeof server>, url: string): Promise<{ r: Measured; version: string; swapped: number }> => {
      const version = `v${nextVersion++}`;
      const reloadPuts: Array<Awaited<ReturnType<typeof writeFixtureModel>>> = [];
      await pool(clients.slice(0, k), 16, async (clientId, i) => {
        reloadPuts[i] = await writeFixtureModel(store, { clientId, version, labels, extraFeatures: FEATURES, quantization: 'int8-row' });
      });
      const run = measured({ url, key: ADMIN, connections: 10, clients: k, mode: 'random', durationS: SECONDS, rate: RATE });
      await new Promise((r) => setTimeout(r, 1000));
      // Spread over the run: k versions in (SECONDS - 2) s.
      const perTick = Math.max(1, Math.ceil(k / ((SECONDS - 2) * 10)));
      for (let i = 0; i < k; i += perTick) {
        await streams.producer.sendAll(clients.slice(i, Math.min(k, i + perTick)).map((clientId, j) => ({
          name: 'ModelPublished' as const, value: modelPublished({ clientId, version, ...reloadPuts[i + j]! }),
        })));
        await new Promise((r) => setTimeout(r, 100));
      }
      const r = await run;
      let swapped = 0;
      for (const c of clients.slice(0, k)) if (target.manager.isLoaded(c, version)) swapped++;
      return { r, version, swapped };
    };

    // Reload vs steady, interleaved: two single runs mostly measure the machine's noise, so
    // ROUNDS pairs (steady, then reload) run back to back and the medians compare.
    const ROUNDS = Number(process.env.BENCH_SERVER_RELOAD_ROUNDS ?? 3);
    const pairs: Array<{ steady: number; reload: number; swapped: number }> = [];
    for (let round = 1; round <= ROUNDS; round++) {
      say(`round ${round}/${ROUNDS}: fixed ${RATE} req/s over ${k} models, steady`);
      const steady = await measured({ ...base, clients: k, mode: 'random', durationS: SECONDS, rate: RATE });
      table.push({ scenario: `${RATE} req/s, ${k} models, steady (round ${round})`, r: steady });
      say(`round ${round}/${ROUNDS}: fixed ${RATE} req/s over ${k} models while ${k} new versions are published and swapped in`);
      const reload = await reloadRun(server, server.url);
      table.push({ scenario: `${RATE} req/s, ${k} models, during reload (round ${round})`, r: reload.r });
      pairs.push({ steady: steady.p99, reload: reload.r.p99, swapped: reload.swapped });
    }
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const ms = median(pairs.map((p) => p.steady));
    const mr = median(pairs.map((p) => p.reload));
    if (pairs.length > 0) rows.push(['reload', `${pairs.map((p) => `${p.swapped}/${k}`).join(', ')} models swapped per round during the run (older versions stay loaded for rollback until LRU evicts); p99 per round steady -> reload: ${pairs.map((p) => `${p.steady.toFixed(2)} -> ${p.reload.toFixed(2)} ms`).join('; ')}; medians ${ms.toFixed(2)} -> ${mr.toFixed(2)} ms (${(((mr - ms) / ms) * 100).toFixed(0)}%)`]);
    rows.push(['evictions', `${server.manager.stats.models} models loaded at the end, ${(server.manager.stats.bytes / 2 ** 20).toFixed(0)} MiB of ${(server.manager.stats.budgetBytes / 2 ** 20).toFixed(0)} MiB`]);
    const flushed = await server.publisher.flush(30_000);
    rows.push(['PredictionMade', `${server.publisher.publishedTotal} published to Kafka, ${server.publisher.droppedTotal} dropped (buffer ${config.server.publishBuffer}); flushed: ${flushed}`]);

    // Where the work happens, side by side in this run: a fresh server per variant over the same
    // k models (warmed first): fixed rate steady, fixed rate during a reload, max throughput.
    if ((process.env.BENCH_SERVER_AB ?? '1') !== '0') {
      await server.close();
      server = undefined;
      // A full buffer answers 503 (it no longer drops), so "publishing off" is no longer a variant;
      // the spool's cost is: default (spool written before each answer) vs spool off vs fsync.
      const variants: Array<{ name: string; publisher: 'thread' | 'inline'; spool: 'write' | 'fsync' | 'off'; loadsInline?: boolean; featureCacheEntries?: number }> = [
        { name: 'default (publisher thread, loader thread, spool written)', publisher: 'thread', spool: 'write' },
        { name: 'loads on the request thread', publisher: 'thread', spool: 'write', loadsInline: true },
        { name: 'publisher on the request thread', publisher: 'inline', spool: 'write' },
        { name: 'spool off (reference)', publisher: 'thread', spool: 'off' },
        { name: 'spool with fsync', publisher: 'thread', spool: 'fsync' },
        { name: 'entity states not kept (a Redis read per prediction)', publisher: 'thread', spool: 'write', featureCacheEntries: 0 },
      ];
      // The variants run one after the other, minutes apart, and this machine's speed moves 2-3x
      // within minutes: each variant's CPU per request is also given as a multiple of the bare
      // floor's, measured right before it under the same load (as in the floor section).
      const floor = await startFloor();
      const vsFloor: string[] = [];
      try {
        await load({ url: floor.url, key: ADMIN, connections: 10, clients: k, mode: 'random', durationS: 3 });
        for (const [i, v] of variants.entries()) {
          const variantConfig = { ...config, server: { ...config.server, publisher: v.publisher, spool: v.spool, featureCacheEntries: v.featureCacheEntries ?? config.server.featureCacheEntries, replicaId: `${config.server.replicaId}-ab${i}` } };
          const s = await startServer(variantConfig, { kafkaPredict: false, wrapLoader: v.loadsInline ? () => storeLoader(config) : undefined });
          try {
            await s.ready;
            say(`A/B ${v.name}: warm ${k} models, then fixed ${RATE} req/s, steady and during a reload, then max throughput (each after the floor)`);
            await load({ url: s.url, key: ADMIN, connections: 10, clients: k, mode: 'sequence', amount: k });
            await load({ url: s.url, key: ADMIN, connections: 10, clients: k, mode: 'random', durationS: 3 });
            global.gc?.();
            const fixedLoad = { key: ADMIN, connections: 10, clients: k, mode: 'random' as const, durationS: SECONDS, rate: RATE };
            const fFixed = await floorMeasured({ ...fixedLoad, url: floor.url }, floor);
            table.push({ scenario: `A/B floor before "${v.name}": ${RATE} req/s`, r: fFixed });
            const steady = await measured({ ...fixedLoad, url: s.url });
            table.push({ scenario: `A/B ${v.name}: ${RATE} req/s, ${k} models, steady`, r: steady });
            const reload = await reloadRun(s, s.url);
            table.push({ scenario: `A/B ${v.name}: ${RATE} req/s, ${k} models, during reload (${reload.swapped}/${k} swapped)`, r: reload.r });
            const maxLoad = { key: ADMIN, connections: 10, clients: k, mode: 'random' as const, durationS: SECONDS };
            const fMax = await floorMeasured({ ...maxLoad, url: floor.url }, floor);
            table.push({ scenario: `A/B floor before "${v.name}": max throughput`, r: fMax });
            const max = await measured({ ...maxLoad, url: s.url });
            table.push({ scenario: `A/B ${v.name}: max throughput, ${k} models`, r: max });
            vsFloor.push(`${v.name}: ${(steady.cpuUsPerReq / fFixed.cpuUsPerReq).toFixed(2)}× at ${RATE} req/s (p99 ${steady.p99.toFixed(2)} ms, floor's ${fFixed.p99.toFixed(2)}), ${(max.cpuUsPerReq / fMax.cpuUsPerReq).toFixed(2)}× at max throughput (${Math.round(max.rps)} req/s, floor's ${Math.round(fMax.rps)})`);
          } finally {
            await s.close();
          }
        }
      } finally {
        floor.close();
      }
      rows.push(['A/B: server CPU per request ÷ the floor measured just before it', vsFloor.join('; ')]);
    }

    report();
  } finally {
    await server?.close();
    for (let i = 0; i < redisKeys.length; i += 1000) await redis.del(...redisKeys.slice(i, i + 1000));
    redis.disconnect();
    await streams.cleanup();
    await fs.rm(storeDir, { recursive: true, force: true });
  }

  function report(): void {
    const fmt = (x: number) => x.toFixed(2);
    const lines = [
      `| scenario | requests | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-2xx | errors | server CPU µs/req | server CPU % of a core | GC pauses ms (longest) | allocated KB/req |`,
      `|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|`,
      ...table.map(({ scenario, r }) => `| ${scenario} | ${r.requests} | ${r.rps.toFixed(0)} | ${fmt(r.p50)} | ${fmt(r.p90)} | ${fmt(r.p99)} | ${fmt(r.p999)} | ${fmt(r.max)} | ${r.non2xx} | ${r.errors} | ${r.cpuUsPerReq.toFixed(0)} | ${(r.cpuShare * 100).toFixed(0)} | ${r.gcMs.toFixed(0)} (${r.gcMaxMs.toFixed(1)}) | ${Number.isFinite(r.allocBytesPerReq) ? (r.allocBytesPerReq / 1024).toFixed(1) : '-'} |`),
      '',
      `| measure | value |`,
      `|---|---|`,
      ...rows.map(([a, b]) => `| ${a} | ${b} |`),
    ];
    const la = (l: number[]) => l.map((x) => x.toFixed(1)).join(' ');
    process.stdout.write(`\n## bench:server — ${new Date().toISOString()} — ${os.cpus().length} cores, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB (${(os.freemem() / 2 ** 30).toFixed(0)} free), node ${process.version}\n`);
    process.stdout.write(`load average (1/5/15 min) at start ${la(loadStart)}, at end ${la(os.loadavg())} (the stack and the load generator share the machine with the server)\n`);
    process.stdout.write(`load: autocannon in a child process, 10 connections, keep-alive, no pipelining; features ${config.server.featureTimeoutMs} ms deadline; ${FEATURES} stored features x 8 labels per model (int8)\n\n`);
    process.stdout.write(lines.join('\n') + '\n');
  }
}

if (process.argv[2] === 'load') {
  await runLoad(JSON.parse(process.argv[3]!) as LoadOptions);
} else if (process.argv[2] === 'kafka-load') {
  await runKafkaLoad(JSON.parse(process.argv[3]!) as Parameters<typeof runKafkaLoad>[0]);
} else if (process.argv[2] === 'floor') {
  await runFloor(JSON.parse(process.argv[3] ?? 'null') as FloorRedis | null);
} else {
  await main();
}
