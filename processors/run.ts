import type { Redis } from 'ioredis';
import type { EddyConfig } from '../common/config.ts';
import { EddyError, errorMessage, isRetriable } from '../common/errors.ts';
import { connectStreams, type ConsumerRunner, type Streams } from '../streams/index.ts';
import { createClickHouse, type ClickHouseClient } from './analytics/clickhouse.ts';
import { BatchInserter } from './analytics/inserter.ts';
import { ANALYTICS_TOPICS, AnalyticsProcessor } from './analytics/processor.ts';
import { migrateAnalytics } from './analytics/schema.ts';
import { FEATURE_TOPICS, FeatureProcessor } from './features/processor.ts';
import { FEEDBACK_TOPICS, FeedbackProcessor } from './feedback/processor.ts';
import { connectRedis } from './redis.ts';
import { TRIGGER_TOPICS, TriggerProcessor } from './triggers/processor.ts';
import { instrumentClients, migrateQualityViews, monitorRunner } from './monitor/run.ts';

export const PROCESSOR_NAMES = ['features', 'analytics', 'triggers', 'feedback', 'monitor'] as const;
export type ProcessorName = (typeof PROCESSOR_NAMES)[number];

export function parseProcessorNames(list: string | undefined): ProcessorName[] {
  if (!list) return [...PROCESSOR_NAMES];
  const names = list.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !(PROCESSOR_NAMES as readonly string[]).includes(n));
  if (bad.length || names.length === 0) {
    throw new EddyError('USAGE', `unknown processor(s) '${bad.join(',') || list}'; choose from ${PROCESSOR_NAMES.join(',')}`);
  }
  return [...new Set(names)] as ProcessorName[];
}

export interface RunningProcessors {
  streams: Streams;
  redis: Redis;
  clickhouse: ClickHouseClient;
  inserter: BatchInserter;
  runners: Partial<Record<ProcessorName, ConsumerRunner>>;
  features?: FeatureProcessor;
  triggers?: TriggerProcessor;
  stop(): Promise<void>;
}

export interface StartProcessorsOptions {
  only?: readonly ProcessorName[];
  /** Consumer group suffix (replay uses a fresh one); default 'processors'. */
  groupPrefix?: string;
  /** Wait until each group has its partitions. */
  waitForAssignment?: boolean;
}

/**
 * Starts the chosen processors as consumer groups in this process, sharing one Redis
 * connection, one ClickHouse client and one BatchInserter (so feature and analytics rows share
 * inserts). Features and analytics consume their partitions concurrently: that is what lets
 * their rows meet in one insert.
 */
export async function startProcessors(config: EddyConfig, opts: StartProcessorsOptions = {}): Promise<RunningProcessors> {
  const only = opts.only ?? PROCESSOR_NAMES;
  const group = opts.groupPrefix ?? 'processors';
  const streams = await connectStreams(config, 'eddy-processors');
  const redis = await connectRedis(config, { failFast: false, logger: streams.logger });
  const clickhouse = createClickHouse(config);
  instrumentClients('processors', redis, clickhouse);
  const inserter = new BatchInserter(clickhouse, config.clickhouseDatabase, { maxRows: config.processors.analyticsBatchRows, maxMs: config.processors.analyticsBatchMs });
  const p = config.processors;
  const runners: RunningProcessors['runners'] = {};
  const concurrent = { partitionsConsumedConcurrently: Math.max(1, config.partitions), maxRecordsPerCall: 2000 };
  let features: FeatureProcessor | undefined;
  let triggers: TriggerProcessor | undefined;
  if (only.includes('features') || only.includes('analytics')) await whenAvailable(() => migrateAnalytics(clickhouse, config.clickhouseDatabase), streams.logger);
  if (only.includes('analytics')) await migrateQualityViews(clickhouse, config.clickhouseDatabase);
  if (only.includes('features')) {
    features = new FeatureProcessor(redis, inserter, { keyPrefix: config.redisPrefix, seenTtlMs: p.featuresSeenTtlMs, predictionTtlMs: p.predictionTtlMs });
    runners.features = streams.consumer({ group: `${group}.features`, topics: FEATURE_TOPICS, handler: features, ...concurrent });
  }
  if (only.includes('analytics')) {
    runners.analytics = streams.consumer({ group: `${group}.analytics`, topics: ANALYTICS_TOPICS, handler: new AnalyticsProcessor(clickhouse, config.clickhouseDatabase, inserter), ...concurrent });
  }
  if (only.includes('triggers')) {
    triggers = new TriggerProcessor(redis, streams.producer, { keyPrefix: config.redisPrefix, trigger: p.trigger });
    const triggerRunner = streams.consumer({ group: `${group}.triggers`, topics: TRIGGER_TOPICS, handler: triggers });
    runners.triggers = triggerRunner;
    // Held-back retrains are looked at again when their cooldown ends, not only at the client's
    // next event; a tenth of the cooldown (0.25–5 s) is as late as one may come.
    triggers.startSweep((topic, partition) => triggerRunner.assignment[topic]?.includes(partition) ?? false, Math.min(5_000, Math.max(250, p.trigger.cooldownMs / 10)));
  }
  if (only.includes('monitor')) runners.monitor = monitorRunner(streams, redis, config, group).runner;
  if (only.includes('feedback')) {
    runners.feedback = streams.consumer({ group: `${group}.feedback`, topics: FEEDBACK_TOPICS, handler: new FeedbackProcessor(redis, streams.producer, { keyPrefix: config.redisPrefix, maxWaits: p.feedbackMaxWaits }) });
  }
  const all = Object.values(runners);
  const assigned = opts.waitForAssignment ? all.map((r) => r.waitForAssignment(60_000)) : [];
  for (const r of all) await r.start();
  await Promise.all(assigned);
  let stopped: Promise<void> | undefined;
  return {
    streams, redis, clickhouse, inserter, runners, features, triggers,
    stop() {
      stopped ??= (async () => {
        await streams.close();
        redis.disconnect();
        await clickhouse.close();
      })();
      return stopped;
    },
  };
}

/**
 * Runs a start-up step, waiting (with capped backoff, logged) while its dependency is
 * unavailable: a processor started before ClickHouse waits for it instead of exiting.
 */
async function whenAvailable<T>(step: () => Promise<T>, logger: { warn(obj: object, msg: string): void }): Promise<T> {
  for (let delay = 500; ; delay = Math.min(delay * 2, 10_000)) {
    try {
      return await step();
    } catch (err) {
      if (!isRetriable(err)) throw err;
      logger.warn({ err: errorMessage(err), retryInMs: delay }, 'dependency unavailable at start; waiting');
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}
