import { randomUUID } from 'node:crypto';
import { deleteKeys, scanKeys, type RedisClient } from '../common/redis.ts';
import type { ClickHouseClient } from '@clickhouse/client';
import { identifier } from '../common/clickhouse.ts';
import type { Streams, TopicName } from '../streams/index.ts';
import type { EddyConfig } from '../common/config.ts';
import { testStreams } from './helpers.ts';
import type { LabeledExample, LabelSetChanged, PredictionFeedback, PredictionMade } from '../schemas/events.ts';

/** Shared by the processors' tests: event builders, state dumps, cleanup. */

export function example(clientId: string, label: string, over: Partial<LabeledExample> = {}): LabeledExample {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId: randomUUID(),
    text: `text for ${label} ${randomUUID().slice(0, 6)}`, label, source: 'ASSIGNMENT', metadata: {}, predictionId: null, ...over,
  };
}

export function labelAdded(clientId: string, label: string, over: Partial<LabelSetChanged> = {}): LabelSetChanged {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), change: 'ADDED', label, previousLabel: null, description: `${label} team`, keywords: [label.toLowerCase()], ...over };
}

export function prediction(clientId: string, requestId: string, label: string, over: Partial<PredictionMade> = {}): PredictionMade {
  return {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), requestId, text: `request ${requestId}`, metadata: { requester: 'ann' },
    label, scores: [{ label, score: 0.9 }], modelVersion: 'v1', variant: 'LIVE', latencyMs: 1.5, channel: 'HTTP', featuresDefaulted: false, unsure: null, ...over,
  };
}

export function feedback(clientId: string, requestId: string, outcome: PredictionFeedback['outcome'], correctLabel: string | null = null, over: Partial<PredictionFeedback> = {}): PredictionFeedback {
  return { eventId: randomUUID(), clientId, occurredAt: Date.now(), requestId, outcome, correctLabel, actor: 'agent', ...over };
}

/** True when the group has committed every message of `topics` (empty partitions count as done). */
export async function caughtUp(streams: Streams, logicalGroup: string, topics: readonly TopicName[]): Promise<boolean> {
  return streams.withAdmin(async (admin) => {
    const groupId = streams.topics.group(logicalGroup);
    const committed = await admin.fetchOffsets({ groupId, topics: topics.map((t) => streams.topics.physical(t)) });
    for (const t of topics) {
      const ends = await admin.fetchTopicOffsets(streams.topics.physical(t));
      const mine = committed.find((c) => c.topic === streams.topics.physical(t));
      for (const e of ends) {
        if (e.high === '0' || e.high === e.low) continue;
        const c = mine?.partitions.find((x) => x.partition === e.partition)?.offset ?? '-1';
        if (BigInt(c) < BigInt(e.high)) return false;
      }
    }
    return true;
  });
}

/** Every key under `prefix` with its value (TTL excluded), in a stable order, for equality checks. */
export async function dumpRedis(redis: RedisClient, prefix: string, exclude: RegExp = /:t$/): Promise<Record<string, unknown>> {
  const keys = new Set<string>();
  for await (const batch of scanKeys(redis, `${prefix}:*`)) for (const k of batch) keys.add(k);
  const out: Record<string, unknown> = {};
  for (const key of [...keys].filter((k) => !exclude.test(k)).sort()) {
    const type = await redis.type(key);
    if (type === 'hash') out[key] = sortObject(await redis.hgetall(key));
    else if (type === 'string') out[key] = await redis.get(key);
    else if (type === 'set') out[key] = (await redis.smembers(key)).sort();
    // seen sets are scored by processing time: compare their members only
    else if (type === 'zset') out[key] = (await redis.zrange(key, 0, -1)).sort();
    else out[key] = type;
  }
  return out;
}

function sortObject(o: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));
}

export async function deleteRedisPrefix(redis: RedisClient, prefix: string): Promise<void> {
  for await (const keys of scanKeys(redis, `${prefix}:*`)) await deleteKeys(redis, keys, 'deleting test keys');
}

