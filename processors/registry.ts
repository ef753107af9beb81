import type { RedisClient } from '../common/redis.ts';
import type { ClickHouseClient } from '../common/clickhouse.ts';
import type { EddyConfig } from '../common/config.ts';
import type { EventHandler, TopicName } from '../streams/index.ts';
import { BatchInserter } from './analytics/inserter.ts';
import { ANALYTICS_TOPICS, AnalyticsProcessor } from './analytics/processor.ts';
import { migrateAnalytics } from './analytics/schema.ts';
import { FEATURE_TOPICS, FeatureProcessor } from './features/processor.ts';
import { FEEDBACK_TOPICS, FeedbackProcessor } from './feedback/processor.ts';
import { migrateQualityViews } from './monitor/clickhouse.ts';
import { MONITOR_TOPICS, MonitorProcessor, monitorOptions } from './monitor/processor.ts';
import { TRIGGER_TOPICS, TriggerProcessor } from './triggers/processor.ts';
import { REVIEW_TOPICS, ReviewProcessor, reviewOptions } from './review/processor.ts';

/** What every processor of a process shares: the stores, created and closed by the runtime (processors/run.ts). */
export interface ProcessorStores {
  config: EddyConfig;
  redis: RedisClient;
  clickhouse: ClickHouseClient;
  /** One ClickHouse batcher per process, so rows of the feature and analytics processors share inserts. */
  inserter: BatchInserter;
}

/** One processor: what it reads, how it is consumed, how it is set up and made (after Kafka Streams' topology). */
export interface ProcessorSpec<H extends EventHandler = EventHandler> {
  name: string;
  description: string;
  topics: readonly TopicName[];
  /**
   * Consume the partitions concurrently (order is kept within each). Safe for processors whose
   * per-client state does not span a call of another partition; the trigger processor's
   * read-modify-write of one state per client is not.
   */
  concurrentPartitions: boolean;
  /** Largest slice of a fetched batch handed to one call (default: the runner's). */
  maxRecordsPerCall?: number;
  /** One-time set-up before consuming (ClickHouse tables), retried while its dependency is away. */
  prepare?(stores: ProcessorStores): Promise<void>;
  create(stores: ProcessorStores): H;
}

/** Every processor Eddy has; `eddy processors run --only` picks among their names. */
export const PROCESSORS = [
  {
    name: 'features',
    description: 'real-time features, label sets, counters and prediction records in Redis; example rows with their features in ClickHouse',
    topics: FEATURE_TOPICS,
    concurrentPartitions: true,
    maxRecordsPerCall: 2000,
    prepare: (s: ProcessorStores) => migrateAnalytics(s.clickhouse, s.config.clickhouseDatabase),
    create: (s: ProcessorStores) => new FeatureProcessor(s.redis, s.inserter, { keyPrefix: s.config.redisPrefix, seenTtlMs: s.config.processors.featuresSeenTtlMs, predictionTtlMs: s.config.processors.predictionTtlMs }),
  },
  {
    name: 'analytics',
    description: 'every other event into its ClickHouse table, and the quality views analysts query',
    topics: ANALYTICS_TOPICS,
    concurrentPartitions: true,
    maxRecordsPerCall: 2000,
    prepare: async (s: ProcessorStores) => {
      await migrateAnalytics(s.clickhouse, s.config.clickhouseDatabase);
      await migrateQualityViews(s.clickhouse, s.config.clickhouseDatabase);
    },
    create: (s: ProcessorStores) => new AnalyticsProcessor(s.clickhouse, s.config.clickhouseDatabase, s.inserter),
  },
  {
    name: 'triggers',
    description: 'the retrain policy: RetrainRequested on new clients, new data, label changes, quality drops, staleness',
    topics: TRIGGER_TOPICS,
    // One JSON state per client folded from four topics: one call at a time.
    concurrentPartitions: false,
    create: (s: ProcessorStores) => new TriggerProcessor(s.redis, { keyPrefix: s.config.redisPrefix, trigger: s.config.processors.trigger }),
  },
  {
    name: 'monitor',
    description: 'live quality from feedback, alerts, automatic rollback (the quality join marks prediction records judged)',
    topics: MONITOR_TOPICS,
    // A client's predictions and feedback live on different topics; the join in Redis does not care which arrives first.
    concurrentPartitions: true,
    maxRecordsPerCall: 2000,
    create: (s: ProcessorStores) => new MonitorProcessor(s.redis, monitorOptions(s.config)),
  },
  {
    name: 'review',
    description: 'the review queue (active learning): unsure, confidently wrong and shadow-disagreeing predictions, ranked and de-duplicated in Redis',
    topics: REVIEW_TOPICS,
    // Every item update is one atomic script; predictions and feedback may be handled in any order.
    concurrentPartitions: true,
    maxRecordsPerCall: 2000,
    create: (s: ProcessorStores) => new ReviewProcessor(s.redis, reviewOptions(s.config)),
  },
  {
    name: 'feedback',
    description: 'ACCEPTED / REASSIGNED feedback into LabeledExamples, with the text of the prediction record',
    topics: FEEDBACK_TOPICS,
    concurrentPartitions: false,
    create: (s: ProcessorStores) => new FeedbackProcessor(s.redis, { keyPrefix: s.config.redisPrefix, maxWaits: s.config.processors.feedbackMaxWaits }),
  },
] as const satisfies readonly ProcessorSpec[];

export type ProcessorName = (typeof PROCESSORS)[number]['name'];
export const PROCESSOR_NAMES: readonly ProcessorName[] = PROCESSORS.map((p) => p.name);

/** The handler type each processor's factory makes, by name. */
export type ProcessorHandlers = { [S in (typeof PROCESSORS)[number] as S['name']]: ReturnType<S['create']> };
