import type { ClickHouseClient } from '@clickhouse/client';
import type { RedisClient } from './redis.ts';
import { histogram } from './metrics.ts';

/**
 * Latency histograms for Redis and ClickHouse, added to an existing client in one call (Benthos'
 * rule: metrics come from the runtime, not from every call site). Wrapping the client's own entry
 * points means every command of every component that uses the client is measured.
 */
const redisSeconds = () => histogram({
  name: 'eddy_redis_command_seconds', help: 'Redis command latency (a pipeline counts each command from send to reply)', labelNames: ['component', 'command', 'outcome'],
  buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
});

const clickhouseSeconds = () => histogram({
  name: 'eddy_clickhouse_request_seconds', help: 'ClickHouse request latency by operation (query, insert, command, exec)', labelNames: ['component', 'operation', 'outcome'],
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
});

const INSTRUMENTED = Symbol.for('eddy.instrumented');

/** Measures every command sent through `redis` (also inside pipelines and custom Lua commands). */
export function instrumentRedis(redis: RedisClient, component: string): RedisClient {
  const r = redis as RedisClient & { [INSTRUMENTED]?: boolean };
  if (r[INSTRUMENTED]) return redis;
  r[INSTRUMENTED] = true;
  const h = redisSeconds();
  const send = redis.sendCommand.bind(redis);
  // Lua commands defined with defineCommand arrive as EVALSHA/EVAL: the name is enough here.
  // Every argument is passed on: a Cluster's sendCommand takes a third, the node a redirected
  // command goes to.
  redis.sendCommand = ((command: { name: string; promise: Promise<unknown> }, ...rest: unknown[]) => {
    const stop = h.startTimer({ component, command: command.name });
    command.promise.then(() => stop({ outcome: 'ok' }), () => stop({ outcome: 'error' }));
    return (send as (c: unknown, ...r: unknown[]) => unknown)(command, ...rest);
  }) as RedisClient['sendCommand'];
  return redis;
}

/** Measures every request made through `client`. */
export function instrumentClickHouse(client: ClickHouseClient, component: string): ClickHouseClient {
  const c = client as ClickHouseClient & { [INSTRUMENTED]?: boolean };
  if (c[INSTRUMENTED]) return client;
  c[INSTRUMENTED] = true;
  const h = clickhouseSeconds();
  for (const operation of ['query', 'insert', 'command', 'exec'] as const) {
    const original = (client[operation] as (...args: unknown[]) => Promise<unknown>).bind(client);
    (client as unknown as Record<string, unknown>)[operation] = async (...args: unknown[]) => {
      const stop = h.startTimer({ component, operation });
      try {
        const result = await original(...args);
        stop({ outcome: 'ok' });
        return result;
      } catch (err) {
        stop({ outcome: 'error' });
        throw err;
      }
    };
  }
  return client;
}
