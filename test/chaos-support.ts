import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { APICURIO_VERSION, KAFKA_LOG4J, KAFKA_VERSION, kafkaProperties } from '../cli/stack.ts';
import type { EddyConfig } from '../common/config.ts';
import type { AnyEvent, Streams, TopicName } from '../streams/index.ts';
import { waitFor } from './helpers.ts';
import { caughtUp, freePort } from './processors-support.ts';

/**
 * Real components killed for real, for the death tests and the recovery measurements: a private
 * Kafka broker and a private schema registry (the shared ones on 9092 and 8081 must never die:
 * everyone else's tests run on them), and `eddy` child processes that can be SIGKILLed.
 */

const HOME = process.env.EDDY_HOME || path.join(os.homedir(), '.cache', 'eddy');

export interface PrivateService {
  /** host:port for Kafka, a URL for the registry. */
  endpoint: string;
  start(): Promise<void>;
  /** SIGKILL: no shutdown hook runs, as in a crash. */
  kill(): Promise<void>;
  cleanup(): Promise<void>;
}

function alive(child: ChildProcess | undefined): child is ChildProcess {
  return child !== undefined && child.exitCode === null && child.signalCode === null;
}

async function kill9(child: ChildProcess | undefined): Promise<void> {
  if (!alive(child)) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

async function until(what: string, check: () => Promise<boolean>, child: ChildProcess, log: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (!alive(child)) throw new Error(`${what} exited during start-up: ${fs.existsSync(log) ? fs.readFileSync(log, 'utf8').slice(-2000) : ''}`);
    if (Date.now() > deadline) throw new Error(`${what} did not become ready within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function portOpen(port: number): Promise<boolean> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.connect({ port, host: '127.0.0.1' });
    s.setTimeout(300, () => { s.destroy(); resolve(false); });
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
}

/**
 * A private single-node KRaft broker from the jars `eddy stack up` downloaded, on free ports and
 * its own data directory (kept across kill/start: what it acknowledged must survive the kill).
 */
export async function privateKafka(): Promise<PrivateService> {
  const libs = path.join(HOME, `kafka-${KAFKA_VERSION}`, 'libs');
  if (!fs.existsSync(libs)) throw new Error(`no Kafka jars in ${libs}: run 'eddy stack up' once`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-kafka-'));
  // The controller listens on port + 1 (kafkaProperties): find a free pair.
  const port = await freePort(2);
  const props = path.join(dir, 'server.properties');
  fs.writeFileSync(props, kafkaProperties(path.join(dir, 'data'), port)
    // Small and quick: one partition leader, few log cleaner threads, nothing to wait for at start.
    + 'num.network.threads=2\nnum.io.threads=2\nlog.cleaner.threads=1\n');
  fs.writeFileSync(path.join(dir, 'log4j2.properties'), KAFKA_LOG4J);
  const java = ['-cp', `${libs}/*`, `-Dlog4j2.configurationFile=${path.join(dir, 'log4j2.properties')}`];
  const format = spawnSync('java', [...java, 'kafka.tools.StorageTool', 'format', '-t', 'eddychaosAAAAAAAAAAAAA', '-c', props, '--standalone'], { encoding: 'utf8' });
  if (format.status !== 0) {
    const again = spawnSync('java', [...java, 'kafka.tools.StorageTool', 'format', '-t', 'eddychaosAAAAAAAAAAAAA', '-c', props], { encoding: 'utf8' });
    if (again.status !== 0) throw new Error(`formatting a private Kafka failed: ${again.stderr || again.stdout}`);
  }
  const log = path.join(dir, 'kafka.log');
  let child: ChildProcess | undefined;
  return {
    endpoint: `127.0.0.1:${port}`,
    async start() {
      const fd = fs.openSync(log, 'a');
      child = spawn('java', ['-Xms128m', '-Xmx384m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', ...java, 'kafka.Kafka', props], { stdio: ['ignore', fd, fd] });
      fs.closeSync(fd);
      await until('private Kafka', () => portOpen(port), child, log, 60_000);
    },
    kill: () => kill9(child),
    async cleanup() {
      await kill9(child);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A private Apicurio Registry (as cli/stack.ts starts the shared one) keeping its schemas in a
 * journal topic of its own on `kafkaBrokers`, so a restart finds the same schema ids.
 */
export async function privateRegistry(kafkaBrokers: string): Promise<PrivateService & { journalTopic: string }> {
  const dir = path.join(HOME, `apicurio-${APICURIO_VERSION}`);
  const jar = path.join(dir, `apicurio-registry-app-${APICURIO_VERSION}-runner.jar`);
  if (!fs.existsSync(jar)) throw new Error(`no Apicurio jar at ${jar}: run 'eddy stack up' once`);
  const port = await freePort();
  const journalTopic = `eddy-chaos-registry-${Date.now().toString(36)}`;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-registry-'));
  const log = path.join(tmp, 'registry.log');
  const url = `http://127.0.0.1:${port}/apis/ccompat/v7`;
  let child: ChildProcess | undefined;
  return {
    endpoint: url,
    journalTopic,
    async start() {
      const fd = fs.openSync(log, 'a');
      child = spawn('java', [
        '-Xms64m', '-Xmx384m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1',
        `-Dquarkus.http.port=${port}`, '-Dquarkus.http.host=127.0.0.1',
        '-Dapicurio.storage.kind=kafkasql', `-Dapicurio.kafkasql.bootstrap.servers=${kafkaBrokers}`,
        `-Dapicurio.kafkasql.topic=${journalTopic}`,
        `-Dapicurio.kafkasql.consumer.group-prefix=${journalTopic}-`,
        '-Dquarkus.log.level=WARN', '-Dquarkus.http.access-log.enabled=false',
        '-jar', jar,
      ], { cwd: dir, stdio: ['ignore', fd, fd] });
      fs.closeSync(fd);
      await until('private schema registry', async () => (await fetch(`${url}/subjects`, { signal: AbortSignal.timeout(1000) })).ok, child, log, 120_000);
    },
    kill: () => kill9(child),
    async cleanup() {
      await kill9(child);
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
}

/** A running `eddy` command (bin/eddy.mjs) with a test context's environment. */
export interface EddyProcess {
  child: ChildProcess;
  /** When the process was started (ms since the epoch). */
  startedAt: number;
  /** When the process printed its ready line (ms since the epoch). */
  readyAt: number;
  output(): string;
  kill9(): Promise<void>;
  /** SIGTERM and wait (graceful stop). */
  stop(): Promise<void>;
}

/** The environment that points an `eddy` child at a test context (its topics, keys, database, brokers). */
export function eddyEnv(config: EddyConfig, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    EDDY_TOPIC_PREFIX: config.topicPrefix,
    EDDY_PARTITIONS: String(config.partitions),
    EDDY_REDIS_PREFIX: config.redisPrefix,
    EDDY_REDIS_URL: config.redisUrl,
    EDDY_CLICKHOUSE_URL: config.clickhouseUrl,
    EDDY_CLICKHOUSE_DATABASE: config.clickhouseDatabase,
    EDDY_KAFKA_BROKERS: config.kafkaBrokers.join(','),
    EDDY_SCHEMA_REGISTRY_URL: config.schemaRegistryUrl,
    EDDY_MODEL_STORE_DIR: config.modelStoreDir,
    // A killed server's PredictionMade spool stays in the test's own directory (serverTestConfig), not the shared default.
    EDDY_SERVER_SPOOL_DIR: config.server.spoolDir,
    EDDY_METRICS_PORT: '0',
    EDDY_LOG_LEVEL: 'warn',
    ...extra,
  };
}

/** Starts `eddy <args>` and resolves once its output shows `ready` (its "... running" or "listening" line). */
export async function spawnEddy(env: NodeJS.ProcessEnv, args: string[], ready: RegExp, timeoutMs = 60_000, nodeArgs: string[] = []): Promise<EddyProcess> {
  const startedAt = Date.now();
  const child = spawn(process.execPath, [...nodeArgs, 'bin/eddy.mjs', ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  const readyAt = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`eddy ${args.join(' ')} not ready within ${timeoutMs} ms:\n${out.slice(-2000)}`)), timeoutMs);
    const check = () => {
      if (ready.test(out)) {
        clearTimeout(timer);
        resolve(Date.now());
      }
    };
    child.stderr!.on('data', check);
    child.stdout!.on('data', check);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`eddy ${args.join(' ')} exited (${code ?? signal}) before it was ready:\n${out.slice(-2000)}`));
    });
  });
  return {
    child, startedAt, readyAt,
    output: () => out,
    kill9: () => kill9(child),
    async stop() {
      if (!alive(child)) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** CPU seconds (user + system) a live process has used, from /proc (0 when it is gone or not Linux). */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The fields after the command name (which may hold spaces) start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / Number(process.env.CLK_TCK ?? 100);
  } catch {
    return 0;
  }
}

/** Resolves with the time `check` first holds (polling every `intervalMs`), or Infinity after `timeoutMs`. */
export async function firstTime(check: () => boolean | Promise<boolean>, timeoutMs: number, intervalMs = 50): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return Date.now();
    if (Date.now() > deadline) return Infinity;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * Every event of `topics` from the beginning of the log, read by a fresh group until it has
 * committed the end of each partition (what a new reader of the log sees).
 */
export async function readLog(streams: Streams, topics: readonly TopicName[], timeoutMs = 120_000): Promise<AnyEvent[]> {
  const events: AnyEvent[] = [];
  const group = `log-reader-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  const reader = streams.consumer({
    group, topics, fromBeginning: true, onUndecodable: 'fail', maxRecordsPerCall: 5000,
    handler: { handle: async (records) => { for (const r of records) events.push(r.event); } },
  });
  await reader.start();
  try {
    await waitFor(`a reader at the end of ${topics.join(', ')}`, () => caughtUp(streams, group, topics), timeoutMs, 250);
  } finally {
    await reader.stop();
  }
  return events;
}
