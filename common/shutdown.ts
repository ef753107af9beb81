import type { Logger } from './log.ts';

/**
 * Graceful shutdown on SIGINT/SIGTERM: the first signal runs `close` (stop fetching, finish the
 * records in hand, commit, leave the group, close clients) and exits 0 when it completes; a second
 * signal, or `close` taking longer than `graceMs`, exits 1 at once.
 */
export function onShutdownSignal(close: () => Promise<void>, logger: Logger, graceMs = 30_000): void {
  let closing = false;
  const handler = (signal: NodeJS.Signals) => {
    if (closing) {
      logger.warn({ signal }, 'second signal: exiting without finishing');
      process.exit(1);
    }
    closing = true;
    logger.info({ signal }, 'shutting down gracefully');
    const timer = setTimeout(() => {
      logger.error({ graceMs }, 'graceful shutdown took too long; exiting');
      process.exit(1);
    }, graceMs);
    timer.unref();
    close().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: String(err) }, 'error during shutdown');
        process.exit(1);
      },
    );
  };
  process.once('SIGINT', handler);
  process.once('SIGTERM', handler);
}

/**
 * For long-running CLI commands that do their own orderly close: resolves on the first SIGINT or
 * SIGTERM; a second signal while the command is still closing exits 1 at once.
 */
export function untilShutdownSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const first = (signal: NodeJS.Signals) => {
      process.off('SIGINT', first);
      process.off('SIGTERM', first);
      process.once('SIGINT', () => process.exit(1));
      process.once('SIGTERM', () => process.exit(1));
      resolve(signal);
    };
    process.on('SIGINT', first);
    process.on('SIGTERM', first);
  });
}

/**
 * Whether a process with this pid is alive on this host (signal 0 checks without signalling;
 * EPERM: alive, another user's). What a dead process left behind (a claimed slot, a spool) is
 * taken over only when this says it is gone.
 */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
