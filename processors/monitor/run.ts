import type { ClickHouseClient } from '@clickhouse/client';
import type { Redis } from 'ioredis';
import type { EddyConfig } from '../../common/config.ts';
import type { ConsumerRunner, Streams } from '../../streams/index.ts';
import { instrumentClickHouse, instrumentRedis } from './instrument.ts';
export { migrateQualityViews } from './clickhouse.ts';
import { MONITOR_TOPICS, MonitorProcessor, type MonitorOptions } from './processor.ts';

export function monitorOptions(config: EddyConfig): MonitorOptions {
  const m = config.monitor;
  return {
    keyPrefix: config.redisPrefix,
    dropPct: m.dropPct,
    minSupport: m.minSupport,
    biasThreshold: m.biasThreshold,
    autoRollback: m.autoRollback,
    rollbackDropPct: m.rollbackDropPct,
    rollbackMinSupport: m.rollbackMinSupport,
    predictionTtlMs: config.processors.predictionTtlMs,
  };
}

/**
 * The monitor as a consumer group `${group}.monitor`. Its partitions are consumed concurrently:
 * a client's predictions and feedback live on different topics, and the join in Redis does not
 * care which arrives first.
 */
export function monitorRunner(streams: Streams, redis: Redis, config: EddyConfig, group = 'processors'): { runner: ConsumerRunner; processor: MonitorProcessor } {
  const processor = new MonitorProcessor(redis, streams.producer, monitorOptions(config));
  const runner = streams.consumer({
    group: `${group}.monitor`, topics: MONITOR_TOPICS, handler: processor,
    partitionsConsumedConcurrently: Math.max(1, config.partitions), maxRecordsPerCall: 2000,
  });
  return { runner, processor };
}

/** Latency histograms on a process's shared clients (one registration line per process). */
export function instrumentClients(component: string, redis?: Redis, clickhouse?: ClickHouseClient): void {
  if (redis) instrumentRedis(redis, component);
  if (clickhouse) instrumentClickHouse(clickhouse, component);
}
