import { isRetriable } from './errors.ts';

/**
 * The one backoff loop: capped exponential delays (initialMs, doubled, at most maxMs). A
 * dependency that is away pauses the work and it is retried; nothing is dropped meanwhile.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** How to wait between attempts (default: a timer). The consumer runner heartbeats here and throws to abort on stop. */
  wait?: (ms: number) => Promise<void>;
}

export interface RetryOptions extends BackoffOptions {
  /** Give up after this many attempts and throw the last error (default: keep trying). */
  attempts?: number;
  /** Which errors are worth another attempt (default: EddyError.retriable); others are thrown at once. */
  retriable?: (err: unknown) => boolean;
  /** Called before each wait (log it, count it). */
  onRetry?: (err: unknown, delayMs: number, attempt: number) => void;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Runs `fn` until it succeeds, retrying retriable errors with backoff. */
export async function retry<T>(fn: (attempt: number) => Promise<T>, opts: RetryOptions): Promise<T> {
  const retriable = opts.retriable ?? isRetriable;
  const wait = opts.wait ?? sleep;
  let delay = opts.initialMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (err) {
      if (!retriable(err) || (opts.attempts !== undefined && attempt >= opts.attempts)) throw err;
      opts.onRetry?.(err, delay, attempt);
      await wait(delay);
      delay = Math.min(delay * 2, opts.maxMs);
    }
  }
}

/**
 * Polls `check` with backoff until it returns true (resolves true) or `timeoutMs` passes
 * (resolves false). `stop` ends the wait early (resolves false).
 */
export async function pollUntil(
  check: () => Promise<boolean>,
  opts: BackoffOptions & { timeoutMs?: number; stop?: () => boolean },
): Promise<boolean> {
  const wait = opts.wait ?? sleep;
  const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
  for (let delay = opts.initialMs; ; delay = Math.min(delay * 2, opts.maxMs)) {
    if (opts.stop?.()) return false;
    if (await check()) return true;
    const left = deadline - Date.now();
    if (left <= 0) return false;
    await wait(Math.min(delay, left));
  }
}