/** Deduplicated rows of a table (FINAL), ordered by event id. */
export async function tableRows(ch: ClickHouseClient, db: string, table: string): Promise<Array<Record<string, unknown>>> {
  const rs = await ch.query({ query: `SELECT * FROM ${identifier(db)}.${identifier(table)} FINAL ORDER BY client_id, event_id`, format: 'JSONEachRow' });
  return rs.json();
}

export async function count(ch: ClickHouseClient, db: string, table: string, final = true): Promise<number> {
  const rs = await ch.query({ query: `SELECT count() AS n FROM ${identifier(db)}.${identifier(table)}${final ? ' FINAL' : ''}`, format: 'JSONEachRow' });
  const rows = await rs.json<{ n: string }>();
  return Number(rows[0]?.n ?? 0);
}

export async function dropDatabase(ch: ClickHouseClient, db: string): Promise<void> {
  await ch.command({ query: `DROP DATABASE IF EXISTS ${identifier(db)}` });
}

/**
 * A free TCP port on 127.0.0.1 (for private servers in failure tests); `count` > 1 gives the first
 * of that many consecutive free ports. Drawn at random below the kernel's ephemeral range
 * (32768+ on Linux): a port the kernel handed out once and took back can go to any outgoing
 * connection before the private server binds it, which made a private Kafka fail with
 * "Address already in use". Every port is checked by binding it, not by trying to connect.
 */
export async function freePort(count = 1): Promise<number> {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * (32_000 - 20_000 - count));
    let free = true;
    for (let port = base; free && port < base + count; port++) free = await bindable(port);
    if (free) return base;
  }
  throw new Error(`no ${count} consecutive free port(s) between 20000 and 32000`);
}

