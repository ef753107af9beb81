import type { RedisClient } from '../common/redis.ts';
import { connectServingRedis, duplicateRedis } from '../common/redis.ts';
import type { FastifyInstance } from 'fastify';
import type { EddyConfig } from '../common/config.ts';
import { errorMessage } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { RealtimeFeatureReader } from '../featurizer/realtime.ts';
import { loadPredictor } from '../models/predictor.ts';
import { FsModelStore } from '../models/store.ts';
import { connectStreams, FETCH_EACH_EVENT, LogFollower, TOPIC_OF_EVENT, TopicNames, type ConsumerRunner, type Streams } from '../streams/index.ts';
import { createApp } from './app.ts';
import { ArtifactLoaderThread } from './artifact-loader.ts';
import { instrumentRedis } from '../common/instrument.ts';
import { metricsRegistry, serveProcessMetrics, type MetricsEndpoint, type prom } from '../common/metrics.ts';

/** One feature read in this many is timed into eddy_redis_command_seconds{component="server"}. */
const FEATURE_READ_SAMPLE = 64;
import { dashboardRoutes } from './dashboard/plugin.ts';
import { reviewRoutes } from './http/review.ts';
import { kafkaPredictHandler } from './kafka-predict.ts';
import { ModelManager, type ArtifactLoader } from './model-manager.ts';
import { PredictionService, type FeatureReader } from './prediction-service.ts';
import { PredictionPublisher } from './publisher.ts';
import { PredictionSpool } from './spool.ts';
import { hotMetrics, serverMetrics } from './metrics.ts';
import { ModelAdmin, ModelRegistry } from '../models/lifecycle.ts';
import { LabelDirectory, redisExampleCounts } from './labels.ts';

/**
 * One prediction server process: wires the source (log follower -> registry), the loader (model
 * store + predictor), the manager, the prediction service, both channels (HTTP, Kafka) and the
 * publisher; starts them in dependency order and closes them in reverse (fastify/demo: external
 * clients are closed in onClose).
 */
export interface PredictionServer {
  app: FastifyInstance;
  /** `http://host:port` once listening. */
  url: string;
  /** The internal /metrics endpoint without a key (EDDY_SERVER_METRICS_PORT), when configured. */
  metricsUrl: string | undefined;
  registry: ModelRegistry;
  labels: LabelDirectory;
  manager: ModelManager;
  service: PredictionService;
  publisher: PredictionPublisher;
  follower: LogFollower;
  streams: Streams;
  redis: RedisClient;
  logger: Logger;
  /** Resolves when the registry caught up with the log (HTTP answers from then on). */
  ready: Promise<void>;
  /** Resolves when the Kafka predict consumer joined its group (after `ready`; immediately without it). */
  kafkaReady: Promise<void>;
  close(): Promise<void>;
}

export interface StartOptions {
  /** Listen on a port (default: yes). Tests may use app.inject without listening. */
  listen?: boolean;
  /** Consume PredictionRequested (default: yes). */
  kafkaPredict?: boolean;
  /** Wraps the artifact loader (the loader thread): benchmarks time it, tests count or break loads. */
  wrapLoader?: (loader: ArtifactLoader) => ArtifactLoader;
}

/** Loads on the calling thread (unit tests of the manager; the server uses ArtifactLoaderThread). */
export function storeLoader(config: EddyConfig): ArtifactLoader {
  const store = new FsModelStore(config.modelStoreDir);
  return async (_clientId, info) => loadPredictor(await store.get(info.artifactUri, info.artifactSha256));
}

