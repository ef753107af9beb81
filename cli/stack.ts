/**
 * The local stack, real and without Docker: Apache Kafka (KRaft), Apicurio Registry (Confluent
 * API), Redis and ClickHouse as plain processes on this machine. Downloads are cached under
 * $EDDY_HOME (default ~/.cache/eddy), never in the repository. `up` is idempotent and reuses a
 * service already answering on its port; `down` stops only the processes `up` started (pid files).
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { EddyError, errorMessage } from '../common/errors.ts';

export const KAFKA_VERSION = '4.1.1';
export const LOG4J_VERSION = '2.24.3';
/**
 * Apicurio 3.1.x is not served by the Maven mirror reachable here, and 3.2+ needs Java 21; 3.0.9 is
 * the newest 3.x that runs on Java 17 and has the same `/apis/ccompat/v7` API.
 */
export const APICURIO_VERSION = '3.0.9';

export interface StackPaths {
  home: string;
  logs: string;
  run: string;
}

export interface ServiceStatus {
  name: string;
  up: boolean;
  version: string;
  endpoint: string;
  managedBy: 'eddy' | 'external' | '-';
  pid?: number;
  log?: string;
}

type Say = (line: string) => void;

export function stackPaths(home: string): StackPaths {
  return { home, logs: path.join(home, 'logs'), run: path.join(home, 'run') };
}

// ---------------------------------------------------------------------------------------------
// small process and network helpers

function portOpen(port: number, host = '127.0.0.1', timeoutMs = 500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

async function httpText(url: string, timeoutMs = 1500): Promise<string | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return undefined;
    return await res.text();
  } catch {
    return undefined;
  }
}

