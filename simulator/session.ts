import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { connectRedis, deleteKeys, scanKeys } from '../common/redis.ts';
import { loadConfig, type EddyConfig } from '../common/config.ts';
import { errorMessage } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { createClickHouse, identifier } from '../common/clickhouse.ts';
import { connectStreams, deleteTopics, type Streams } from '../streams/index.ts';
import { Platform, platformComponents } from './platform.ts';
import { Simulator, type SimulatorOptions, type StoryOptions } from './simulator.ts';
import { DEMO_CLIENTS, NEW_CLIENT, type ClientSpec } from './workload.ts';

/**
 * One simulated run against the real platform in its own namespace (topic prefix, Redis prefix,
 * ClickHouse database, model store directory), shared by `eddy demo`, the demo test and the
 * platform benchmark. `stop()` stops the simulator, then the platform, and (unless kept)
 * deletes everything the run created.
 */

/** Thresholds that make the story happen in minutes instead of days (every one is an EDDY_* variable). */
export const FAST_PLATFORM_ENV: Record<string, string> = {
  // First model as soon as a client has a little history; retrain on modest new data.
  EDDY_TRIGGER_MIN_EXAMPLES: '40',
  // Data-driven retrains rarely enough that the story's own causes (labels, alerts) are visible.
  EDDY_TRIGGER_NEW_EXAMPLES: '1000',
  EDDY_TRIGGER_GROWTH: '0.5',
  EDDY_TRIGGER_COOLDOWN_MS: '15000',
  EDDY_TRIGGER_OUTSTANDING_TIMEOUT_MS: '120000',
  EDDY_TRAINER_EPOCHS: '6',
  // A drift legitimately moves the label distribution; the demo must not refuse the retrain for it.
  EDDY_TRAINER_MAX_LABEL_DRIFT: '0.9',
  EDDY_FEEDBACK_MAX_WAITS: '20',
  EDDY_ANALYTICS_BATCH_MS: '100',
  // The monitor's windows are 7 days of event time, so within minutes a drift shows as prediction
  // bias (the model over-predicts the team the drifted requests look like), not yet as a
  // week-over-week drop: a lower bias threshold and support make it visible in a short run.
  EDDY_MONITOR_MIN_SUPPORT: '30',
  // Above what a healthy model's skew reaches in the demo (globex 0.002-0.007; acme 0.04-0.05 on
  // 30-54 judged, small-sample noise), below what the drift causes (simulator/workload.ts drift()).
  EDDY_MONITOR_BIAS_THRESHOLD: '0.08',
  EDDY_MONITOR_LAG_INTERVAL_MS: '5000',
};

export interface SessionOptions {
  /** Base config (its namespace fields are replaced by the run's own unless `namespace` is given). */
  baseEnv?: NodeJS.ProcessEnv;
  /** Use this namespace id instead of a fresh one. */
  namespace?: string;
  /** Extra EDDY_* variables for the platform's processes (after FAST_PLATFORM_ENV). */
  platformEnv?: Record<string, string>;
  /**
   * false: run the platform with its default settings (no FAST_PLATFORM_ENV), as a new client
   * gets it; the quality benchmark measures that. Default true.
   */
  fast?: boolean;
  servers?: number;
  /** Components not to start (e.g. run one in-process instead). */
  omitComponents?: string[];
  clients?: ClientSpec[];
  newClient?: ClientSpec | null;
  simulator?: Partial<Omit<SimulatorOptions, 'streams' | 'serverUrl' | 'apiKey' | 'clients' | 'newClient' | 'logger' | 'group' | 'story'>> & { story?: Partial<StoryOptions> };
  /** Directory for the run's logs and model store (default $EDDY_HOME/runs/<namespace>). */
  runDir?: string;
  /** Keep topics, keys, database and models after stop (default: delete them). */
  keep?: boolean;
  /** Do not start a simulator (the benchmark drives the platform itself). */
  noSimulator?: boolean;
  logger?: Logger;
}

export interface Session {
  id: string;
  config: EddyConfig;
  platform: Platform;
  streams: Streams;
  simulator?: Simulator;
  serverUrls: string[];
  /** /metrics of the processors and the trainer (the servers serve theirs on their own port). */
  metricsUrls: { processors: string; trainer: string };
  apiKey: string;
  runDir: string;
  stop(): Promise<void>;
}

export const DEFAULT_STORY: StoryOptions = {
  teamChangeClient: 'acme',
  addedTeam: { name: 'Security', topic: 'security', backlog: 30 },
  removedTeam: { name: 'Facilities', heir: 'IT Support' },
  signUpAfterS: 30,
  driftClient: 'globex',
  drift: { team: 'Service Desk', confusedWith: 'NetOps' },
  driftAfterFeedback: 150,
};

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

