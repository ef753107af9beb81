import { Cluster, Redis, ReplyError, type ChainableCommander, type ClusterOptions, type RedisOptions } from 'ioredis';
import type { EddyConfig } from './config.ts';
import { DependencyUnavailableError, EddyError, errorMessage } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * One Redis server or a Redis Cluster: every component takes either. All keys of a client share
 * its `{clientId}` hash tag (common/keyspace.ts), so whatever touches one client (a Lua script, a
 * MULTI, a pipeline) is one slot; what spans clients goes through `SlotPipelines`.
 */
export type RedisClient = Redis | Cluster;

/** What EDDY_REDIS_URL names: one server (its URL as given) or the seed nodes of a cluster. */
export type RedisTarget =
  | { cluster: false; url: string }
  | { cluster: true; nodes: Array<{ host: string; port: number }>; tls: boolean; username?: string; password?: string };

/**
 * `redis+cluster://[user:password@]host:port,host:port,...` (`rediss+cluster://` for TLS) names
 * seed nodes of a Redis Cluster: any reachable one is enough, ioredis learns the others and the
 * slot map from it. Anything else is a plain redis:// or rediss:// URL of one server.
 */
export function parseRedisTarget(url: string): RedisTarget {
  const m = /^(rediss?)\+cluster:\/\/(?:([^@/]*)@)?([^/]+?)\/?$/.exec(url);
  if (!m) return { cluster: false, url };
  const [, scheme, auth, hosts] = m;
  const nodes = hosts!.split(',').map((hp) => {
    const at = hp.lastIndexOf(':');
    const port = Number(hp.slice(at + 1));
    if (at <= 0 || !Number.isInteger(port) || port <= 0 || port > 65535) throw new EddyError('CONFIG_INVALID', `EDDY_REDIS_URL: '${hp}' is not host:port`);
    return { host: hp.slice(0, at).replace(/^\[(.*)\]$/, '$1'), port };
  });
  let username: string | undefined;
  let password: string | undefined;
  if (auth !== undefined) {
    const colon = auth.indexOf(':');
    username = decodeURIComponent(colon < 0 ? auth : auth.slice(0, colon)) || undefined;
    password = colon < 0 ? undefined : decodeURIComponent(auth.slice(colon + 1));
  }
  return { cluster: true, nodes, tls: scheme === 'rediss', username, password };
}

/** The URL with any password replaced, for logs and error messages. */
function shownUrl(url: string): string {
  return url.replace(/\/\/([^:@/]*):[^@/]*@/, '//$1:***@');
}

/**
 * A client for `url` whose commands fail at once while Redis (or the part of a cluster that
 * holds their slot) is away, instead of waiting in an offline queue. On a cluster the same
 * options go to every node's connection; a command redirected (MOVED/ASK, a failover) is
 * retried by ioredis within its redirection limit, which is the cluster's own reconnect.
 */
function createRedis(url: string, options: RedisOptions): RedisClient {
  const target = parseRedisTarget(url);
  if (!target.cluster) return new Redis(url, options);
  const clusterOptions: ClusterOptions = {
    lazyConnect: options.lazyConnect,
    enableOfflineQueue: options.enableOfflineQueue,
    enableAutoPipelining: options.enableAutoPipelining,
    clusterRetryStrategy: options.retryStrategy ?? ((times) => Math.min(50 * times, 2000)),
    redisOptions: {
      ...options,
      username: target.username, password: target.password,
      ...(target.tls ? { tls: {} } : {}),
    },
  };
  return new Cluster(target.nodes, clusterOptions);
}

/**
 * A Redis connection for processors. Commands fail fast while Redis is away (no offline queue),
 * so a handler throws a retriable error at once and the consumer runner pauses the partition
 * without committing, instead of commands piling up in memory; ioredis reconnects by itself.
 * `redis+cluster://` URLs give a Cluster with the same behaviour (docs/reliability.md).
 */
