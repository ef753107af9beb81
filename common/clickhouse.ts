import { ClickHouseLogLevel, createClient, type ClickHouseClient } from '@clickhouse/client';
import type { EddyConfig } from './config.ts';
import { DependencyUnavailableError, EddyError, errorMessage } from './errors.ts';

export type { ClickHouseClient };

/**
 * The one place Eddy talks to ClickHouse. @clickhouse/client 1.x works against the Debian
 * ClickHouse 18.16 used here as long as we stay on plain HTTP queries, JSONEachRow and no
 * server-side query parameters ({x:Type} is unknown to 18.16): values are inserted as JSON rows
 * (never spliced into SQL) and identifiers are validated by `identifier()`.
 */
export function createClickHouse(config: Pick<EddyConfig, 'clickhouseUrl'>, opts: { requestTimeoutMs?: number } = {}): ClickHouseClient {
  return createClient({
    url: config.clickhouseUrl,
    request_timeout: opts.requestTimeoutMs ?? 30_000,
    // Keep-alive sockets to a server that was restarted fail on first use; retry is ours (the
    // consumer runner's backoff), so an idle socket must not outlive the server.
    keep_alive: { enabled: true, idle_socket_ttl: 2_500 },
    compression: { request: false, response: false },
    // Failures surface as EddyErrors (and are logged by whoever handles them), not as client logs.
    log: { level: ClickHouseLogLevel.OFF },
  });
}

const IDENTIFIER = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Returns `name` if it is a safe SQL identifier (database, table); throws otherwise. */
export function identifier(name: string): string {
  if (!IDENTIFIER.test(name)) throw new EddyError('INVALID_IDENTIFIER', `'${name}' is not a valid ClickHouse identifier (${IDENTIFIER.source})`);
  return name;
}

/** Escapes a string literal for ClickHouse SQL (only for values we cannot send as rows). */
export function quoteString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

/**
 * Tells "ClickHouse is down / overloaded" (retriable: the work pauses) from "ClickHouse refused
 * this SQL or data" (a bug or bad input: not retriable).
 */
export function clickhouseError(err: unknown, what: string): EddyError {
  if (err instanceof EddyError) return err;
  const message = errorMessage(err);
  const code = (err as { code?: unknown }).code;
  // A server-side error carries a numeric ClickHouse code: @clickhouse/client parses it from
  // current servers' messages, but not from 18.16's "Code: 184, e.displayText() = ..." format.
  const parsed = typeof code === 'string' && /^\d+$/.test(code) ? code : /\bCode: (\d+)/.exec(message)?.[1];
  const serverCode = parsed !== undefined ? Number(parsed) : undefined;
  // 159 TIMEOUT_EXCEEDED, 202 TOO_MANY_SIMULTANEOUS_QUERIES, 241 MEMORY_LIMIT_EXCEEDED,
  // 242 TABLE_IS_READ_ONLY, 252 TOO_MANY_PARTS, 209 SOCKET_TIMEOUT, 210 NETWORK_ERROR.
  const transientServer = new Set([159, 202, 209, 210, 241, 242, 252]);
  if (serverCode === undefined || transientServer.has(serverCode)) {
    return new DependencyUnavailableError('clickhouse', `${what}: ClickHouse unavailable (${message})`, err);
  }
  return new EddyError('CLICKHOUSE_REJECTED', `${what}: ${message}`, { cause: err });
}