export async function startSession(opts: SessionOptions = {}): Promise<Session> {
  const id = opts.namespace ?? `sim${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const base = loadConfig(opts.baseEnv ?? process.env);
  const runDir = opts.runDir ?? path.join(base.home, 'runs', id);
  fs.mkdirSync(runDir, { recursive: true });
  const apiKey = randomBytes(18).toString('base64url');
  const ports = await Promise.all(Array.from({ length: opts.servers ?? 1 }, () => freePort()));
  const metricsPorts = { processors: await freePort(), trainer: await freePort() };
  const env: Record<string, string> = {
    EDDY_TOPIC_PREFIX: `${id}.`,
    EDDY_REDIS_PREFIX: id,
    EDDY_CLICKHOUSE_DATABASE: `eddy_${id}`,
    EDDY_MODEL_STORE_DIR: path.join(runDir, 'models'),
    EDDY_SERVER_ADMIN_KEY: apiKey,
    // Component logs go to files; info level would log every held-back trigger decision.
    EDDY_LOG_LEVEL: process.env.EDDY_LOG_LEVEL && process.env.EDDY_LOG_LEVEL !== 'silent' ? process.env.EDDY_LOG_LEVEL : 'warn',
    ...(opts.fast === false ? {} : FAST_PLATFORM_ENV),
    ...opts.platformEnv,
  };
  // The run's own Kafka client (simulator, watchers) logs errors only: the components log the rest.
  const config = loadConfig({ ...(opts.baseEnv ?? process.env), ...env, EDDY_LOG_LEVEL: 'error' });
  const logger = opts.logger ?? createLogger('simulator', 'warn');
  // Topics exist before any component starts, so no one races to create them.
  const streams = await connectStreams(config, 'eddy-simulator');
  const platform = new Platform(env, path.join(runDir, 'logs'));
  const cleanup = async () => {
    await streams.close().catch(() => undefined);
    if (!opts.keep) await deleteNamespace(config, streams).catch((err: unknown) => logger.warn({ err: String(err) }, 'cleanup incomplete'));
  };
  try {
    const groupReady = (group: string) => streams.withAdmin(async (admin) => {
      const groups = await admin.describeGroups([streams.topics.group(group)]);
      return groups.some((g) => g.state === 'Stable' && g.members.length > 0);
    });
    await platform.start(platformComponents({ serverPorts: ports, groupReady, metricsPorts }).filter((c) => !opts.omitComponents?.includes(c.name)));
  } catch (err) {
    await platform.stop(5000);
    await cleanup();
    throw err;
  }
  const serverUrls = ports.map((p) => `http://127.0.0.1:${p}`);
  let simulator: Simulator | undefined;
  if (!opts.noSimulator) {
    simulator = new Simulator({
      streams, serverUrl: serverUrls[0]!, apiKey, logger, group: `${id}.simulator`,
      clients: opts.clients ?? DEMO_CLIENTS,
      newClient: opts.newClient === null ? undefined : (opts.newClient ?? NEW_CLIENT),
      requestsPerSecond: 15, kafkaShare: 0.3, feedbackRate: 0.8, humanErrorRate: 0.03, manualAssignmentsPerSecond: 1, feedbackDelayMs: 2000,
      ...opts.simulator,
      story: { ...DEFAULT_STORY, ...opts.simulator?.story },
    });
    await simulator.start();
  }
  let stopping: Promise<void> | undefined;
  return {
    id, config, platform, streams, simulator, serverUrls, apiKey, runDir,
    metricsUrls: { processors: `http://127.0.0.1:${metricsPorts.processors}/metrics`, trainer: `http://127.0.0.1:${metricsPorts.trainer}/metrics` },
    stop() {
      stopping ??= (async () => {
        await simulator?.stop().catch(() => undefined);
        await platform.stop();
        await cleanup();
        if (!opts.keep) fs.rmSync(path.join(runDir, 'models'), { recursive: true, force: true });
      })();
      return stopping;
    },
  };
}

/** Deletes the run's topics, consumer groups, Redis keys and ClickHouse database; never anything else. */
export async function deleteNamespace(config: EddyConfig, streams: Streams): Promise<void> {
  await streams.withAdmin(async (admin) => {
    await deleteTopics(admin, streams.topics);
    const ours = (await admin.listGroups()).filter((g) => g.startsWith(config.topicPrefix));
    if (ours.length) await admin.deleteGroups(ours).catch(() => undefined);
  });
  const redis = await connectRedis(config);
  try {
    // Keys are `<prefix>:...`; SCAN+UNLINK in pages so a big run does not block Redis (every
    // master of a cluster, one UNLINK per slot there).
    for await (const keys of scanKeys(redis, `${config.redisPrefix}:*`)) await deleteKeys(redis, keys, 'deleting the run\'s keys', 'unlink');
  } finally {
    redis.disconnect();
  }
  // Dropping a database with many parts can take a while on a loaded machine.
  // A DROP on a loaded ClickHouse 18.16 was measured at almost 5 minutes here. ClickHouse finishes
  // a DROP it has started even when the client stops waiting, so wait a little, then let it be.
  const ch = createClickHouse(config, { requestTimeoutMs: 15_000 });
  try {
    await ch.command({ query: `DROP DATABASE IF EXISTS ${identifier(config.clickhouseDatabase)}` }).catch((err: unknown) => {
      if (!/timeout/i.test(errorMessage(err))) throw err;
    });
  } finally {
    await ch.close();
  }
}
