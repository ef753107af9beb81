import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Structured JSON logs on stderr (stdout stays free for CLI output and piping).
 * EDDY_LOG_LEVEL picks the level; components take a child logger named after themselves.
 */
export function createLogger(name: string, level: string = process.env.EDDY_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination(2));
}

let root: Logger | undefined;
export function rootLogger(): Logger {
  root ??= createLogger('eddy');
  return root;
}
