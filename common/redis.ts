import { Redis, ReplyError } from 'ioredis';
import type { EddyConfig } from './config.ts';
import { DependencyUnavailableError, EddyError, errorMessage } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * A Redis connection for processors. Commands fail fast while Redis is away (no offline queue),
 * so a handler throws a retriable error at once and the consumer runner pauses the partition
 * without committing, instead of commands piling up in memory; ioredis reconnects by itself.
 */
export async function connectRedis(config: Pick<EddyConfig, 'redisUrl'>, opts: { failFast?: boolean; logger?: Logger } = {}): Promise<Redis> {
  const redis = new Redis(config.redisUrl, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: (times) => Math.min(50 * times, 1000),
  });
  // Connection errors surface through the commands that fail; the event must not crash the process.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (err) {
    if (opts.failFast ?? true) {
      redis.disconnect();
      throw new DependencyUnavailableError('redis', `Redis at ${config.redisUrl} is not reachable (${errorMessage(err)})`, err);
    }
    // Long-running processors start anyway: ioredis keeps reconnecting, and until it does every
    // handler fails with a retriable error, so consumption pauses instead of the process exiting.
    opts.logger?.warn({ redis: config.redisUrl, err: errorMessage(err) }, 'Redis not reachable yet; processing waits for it');
  }
  return redis;
}

/**
 * A Redis connection for the prediction path: a request waits at most its feature deadline, so
 * commands fail fast while Redis is away (defaults are served, flagged) instead of queueing. No
 * auto-pipelining: the feature reader (featurizer/realtime.ts) already sends the reads of every
 * request of one event-loop turn as one command, and ioredis's per-turn pipeline object cost more
 * than it saved. Never throws: when Redis is not reachable at start, ioredis keeps reconnecting
 * meanwhile.
 */
export async function connectServingRedis(config: Pick<EddyConfig, 'redisUrl'>, logger: Logger): Promise<Redis> {
  const redis = new Redis(config.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
  redis.on('error', (err) => logger.debug({ err: errorMessage(err) }, 'redis error (features default while it lasts)'));
  await redis.connect().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'redis not reachable at start; predictions use default features until it is'));
  return redis;
}

/**
 * Tells "Redis is away or busy" (retriable: pause and retry) from "Redis refused the command"
 * (a bug: not retriable). Replies LOADING/BUSY/TRYAGAIN/MASTERDOWN are transient.
 */
export function redisError(err: unknown, what: string): EddyError {
  if (err instanceof EddyError) return err;
  const message = errorMessage(err);
  if (err instanceof ReplyError && !/^(LOADING|BUSY|TRYAGAIN|MASTERDOWN|CLUSTERDOWN|READONLY)/.test(message)) {
    return new EddyError('REDIS_REJECTED', `${what}: ${message}`, { cause: err });
  }
  return new DependencyUnavailableError('redis', `${what}: Redis unavailable (${message})`, err);
}

/** Runs a pipeline and returns its results, throwing the first error as a classified EddyError. */
export async function execPipeline(pipeline: ReturnType<Redis['pipeline']>, what: string): Promise<unknown[]> {
  let results: Array<[Error | null, unknown]> | null;
  try {
    results = await pipeline.exec();
  } catch (err) {
    throw redisError(err, what);
  }
  if (!results) throw new DependencyUnavailableError('redis', `${what}: pipeline was discarded`);
  return results.map(([err, value]) => {
    if (err) throw redisError(err, what);
    return value;
  });
}