async function redisCommand(port: number, command: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' });
    let data = '';
    const finish = (v: string | undefined) => {
      socket.destroy();
      resolve(v);
    };
    socket.setTimeout(1000, () => finish(undefined));
    socket.once('error', () => finish(undefined));
    socket.once('connect', () => socket.write(`${command}\r\n`));
    socket.on('data', (chunk) => {
      data += chunk.toString();
      if (data.startsWith('+') || data.startsWith('-')) return finish(data.trim());
      const m = /^\$(\d+)\r\n/.exec(data);
      if (m && data.length >= m[0].length + Number(m[1])) finish(data.slice(m[0].length, m[0].length + Number(m[1])));
    });
  });
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function readPid(paths: StackPaths, name: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(path.join(paths.run, `${name}.pid`), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 && pidAlive(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

function which(cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' });
  const out = r.stdout.trim();
  return r.status === 0 && out ? out : undefined;
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs: number, logFile?: string, pid?: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    if (pid !== undefined && !pidAlive(pid)) {
      throw new EddyError('STACK_START_FAILED', `${what} exited during start-up; see ${logFile ?? 'its log'}:\n${tail(logFile, 15)}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new EddyError('STACK_START_FAILED', `${what} did not become healthy within ${Math.round(timeoutMs / 1000)} s; see ${logFile ?? 'its log'}:\n${tail(logFile, 15)}`);
}

function tail(file: string | undefined, lines: number): string {
  if (!file || !fs.existsSync(file)) return '(no log)';
  const text = fs.readFileSync(file, 'utf8').trimEnd().split('\n');
  return text.slice(-lines).join('\n');
}

function startDetached(paths: StackPaths, name: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): { pid: number; log: string } {
  fs.mkdirSync(paths.logs, { recursive: true });
  fs.mkdirSync(paths.run, { recursive: true });
  const log = path.join(paths.logs, `${name}.log`);
  const fd = fs.openSync(log, 'a');
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, detached: true, stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  if (child.pid === undefined) throw new EddyError('STACK_START_FAILED', `could not start ${name} (${cmd})`);
  child.unref();
  fs.writeFileSync(path.join(paths.run, `${name}.pid`), String(child.pid));
  return { pid: child.pid, log };
}

// ---------------------------------------------------------------------------------------------
// prerequisites, each failing with one clear sentence

function javaMajor(): number | undefined {
  const r = spawnSync('java', ['-version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return undefined;
  const m = /version "(\d+)(?:\.(\d+))?/.exec(r.stderr + r.stdout);
  if (!m) return undefined;
  return m[1] === '1' ? Number(m[2]) : Number(m[1]);
}

function requireJava(): void {
  const major = javaMajor();
  if (major === undefined) throw new EddyError('PREREQUISITE_MISSING', 'Java 17 or newer is required to run Kafka and the schema registry, but no `java` was found on PATH.');
  if (major < 17) throw new EddyError('PREREQUISITE_MISSING', `Java 17 or newer is required to run Kafka and the schema registry, but \`java\` is version ${major}.`);
}

function requireMaven(): void {
  if (!which('mvn')) throw new EddyError('PREREQUISITE_MISSING', 'Apache Maven (`mvn`) is required to download Kafka and Apicurio Registry from Maven Central, but it was not found on PATH.');
}

/**
 * Installs a Debian package once, when `present()` says it is missing (`present` defaults to:
 * `binary` is on PATH or is an existing path).
 */
export function aptInstall(pkg: string, binary: string | (() => boolean), say: Say): void {
  const present = typeof binary === 'function' ? binary : () => Boolean(which(binary) || fs.existsSync(binary));
  if (present()) return;
  if (!which('apt-get')) throw new EddyError('PREREQUISITE_MISSING', `${pkg} is not installed and this machine has no apt-get to install it; install ${pkg} yourself and run again.`);
  say(`installing ${pkg} with apt-get (once)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  let r = spawnSync('apt-get', ['install', '-y', '-q', pkg], { env, encoding: 'utf8' });
  if (r.status !== 0) {
    spawnSync('apt-get', ['update', '-q'], { env, encoding: 'utf8' });
    r = spawnSync('apt-get', ['install', '-y', '-q', pkg], { env, encoding: 'utf8' });
  }
  if (r.status !== 0) throw new EddyError('PREREQUISITE_MISSING', `apt-get could not install ${pkg}: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
}

function mvn(paths: StackPaths, args: string[], cwd: string, say: Say, what: string): void {
  requireMaven();
  say(`downloading ${what} from Maven Central (once; cached in ${paths.home})`);
  const r = spawnSync('mvn', ['-q', '-B', `-Dmaven.repo.local=${path.join(paths.home, 'm2')}`, ...args], { cwd, encoding: 'utf8' });
  if (r.status !== 0) {
    const lines = (r.stdout + r.stderr).split('\n').filter((l) => l.includes('ERROR')).slice(0, 3).join(' ');
    throw new EddyError('DOWNLOAD_FAILED', `Maven could not download ${what}: ${lines || 'see mvn output'}`);
  }
}

// ---------------------------------------------------------------------------------------------
// the four services

interface Service {
  name: string;
  port: number;
  endpoint: string;
  healthy(): Promise<boolean>;
  version(): Promise<string>;
  start(paths: StackPaths, say: Say): Promise<void>;
}

function kafkaService(): Service {
  const port = 9092;
  const libsDir = (p: StackPaths) => path.join(p.home, `kafka-${KAFKA_VERSION}`, 'libs');
  return {
    name: 'kafka', port, endpoint: `127.0.0.1:${port}`,
    healthy: () => portOpen(port),
    version: async () => `Apache Kafka ${KAFKA_VERSION} (KRaft)`,
    async start(paths, say) {
      requireJava();
      const dir = path.join(paths.home, `kafka-${KAFKA_VERSION}`);
      const libs = libsDir(paths);
      if (!fs.existsSync(path.join(libs, `kafka_2.13-${KAFKA_VERSION}.jar`))) {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(path.join(dir, 'pom.xml'), kafkaPom());
        mvn(paths, ['dependency:copy-dependencies', `-DoutputDirectory=${libs}`], dir, say, `Apache Kafka ${KAFKA_VERSION}`);
      }
      const data = path.join(paths.home, 'data', 'kafka');
      const props = path.join(dir, 'server.properties');
      fs.writeFileSync(props, kafkaProperties(data, port));
      fs.writeFileSync(path.join(dir, 'log4j2.properties'), KAFKA_LOG4J);
      const classpath = `${libs}/*`;
      const log4j = `-Dlog4j2.configurationFile=${path.join(dir, 'log4j2.properties')}`;
      if (!fs.existsSync(path.join(data, 'meta.properties'))) {
        fs.mkdirSync(data, { recursive: true });
        const clusterId = execFileSync('java', ['-cp', classpath, log4j, 'kafka.tools.StorageTool', 'random-uuid'], { encoding: 'utf8' }).trim().split('\n').pop()!;
        const r = spawnSync('java', ['-cp', classpath, log4j, 'kafka.tools.StorageTool', 'format', '-t', clusterId, '-c', props], { encoding: 'utf8' });
        if (r.status !== 0) throw new EddyError('STACK_START_FAILED', `formatting Kafka storage failed: ${(r.stderr || r.stdout).trim().split('\n').pop()}`);
      }
      const { pid, log } = startDetached(paths, 'kafka', 'java', ['-Xms256m', '-Xmx1g', '-XX:+UseG1GC', '-cp', classpath, log4j, 'kafka.Kafka', props]);
      await waitFor('Kafka', () => portOpen(port), 60_000, log, pid);
    },
  };
}

function kafkaPom(): string {
  return `<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.eddy</groupId><artifactId>kafka-runtime</artifactId><version>1</version><packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>${KAFKA_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>${LOG4J_VERSION}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>${LOG4J_VERSION}</version></dependency>
  </dependencies>
</project>
`;
}

/** A single-node KRaft broker's settings (the failure tests start private brokers with it on other ports). */
export function kafkaProperties(dataDir: string, port: number): string {
  return `# written by 'eddy stack up'
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${port + 1}
listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${port + 1}
advertised.listeners=PLAINTEXT://127.0.0.1:${port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=${dataDir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
delete.topic.enable=true
log.retention.check.interval.ms=60000
`;
}

export const KAFKA_LOG4J = `rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
logger.server.name=kafka.server.KafkaRaftServer
logger.server.level=INFO
`;

function registryService(): Service {
  const port = 8081;
  const base = `http://127.0.0.1:${port}`;
  return {
    name: 'registry', port, endpoint: `${base}/apis/ccompat/v7`,
    healthy: async () => (await httpText(`${base}/apis/ccompat/v7/subjects`)) !== undefined,
    version: async () => {
      const info = await httpText(`${base}/apis/registry/v3/system/info`);
      const v = info ? (JSON.parse(info) as { version?: string }).version : undefined;
      return `Apicurio Registry ${v ?? '?'} (kafkasql storage)`;
    },
    async start(paths, say) {
      requireJava();
      const dir = path.join(paths.home, `apicurio-${APICURIO_VERSION}`);
      const jar = path.join(dir, `apicurio-registry-app-${APICURIO_VERSION}-runner.jar`);
      if (!fs.existsSync(jar)) {
        fs.mkdirSync(dir, { recursive: true });
        fs.writeFileSync(path.join(dir, 'pom.xml'), `<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion><groupId>dev.eddy</groupId><artifactId>registry-runtime</artifactId><version>1</version><packaging>pom</packaging></project>\n`);
        mvn(paths, ['dependency:copy', `-Dartifact=io.apicurio:apicurio-registry-app:${APICURIO_VERSION}:tar.gz:all`, `-DoutputDirectory=${dir}`], dir, say, `Apicurio Registry ${APICURIO_VERSION}`);
        const archive = path.join(dir, `apicurio-registry-app-${APICURIO_VERSION}-all.tar.gz`);
        execFileSync('tar', ['xzf', archive, '-C', dir]);
        fs.rmSync(archive);
      }
      // Schemas are stored in a Kafka topic (kafkasql), so the registry survives restarts and
      // shares Kafka's fate: no second database to run or back up.
      const { pid, log } = startDetached(paths, 'registry', 'java', [
        '-Xms128m', '-Xmx512m',
        `-Dquarkus.http.port=${port}`, '-Dquarkus.http.host=127.0.0.1',
        '-Dapicurio.storage.kind=kafkasql', '-Dapicurio.kafkasql.bootstrap.servers=127.0.0.1:9092',
        '-Dapicurio.kafkasql.topic=eddy-registry-journal',
        '-Dquarkus.log.level=WARN', '-Dquarkus.http.access-log.enabled=false',
        '-jar', jar,
      ], { cwd: dir });
      await waitFor('Apicurio Registry', async () => (await httpText(`${base}/apis/ccompat/v7/subjects`)) !== undefined, 120_000, log, pid);
    },
  };
}

function redisService(): Service {
  const port = 6379;
  return {
    name: 'redis', port, endpoint: `redis://127.0.0.1:${port}`,
    healthy: async () => (await redisCommand(port, 'PING')) === '+PONG',
    version: async () => {
      const info = await redisCommand(port, 'INFO server');
      return `Redis ${/redis_version:([^\r\n]+)/.exec(info ?? '')?.[1] ?? '?'}`;
    },
    async start(paths, say) {
      aptInstall('redis-server', 'redis-server', say);
      const dir = path.join(paths.home, 'data', 'redis');
      fs.mkdirSync(dir, { recursive: true });
      const { pid, log } = startDetached(paths, 'redis', 'redis-server', [
        '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--daemonize', 'no',
      ]);
      await waitFor('Redis', async () => (await redisCommand(port, 'PING')) === '+PONG', 20_000, log, pid);
    },
  };
}

function clickhouseService(): Service {
  const port = 8123;
  const binary = '/usr/sbin/clickhouse-server';
  return {
    name: 'clickhouse', port, endpoint: `http://127.0.0.1:${port}`,
    healthy: async () => (await httpText(`http://127.0.0.1:${port}/ping`)) !== undefined,
    version: async () => `ClickHouse ${(await httpText(`http://127.0.0.1:${port}/?query=SELECT%20version()`))?.trim() ?? '?'}`,
    async start(paths, say) {
      aptInstall('clickhouse-server', binary, say);
      const dir = path.join(paths.home, 'clickhouse');
      const data = path.join(paths.home, 'data', 'clickhouse') + '/';
      fs.mkdirSync(data, { recursive: true });
      fs.mkdirSync(paths.logs, { recursive: true });
      const config = path.join(dir, 'config.xml');
      fs.mkdirSync(dir, { recursive: true });
      fs.writeFileSync(path.join(dir, 'users.xml'), CLICKHOUSE_USERS);
      fs.writeFileSync(config, clickhouseConfig(port, data, paths.logs, path.join(dir, 'users.xml')));
      const { pid, log } = startDetached(paths, 'clickhouse', binary, [`--config-file=${config}`], { cwd: dir });
      await waitFor('ClickHouse', async () => (await httpText(`http://127.0.0.1:${port}/ping`)) !== undefined, 60_000, log, pid);
    },
  };
}

function clickhouseConfig(port: number, data: string, logs: string, users: string): string {
  // Only what Eddy needs, valid for ClickHouse 18.16 (Debian) and current releases.
  return `<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>${logs}/clickhouse-server.log</log><errorlog>${logs}/clickhouse-server.err.log</errorlog><console>0</console></logger>
  <http_port>${port}</http_port>
  <tcp_port>9000</tcp_port>
  <listen_host>127.0.0.1</listen_host>
  <path>${data}</path>
  <tmp_path>${data}tmp/</tmp_path>
  <user_files_path>${data}user_files/</user_files_path>
  <format_schema_path>${data}format_schemas/</format_schema_path>
  <users_config>${users}</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <uncompressed_cache_size>268435456</uncompressed_cache_size>
  <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
`;
}

const CLICKHOUSE_USERS = `<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default><readonly><readonly>1</readonly></readonly></profiles>
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks><profile>default</profile><quota>default</quota></default></users>
  <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
`;

/** In start order: the registry keeps its schemas in Kafka, so Kafka comes first. */
export function services(): Service[] {
  return [redisService(), clickhouseService(), kafkaService(), registryService()];
}

// ---------------------------------------------------------------------------------------------
// commands

export async function stackUp(home: string, say: Say = () => undefined, only?: string[]): Promise<{ ms: number; started: string[] }> {
  const paths = stackPaths(home);
  fs.mkdirSync(paths.home, { recursive: true });
  const t0 = Date.now();
  const started: string[] = [];
  for (const svc of services().filter((s) => !only || only.includes(s.name))) {
    if (await svc.healthy()) {
      say(`${svc.name.padEnd(10)} already up at ${svc.endpoint}`);
      continue;
    }
    if (await portOpen(svc.port)) {
      throw new EddyError('PORT_IN_USE', `port ${svc.port} is taken by something that is not a healthy ${svc.name}; stop it or free the port, then run 'eddy stack up' again.`);
    }
    const t = Date.now();
    say(`${svc.name.padEnd(10)} starting…`);
    await svc.start(paths, say);
    started.push(svc.name);
    say(`${svc.name.padEnd(10)} up at ${svc.endpoint} in ${((Date.now() - t) / 1000).toFixed(1)} s`);
  }
  return { ms: Date.now() - t0, started };
}

export async function stackDown(home: string, say: Say = () => undefined): Promise<string[]> {
  const paths = stackPaths(home);
  const stopped: string[] = [];
  for (const svc of services().reverse()) {
    const pid = readPid(paths, svc.name);
    if (pid === undefined) continue;
    say(`${svc.name.padEnd(10)} stopping (pid ${pid})`);
    try {
      process.kill(pid, 'SIGTERM');
    } catch (err) {
      say(`${svc.name}: ${errorMessage(err)}`);
    }
    const deadline = Date.now() + 30_000;
    while (pidAlive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
    fs.rmSync(path.join(paths.run, `${svc.name}.pid`), { force: true });
    stopped.push(svc.name);
  }
  return stopped;
}

export async function stackStatus(home: string): Promise<ServiceStatus[]> {
  const paths = stackPaths(home);
  const out: ServiceStatus[] = [];
  for (const svc of services()) {
    const up = await svc.healthy();
    const pid = readPid(paths, svc.name);
    out.push({
      name: svc.name,
      up,
      version: up ? await svc.version() : '-',
      endpoint: svc.endpoint,
      managedBy: pid !== undefined ? 'eddy' : up ? 'external' : '-',
      ...(pid !== undefined ? { pid } : {}),
      log: path.join(paths.logs, `${svc.name}.log`),
    });
  }
  return out;
}

export function stackLogFile(home: string, service: string): string {
  const known = services().map((s) => s.name);
  if (!known.includes(service)) throw new EddyError('UNKNOWN_SERVICE', `unknown service '${service}'; one of: ${known.join(', ')}`);
  return path.join(stackPaths(home).logs, `${service}.log`);
}

/** Stops one managed service's process (the failure tests use it to take Redis or ClickHouse away). */
export async function stopService(home: string, name: string): Promise<boolean> {
  const paths = stackPaths(home);
  const pid = readPid(paths, name);
  if (pid === undefined) return false;
  process.kill(pid, 'SIGTERM');
  while (pidAlive(pid)) await new Promise((r) => setTimeout(r, 100));
  fs.rmSync(path.join(paths.run, `${name}.pid`), { force: true });
  return true;
}