export async function startServer(config: EddyConfig, opts: StartOptions = {}): Promise<PredictionServer> {
  const s = config.server;
  const logger = createLogger('server', config.logLevel).child({ replica: s.replicaId });
  const streams = await connectStreams(config, `eddy-server-${s.replicaId}`);
  const redis = await connectServingRedis(config, logger);

  const registry = new ModelRegistry();
  const labels = new LabelDirectory();
  const artifacts = new ArtifactLoaderThread(config.modelStoreDir, logger);
  const manager = new ModelManager(opts.wrapLoader ? opts.wrapLoader(artifacts.loader) : artifacts.loader, s.modelMemoryBytes, logger);
  // Review and dashboard routes use a connection of their own, instrumented per command
  // (common/instrument.ts). The feature reads of every prediction are not wrapped per command
  // (a timer, two closures and a labelled histogram observation per HGETALL was a few % of a
  // prediction's CPU): one read in FEATURE_READ_SAMPLE is timed into the same histogram instead.
  const adminRedis = instrumentRedis(duplicateRedis(redis, { enableAutoPipelining: false }), 'server');
  adminRedis.on('error', (err) => logger.debug({ err: errorMessage(err) }, 'redis error (review and dashboard routes answer 503 while it lasts)'));
  await adminRedis.connect().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'redis not reachable at start (review and dashboard routes)'));
  const redisSeconds = metricsRegistry.getSingleMetric('eddy_redis_command_seconds') as prom.Histogram<string> | undefined;
  const sampledRead = { ok: redisSeconds?.labels({ component: 'server', command: 'hgetall', outcome: 'ok' }), defaulted: redisSeconds?.labels({ component: 'server', command: 'hgetall', outcome: 'error' }) };
  let reads = 0;
  const states = hotMetrics.featureStates();
  const features = new RealtimeFeatureReader(redis, config.redisPrefix, {
    timeoutMs: s.featureTimeoutMs, cacheEntries: s.featureCacheEntries, cacheCounts: { hit: states.cell({ result: 'hit' }), miss: states.cell({ result: 'miss' }) }, logger,
  });
  const sampled = <T>(read: Promise<T>, defaulted: (r: T) => boolean): Promise<T> => {
    if (++reads % FEATURE_READ_SAMPLE !== 0 || !sampledRead.ok) return read;
    const started = performance.now();
    return read.then((r) => {
      (defaulted(r) ? sampledRead.defaulted : sampledRead.ok)?.observe((performance.now() - started) / 1000);
      return r;
    });
  };
  const readFeatures: FeatureReader = Object.assign(
    (clientId: string, metadata: Record<string, string>) => sampled(features.read(clientId, metadata), (r) => r.defaulted),
    { many: (clientId: string, metadatas: ReadonlyArray<Record<string, string>>) => sampled(features.readMany(clientId, metadatas), (rs) => rs.some((r) => r.defaulted)) },
  );
  const service = new PredictionService(registry, labels, manager, readFeatures, redisExampleCounts(redis, config.redisPrefix, s.featureTimeoutMs), s, logger);
  // The spool of answered predictions (server/spool.ts): what a dead server left for this topic is replayed first.
  const spool = s.spool === 'off' ? undefined : new PredictionSpool({
    dir: s.spoolDir, topic: new TopicNames(config.topicPrefix).physical(TOPIC_OF_EVENT.PredictionMade), fsync: s.spool === 'fsync', logger,
  });
  const publisher = new PredictionPublisher(s.publisher === 'thread' ? { thread: config } : { producer: streams.producer }, { capacity: s.publishBuffer, logger, spool });
  const admin = new ModelAdmin(registry, streams.producer);
  // The registry and the label definitions gate readiness: HTTP answers only from a complete
  // picture of the log. The `examples` topic is not read: the baseline's example counts come from
  // Redis (redisExampleCounts).
  const follower = new LogFollower(streams, {
    name: `server-registry-${s.replicaId}`, topics: ['models', 'labels'], logger,
    apply: (r) => {
      if (r.topic === 'labels') return labels.apply(r.event);
      const change = registry.apply(r.event);
      if (change?.kind === 'ignored') logger.warn({ clientId: change.clientId, reason: change.reason }, 'model event ignored');
    },
  });

  const app = createApp({ config: s, service, registry, manager, publisher, admin, isReady: () => follower.ready, logger });
  const servingRedis = adminRedis;
  app.register(reviewRoutes, {
    auth: s, redis: servingRedis, keyPrefix: config.redisPrefix, producer: streams.producer, labels, registry,
    closedTtlMs: config.processors.predictionTtlMs, isReady: () => follower.ready,
  });
  app.register(dashboardRoutes, { auth: s, redis: servingRedis, keyPrefix: config.redisPrefix, registry, streams, lagIntervalMs: config.monitor.lagIntervalMs, logger });
  // Listening starts now, while the follower joins its group and reads the log: fastify builds
  // its routes' validators and serializers (CPU) during those waits on Kafka (I/O) instead of
  // after them. Until the registry has caught up, predictions answer 503 NOT_READY (the routes'
  // guard) and /readyz says not ready, as before.
  const listening: Promise<string> = (opts.listen ?? true) ? app.listen({ host: s.host, port: s.port }) : Promise.resolve(app.ready()).then(() => '');
  // Awaited below, once the follower started; marked handled here so that a port already in use
  // is not an unhandled rejection while it starts.
  listening.catch(() => undefined);
  const stopFollower = () => follower.stop().catch(() => undefined);
  try {
    await follower.start();
  } catch (err) {
    await stopFollower();
    await listening.catch(() => undefined);
    await app.close().catch(() => undefined);
    throw err;
  }

  let predictRunner: ConsumerRunner | undefined;
  const ready = follower.whenReady().then(() => {
    serverMetrics.registryReady().set(1);
    logger.info({ clients: registry.size }, 'model registry caught up with the models topic; ready');
  });
  const kafkaReady = ready.then(async () => {
    // Kafka requests are answered only once the registry is complete: never from a half-read log.
    if (!(opts.kafkaPredict ?? true)) return;
    predictRunner = streams.consumer({
      group: 'server-predict',
      topics: ['prediction-requests'],
      // A new group starts at the end: a first deployment does not answer a week of stale requests.
      fromBeginning: false,
      partitionsConsumedConcurrently: Math.min(config.partitions, 4),
      // Answered as soon as a request is there: a caller waits on this path (the other consumers
      // let a fetch fill for up to EDDY_KAFKA_FETCH_MAX_WAIT_MS).
      fetch: FETCH_EACH_EVENT,
      handler: kafkaPredictHandler(service, s, (ms) => follower.catchUpNow(ms)),
    });
    const joined = predictRunner.waitForAssignment(60_000);
    await predictRunner.start();
    await joined;
  });
  kafkaReady.catch((err: unknown) => logger.error({ err: errorMessage(err) }, 'Kafka predict consumer did not start'));

  let url: string;
  try {
    url = await listening;
  } catch (err) {
    await stopFollower();
    throw err;
  }
  if (url) logger.info({ url }, 'prediction server listening');

  // /metrics on an internal port for the scraper; on the API port it needs the admin key.
  const metrics: MetricsEndpoint | undefined = await serveProcessMetrics(
    { logLevel: config.logLevel, monitor: { ...config.monitor, metricsPort: s.metricsPort, metricsHost: s.metricsHost } }, 'server');

  let closing: Promise<void> | undefined;
  return {
    app, url, metricsUrl: metrics?.url, registry, labels, manager, service, publisher, follower, streams, redis, logger, ready, kafkaReady,
    close() {
      closing ??= (async () => {
        await app.close();
        await metrics?.close();
        await predictRunner?.stop();
        await follower.stop();
        await publisher.close();
        await artifacts.close();
        await streams.close();
        features.close();
        redis.disconnect();
        adminRedis.disconnect();
        logger.info('prediction server closed');
      })();
      return closing;
    },
  };
}
