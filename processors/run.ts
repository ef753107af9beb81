import type { RedisClient } from '../common/redis.ts';
import { createClickHouse, type ClickHouseClient } from '../common/clickhouse.ts';
import type { EddyConfig } from '../common/config.ts';
import { EddyError, UsageError, errorMessage } from '../common/errors.ts';
import { instrumentClickHouse, instrumentRedis } from '../common/instrument.ts';
import { connectRedis } from '../common/redis.ts';
import { retry } from '../common/retry.ts';
import { connectStreams, type ConsumerRunner, type Streams } from '../streams/index.ts';
import { BatchInserter } from './analytics/inserter.ts';
import { PROCESSOR_NAMES, PROCESSORS, type ProcessorHandlers, type ProcessorName, type ProcessorStores } from './registry.ts';

export { PROCESSOR_NAMES, type ProcessorName };

export function parseProcessorNames(list: string | undefined): ProcessorName[] {
  if (!list) return [...PROCESSOR_NAMES];
  const names = list.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = names.filter((n) => !(PROCESSOR_NAMES as readonly string[]).includes(n));
  if (bad.length || names.length === 0) {
    throw new UsageError(`unknown processor(s) '${bad.join(',') || list}'; choose from ${PROCESSOR_NAMES.join(',')}`);
  }
  return [...new Set(names)] as ProcessorName[];
}

export interface RunningProcessors {
  streams: Streams;
  redis: RedisClient;
  clickhouse: ClickHouseClient;
  inserter: BatchInserter;
  runners: Partial<Record<ProcessorName, ConsumerRunner>>;
  handlers: Partial<ProcessorHandlers>;
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
 * Starts the chosen processors (processors/registry.ts) as consumer groups `<groupPrefix>.<name>`
 * in this process, sharing one Redis connection, one ClickHouse client and one BatchInserter (so
 * feature and analytics rows share inserts). Each processor is prepared first (its tables), waiting
 * while ClickHouse is away instead of exiting.
 */
export async function startProcessors(config: EddyConfig, opts: StartProcessorsOptions = {}): Promise<RunningProcessors> {
  const only = new Set<ProcessorName>(opts.only ?? PROCESSOR_NAMES);
  const group = opts.groupPrefix ?? 'processors';
  const streams = await connectStreams(config, 'eddy-processors');
  const redis = instrumentRedis(await connectRedis(config, { failFast: false, logger: streams.logger }), 'processors');
  const clickhouse = instrumentClickHouse(createClickHouse(config), 'processors');
  const inserter = new BatchInserter(clickhouse, config.clickhouseDatabase, { maxRows: config.processors.analyticsBatchRows, minRows: config.processors.analyticsBatchMinRows, maxMs: config.processors.analyticsBatchMs });
  const stores: ProcessorStores = { config, redis, clickhouse, inserter };
  const runners: RunningProcessors['runners'] = {};
  const handlers: Record<string, unknown> = {};
  for (const spec of PROCESSORS) {
    if (!only.has(spec.name)) continue;
    if ('prepare' in spec) {
      await retry(() => spec.prepare(stores), {
        initialMs: 500, maxMs: 10_000,
        onRetry: (err, retryInMs) => streams.logger.warn({ processor: spec.name, err: errorMessage(err), retryInMs }, 'dependency unavailable at start; waiting'),
      });
    }
    const handler = spec.create(stores);
    handlers[spec.name] = handler;
    runners[spec.name] = streams.consumer({
      group: `${group}.${spec.name}`, topics: spec.topics, handler,
      ...(spec.concurrentPartitions ? { partitionsConsumedConcurrently: Math.max(1, config.partitions) } : {}),
      ...('maxRecordsPerCall' in spec ? { maxRecordsPerCall: spec.maxRecordsPerCall } : {}),
    });
  }
  const all = Object.values(runners);
  const assigned = opts.waitForAssignment ? all.map((r) => r.waitForAssignment(60_000)) : [];
  for (const r of all) await r.start();
  await Promise.all(assigned);
  let stopped: Promise<void> | undefined;
  return {
    streams, redis, clickhouse, inserter, runners, handlers: handlers as Partial<ProcessorHandlers>,
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