async function bindable(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

export interface PrivateServer {
  url: string;
  start(): Promise<void>;
  /** SIGKILL: the process dies as in a crash; acknowledged writes must survive on disk. */
  kill(): Promise<void>;
  cleanup(): Promise<void>;
}

async function spawnAndWait(cmd: string, args: string[], cwd: string, ready: () => Promise<boolean>): Promise<import('node:child_process').ChildProcess> {
  const { spawn } = await import('node:child_process');
  const child = spawn(cmd, args, { cwd, stdio: 'ignore' });
  // Generous: bench:chaos restarts these on a machine it loads to 15+, where ClickHouse once took
  // more than a minute; the run then failed and the half-started server was left running.
  const deadline = Date.now() + 180_000;
  while (!(await ready().catch(() => false))) {
    if (child.exitCode !== null) throw new Error(`${cmd} exited with ${child.exitCode}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${cmd} did not become ready within 180 s`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return child;
}

async function killChild(child: import('node:child_process').ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

/**
 * A private redis-server (the shared one on 6379 must not be stopped). Append-only file with
 * fsync on every write, as a production Redis that is the home of state would run: after a
 * kill, what Redis acknowledged is still there (without persistence a restart would lose all
 * state, which is a different failure: that one is what `eddy replay` is for).
 */
export async function privateRedis(opts: { args?: string[] } = {}): Promise<PrivateServer> {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-redis-'));
  const port = await freePort();
  let child: import('node:child_process').ChildProcess | undefined;
  const ping = async () => {
    const { Redis } = await import('ioredis');
    const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => undefined);
    try {
      await r.connect();
      return (await r.ping()) === 'PONG';
    } finally {
      r.disconnect();
    }
  };
  return {
    url: `redis://127.0.0.1:${port}`,
    async start() {
      child = await spawnAndWait('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--appendfsync', 'always', '--dir', dir, ...(opts.args ?? [])], dir, ping);
    },
    kill: () => killChild(child),
    async cleanup() {
      await killChild(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface PrivateRedisClusterNode {
  port: number;
  /** The redis-server's pid while it runs (undefined before start and after a kill). */
  readonly pid: number | undefined;
  /** Its working directory: cluster config (nodes.conf) and, with appendOnly, its AOF. */
  dir: string;
}

/**
 * A private Redis Cluster: `PrivateServer` (url, start, kill, cleanup: every node at once), plus
 * each node's port and pid and a kill/start per node. `url` is the EDDY_REDIS_URL that points Eddy
 * at it (`redis+cluster://127.0.0.1:<port>,...`).
 */
export interface PrivateRedisCluster extends PrivateServer {
  nodes: readonly PrivateRedisClusterNode[];
  /** The environment a child process needs to use it. */
  env: { EDDY_REDIS_URL: string };
  /** SIGKILL one node (a master without replicas: its slots are unavailable until it returns). */
  killNode(index: number): Promise<void>;
  /** Starts a killed node again with its cluster config; resolves when the cluster is ok again. */
  startNode(index: number): Promise<void>;
}

/**
 * A private Redis Cluster of `masters` masters (3 by default, no replicas) on free ports: one
 * redis-server per node with --cluster-enabled yes, joined by `redis-cli --cluster create`, ready
 * when every node says cluster_state:ok and knows every other. No persistence unless appendOnly
 * (fsync always, as privateRedis; a node killed without it comes back empty). The shared Redis
 * on 6379 is never touched. cleanup() kills every node and removes the temporary directory.
 */
export async function privateRedisCluster(opts: { masters?: number; appendOnly?: boolean } = {}): Promise<PrivateRedisCluster> {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const { execFile } = await import('node:child_process');
  const { promisify } = await import('node:util');
  const { Redis } = await import('ioredis');
  const masters = opts.masters ?? 3;
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-redis-cluster-'));
  const children: Array<import('node:child_process').ChildProcess | undefined> = [];
  const nodes: PrivateRedisClusterNode[] = [];
  const busPorts: number[] = [];
  for (let i = 0; i < masters; i++) {
    const dir = path.join(root, `node-${i}`);
    fs.mkdirSync(dir);
    const port = await freePort();
    // The cluster bus defaults to port + 10000, which from freePort's range can land in the kernel's
    // ephemeral range (an outgoing connection held it once: redis-server exited 1); it gets a checked port of its own.
    const busPort = await freePort();
    busPorts.push(busPort);
    nodes.push({ port, dir, get pid() { return children[i]?.exitCode === null && children[i]?.signalCode === null ? children[i]!.pid : undefined; } });
  }
  let created = false;
  const command = async <T>(port: number, fn: (r: InstanceType<typeof Redis>) => Promise<T>): Promise<T> => {
    const r = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    r.on('error', () => undefined);
    try {
      await r.connect();
      return await fn(r);
    } finally {
      r.disconnect();
    }
  };
  const startNode = async (i: number) => {
    const { port, dir } = nodes[i]!;
    const persistence = opts.appendOnly ? ['--appendonly', 'yes', '--appendfsync', 'always'] : ['--appendonly', 'no'];
    children[i] = await spawnAndWait('redis-server', [
      '--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', ...persistence,
      '--cluster-enabled', 'yes', '--cluster-port', String(busPorts[i]), '--cluster-config-file', path.join(dir, 'nodes.conf'), '--cluster-node-timeout', '5000',
    ], dir, () => command(port, async (r) => (await r.ping()) === 'PONG'));
  };
  const clusterOk = async () => {
    for (const { port } of nodes) {
      const info = await command(port, (r) => r.cluster('INFO') as Promise<string>).catch(() => '');
      if (!/cluster_state:ok/.test(info) || !new RegExp(`cluster_known_nodes:${masters}\\b`).test(info)) return false;
    }
    return true;
  };
  const waitOk = async () => {
    const deadline = Date.now() + 30_000;
    while (!(await clusterOk())) {
      if (Date.now() > deadline) throw new Error('the private Redis Cluster did not reach cluster_state:ok');
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const url = `redis+cluster://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`;
  return {
    url,
    env: { EDDY_REDIS_URL: url },
    nodes,
    async start() {
      for (let i = 0; i < masters; i++) if (nodes[i]!.pid === undefined) await startNode(i);
      if (!created) {
        await promisify(execFile)('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', '0', '--cluster-yes']);
        created = true;
      }
      await waitOk();
    },
    async kill() {
      for (const c of children) await killChild(c);
    },
    killNode: (i) => killChild(children[i]),
    async startNode(i) {
      await startNode(i);
      await waitOk();
    },
    async cleanup() {
      for (const c of children) await killChild(c);
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** A private clickhouse-server with its own data directory and ports (same shape as cli/stack.ts). */
export async function privateClickHouse(): Promise<PrivateServer> {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-clickhouse-'));
  const data = path.join(dir, 'data') + '/';
  fs.mkdirSync(data, { recursive: true });
  const [http, tcp] = [await freePort(), await freePort()];
  fs.writeFileSync(path.join(dir, 'users.xml'), `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>1000000000</max_memory_usage></default></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`);
  const config = path.join(dir, 'config.xml');
  fs.writeFileSync(config, `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${dir}/server.log</log><errorlog>${dir}/server.err.log</errorlog><console>0</console></logger>
  <http_port>${http}</http_port>
  <tcp_port>${tcp}</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${data}</path>
  <tmp_path>${data}tmp/</tmp_path>
  <user_files_path>${data}user_files/</user_files_path>
  <format_schema_path>${data}format_schemas/</format_schema_path>
  <users_config>${path.join(dir, 'users.xml')}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>67108864</mark_cache_size>
  <max_concurrent_queries>20</max_concurrent_queries>
</yandex>
`);
  let child: import('node:child_process').ChildProcess | undefined;
  const url = `http://127.0.0.1:${http}`;
  return {
    url,
    async start() {
      child = await spawnAndWait('/usr/sbin/clickhouse-server', [`--config-file=${config}`], dir, async () => (await fetch(`${url}/ping`)).ok);
    },
    kill: () => killChild(child),
    async cleanup() {
      await killChild(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Sum of a counter's values whose labels match. */
export async function counterValue(name: string, labels: Record<string, string>): Promise<number> {
  const { metricsRegistry } = await import('../common/metrics.ts');
  const m = await metricsRegistry.getSingleMetric(name)?.get();
  return (m?.values ?? []).filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((a, v) => a + v.value, 0);
}

/** Committed offsets of a group on a topic, by partition. */
export async function committedOffsets(streams: Streams, logicalGroup: string, topic: TopicName): Promise<Record<number, string>> {
  return streams.withAdmin(async (admin) => {
    const [t] = await admin.fetchOffsets({ groupId: streams.topics.group(logicalGroup), topics: [streams.topics.physical(topic)] });
    return Object.fromEntries((t?.partitions ?? []).map((p) => [p.partition, p.offset]));
  });
}

/**
 * testStreams, retried: on a loaded machine, topic creation sometimes fails with "This server does
 * not host this topic-partition" while leaders are still being elected (seen in streams/topics.ts
 * ensureTopics via createTopics waitForLeaders). A second attempt finds the topics and goes on.
 */
export async function testStreamsRetrying(config: EddyConfig): Promise<Awaited<ReturnType<typeof testStreams>>> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await testStreams(config);
    } catch (err) {
      if (attempt >= 4) throw err;
      await new Promise((r) => setTimeout(r, 500 * attempt));
    }
  }
}

/**
 * The end of a processors test file: removes what the file created (its Redis keys, and its
 * ClickHouse database unless `keepDatabase`), then its topics and groups.
 */
export async function cleanupProcessorsTest(
  config: EddyConfig,
  streams: { cleanup(): Promise<void> } | undefined,
  opts: { keepDatabase?: boolean } = {},
): Promise<void> {
  if (!opts.keepDatabase) {
    const { createClickHouse } = await import('../common/clickhouse.ts');
    const ch = createClickHouse(config);
    try {
      await dropDatabase(ch, config.clickhouseDatabase);
    } finally {
      await ch.close();
    }
  }
  const { connectRedis } = await import('../common/redis.ts');
  const redis = await connectRedis(config);
  await deleteRedisPrefix(redis, config.redisPrefix);
  redis.disconnect();
  await streams?.cleanup();
}