export async function connectRedis(config: Pick<EddyConfig, 'redisUrl'>, opts: { failFast?: boolean; logger?: Logger } = {}): Promise<RedisClient> {
  const redis = createRedis(config.redisUrl, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 0, retryStrategy: (times) => Math.min(50 * times, 1000) });
  // Connection errors surface through the commands that fail; the event must not crash the process.
  redis.on('error', () => undefined);
  try {
    await redis.connect();
  } catch (err) {
    if (opts.failFast ?? true) {
      redis.disconnect();
      throw new DependencyUnavailableError('redis', `Redis at ${shownUrl(config.redisUrl)} is not reachable (${errorMessage(err)})`, err);
    }
    // Long-running processors start anyway: ioredis keeps reconnecting, and until it does every
    // handler fails with a retriable error, so consumption pauses instead of the process exiting.
    opts.logger?.warn({ redis: shownUrl(config.redisUrl), err: errorMessage(err) }, 'Redis not reachable yet; processing waits for it');
  }
  return redis;
}

/**
 * A Redis connection for the prediction path: a request waits at most its feature deadline, so
 * commands fail fast while Redis is away (defaults are served, flagged) instead of queueing. No
 * auto-pipelining: the feature reader (featurizer/realtime.ts) already sends the reads of every
 * request of one event-loop turn as one command (one per client on a cluster), and ioredis's
 * per-turn pipeline object cost more than it saved. Never throws: when Redis is not reachable at
 * start, ioredis keeps reconnecting meanwhile.
 */
export async function connectServingRedis(config: Pick<EddyConfig, 'redisUrl'>, logger: Logger): Promise<RedisClient> {
  const redis = createRedis(config.redisUrl, { enableOfflineQueue: false, maxRetriesPerRequest: 0, lazyConnect: true });
  redis.on('error', (err) => logger.debug({ err: errorMessage(err) }, 'redis error (features default while it lasts)'));
  await redis.connect().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'redis not reachable at start; predictions use default features until it is'));
  return redis;
}

/** A second connection with the options of `redis` (and `options` over them), not yet connected. */
export function duplicateRedis(redis: RedisClient, options: RedisOptions): RedisClient {
  if (redis instanceof Cluster) return redis.duplicate(undefined, { lazyConnect: true, ...options, redisOptions: { ...redis.options.redisOptions, ...options } });
  return redis.duplicate({ lazyConnect: true, ...options });
}

/**
 * Pages of the keys matching `pattern`, from every master of a cluster (SCAN on a Cluster client
 * goes to one node and sees only its keys) or from the one server. A key may appear in more than
 * one page (SCAN's own guarantee); callers must not mind.
 */
export async function* scanKeys(redis: RedisClient, pattern: string, count = 1000): AsyncGenerator<string[]> {
  const nodes = redis instanceof Cluster ? redis.nodes('master') : [redis];
  for (const node of nodes) {
    let cursor = '0';
    do {
      const [next, keys] = await node.scan(cursor, 'MATCH', pattern, 'COUNT', count);
      cursor = next;
      if (keys.length) yield keys;
    } while (cursor !== '0');
  }
}

/**
 * Deletes `keys` (or UNLINKs them: memory reclaimed in the background) and returns how many existed: one DEL on a single Redis; on a cluster, which
 * refuses a DEL whose keys are in different slots (CROSSSLOT), one DEL per hash slot group,
 * all in the pipelines of one `SlotPipelines`.
 */
export async function deleteKeys(redis: RedisClient, keys: readonly string[], what: string, command: 'del' | 'unlink' = 'del'): Promise<number> {
  if (keys.length === 0) return 0;
  if (!redis.isCluster) {
    try {
      return await redis[command](...keys);
    } catch (err) {
      throw redisError(err, what);
    }
  }
  const bySlot = new Map<string, string[]>();
  for (const key of keys) {
    const group = hashSlotGroup(key);
    const list = bySlot.get(group);
    if (list) list.push(key);
    else bySlot.set(group, [key]);
  }
  const pipeline = new SlotPipelines(redis);
  for (const list of bySlot.values()) pipeline.queue(list[0]!, (q) => q[command](...list));
  return (await pipeline.exec(what)).reduce<number>((sum, n) => sum + Number(n), 0);
}

/**
 * Tells "Redis is away or busy" (retriable: pause and retry) from "Redis refused the command"
 * (a bug: not retriable). Replies LOADING/BUSY/TRYAGAIN/MASTERDOWN/CLUSTERDOWN/READONLY are transient (READONLY: a
 * failover made the node a replica; the slot map catches up).
 */
export function redisError(err: unknown, what: string): EddyError {
  if (err instanceof EddyError) return err;
  const message = errorMessage(err);
  if (err instanceof ReplyError && !/^(LOADING|BUSY|TRYAGAIN|MASTERDOWN|CLUSTERDOWN|READONLY)/.test(message)) {
    return new EddyError('REDIS_REJECTED', `${what}: ${message}`, { cause: err });
  }
  // ioredis's Cluster refuses, before sending, commands and pipelines whose keys span slots
  // (nodes): the same mistake as Redis's CROSSSLOT reply, and as permanent.
  if (/should belong to the same slot|CROSSSLOT/.test(message)) {
    return new EddyError('REDIS_REJECTED', `${what}: ${message}`, { cause: err });
  }
  return new DependencyUnavailableError('redis', `${what}: Redis unavailable (${message})`, err);
}

/** Runs a pipeline and returns its results, throwing the first error as a classified EddyError. */
export async function execPipeline(pipeline: ChainableCommander, what: string): Promise<unknown[]> {
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

/**
 * The Redis commands of one unit of work (a handler call over many clients), sent as ONE
 * pipeline on a single Redis and as one pipeline per hash slot group on a cluster, where ioredis
 * refuses a pipeline whose keys are on different nodes. Commands are queued with the key that
 * routes them (every key of one `queue` call must share its slot: one client's keys do);
 * `exec` returns the replies in the order the commands were queued, whichever pipeline carried
 * them, so callers index replies as they would with one pipeline.
 *
 * Grouped by hash tag (the `{clientId}` of every client key; a key without one by itself), not
 * by node: a slot map that changes between grouping and sending (a resharding) cannot split a
 * group, and ioredis follows MOVED for each pipeline. The pipelines of one call are sent
 * together (concurrently), so a cluster adds no round trips, only per-pipeline framing.
 */
export class SlotPipelines<P extends ChainableCommander = ChainableCommander> {
  private readonly single: P | undefined;
  private readonly bySlot = new Map<string, P>();
  /** On a cluster: which pipeline holds each queued run of commands, in queue order. */
  private readonly runs: Array<{ pipeline: P; from: number; to: number }> = [];
  private queued = 0;

  constructor(private readonly redis: RedisClient) {
    // The single-server path stays what it was: one pipeline, no bookkeeping per command.
    if (!redis.isCluster) this.single = redis.pipeline() as P;
  }

  /** Queues what `add` puts on the pipeline of `key`'s slot. */
  queue(key: string, add: (pipeline: P) => unknown): void {
    if (this.single) {
      add(this.single);
      return;
    }
    const slot = hashSlotGroup(key);
    let pipeline = this.bySlot.get(slot);
    if (!pipeline) this.bySlot.set(slot, (pipeline = this.redis.pipeline() as P));
    const from = pipeline.length;
    add(pipeline);
    this.runs.push({ pipeline, from, to: pipeline.length });
    this.queued += pipeline.length - from;
  }

  /** Commands queued so far. */
  get length(): number {
    return this.single ? this.single.length : this.queued;
  }

  /** Pipelines this call sends (1 on a single server). */
  get pipelines(): number {
    return this.single ? 1 : this.bySlot.size;
  }

  /** Sends everything; the replies in queue order, the first error thrown as a classified EddyError. */
  async exec(what: string): Promise<unknown[]> {
    if (this.single) return execPipeline(this.single, what);
    const pipelines = [...this.bySlot.values()];
    const replies = await Promise.all(pipelines.map((p) => execPipeline(p, what)));
    const repliesOf = new Map(pipelines.map((p, i) => [p, replies[i]!]));
    const out: unknown[] = [];
    for (const { pipeline, from, to } of this.runs) {
      const r = repliesOf.get(pipeline)!;
      for (let i = from; i < to; i++) out.push(r[i]);
    }
    return out;
  }
}

/**
 * What decides a key's slot: the part between the first `{` and the next `}` when that is not
 * empty (Redis Cluster's hash tag rule), else the whole key. Keys with equal groups share a slot.
 */
export function hashSlotGroup(key: string): string {
  const open = key.indexOf('{');
  if (open >= 0) {
    const close = key.indexOf('}', open + 1);
    if (close > open + 1) return key.slice(open + 1, close);
  }
  return key;
}
