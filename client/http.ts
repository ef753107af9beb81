import { apiErrorOf, EddyApiError, EddyClientError, EddyNetworkError, EddyTimeoutError } from './errors.ts';

/**
 * The client's HTTP transport: JSON in and out, a timeout per attempt, and retries with
 * exponential backoff (full jitter) when the server says it cannot answer now (503, honouring
 * Retry-After) or, for requests that are safe to repeat, when no answer came (a timeout, a
 * refused connection). A request is safe to repeat when repeating it cannot do anything twice:
 * predictions carry the request id chosen before the first attempt, a review label derives its
 * event id from the item and the label.
 */
export interface TransportOptions {
  url: string;
  apiKey?: string;
  /** Per attempt (default 5000 ms). */
  timeoutMs: number;
  /** Attempts after the first (default 3). */
  retries: number;
  backoff: { initialMs: number; maxMs: number };
  fetch: typeof fetch;
}

export interface RequestOptions {
  /** Repeat after a timeout or a network error, not only after a 503 (default: false). */
  idempotent?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

const sleep = (ms: number, signal?: AbortSignal) => new Promise<void>((resolve, reject) => {
  if (signal?.aborted) return reject(signal.reason);
  const t = setTimeout(resolve, ms);
  signal?.addEventListener('abort', () => { clearTimeout(t); reject(signal.reason); }, { once: true });
});

/** Retry-After in ms: delta-seconds or an HTTP date; undefined when absent or unreadable. */
export function retryAfterMs(header: string | null, now = Date.now()): number | undefined {
  if (!header) return undefined;
  if (/^\d+(\.\d+)?$/.test(header.trim())) return Number(header) * 1000;
  const at = Date.parse(header);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

export class Transport {
  constructor(private readonly o: TransportOptions) {}

  private backoff(attempt: number): number {
    const cap = Math.min(this.o.backoff.maxMs, this.o.backoff.initialMs * 2 ** attempt);
    return Math.random() * cap;
  }

  async request<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
    const url = this.o.url.replace(/\/+$/, '') + path;
    const timeoutMs = opts.timeoutMs ?? this.o.timeoutMs;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.o.apiKey) headers.authorization = `Bearer ${this.o.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const payload = body === undefined ? undefined : JSON.stringify(body);
    for (let attempt = 0; ; attempt++) {
      const attempts = attempt + 1;
      const last = attempt >= this.o.retries;
      const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
      let res: Response;
      let text: string;
      try {
        res = await this.o.fetch(url, { method, headers, body: payload, signal });
        text = await res.text();
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        const timedOut = (err as { name?: string }).name === 'TimeoutError' || (err as { name?: string }).name === 'AbortError';
        if (!opts.idempotent || last) {
          throw timedOut
            ? new EddyTimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'})`, attempts)
            : new EddyNetworkError(`${method} ${path}: ${(err as Error).message} (${attempts} attempt${attempts === 1 ? '' : 's'})`, attempts, err);
        }
        await sleep(this.backoff(attempt), opts.signal);
        continue;
      }
      let json: unknown;
      try {
        json = text === '' ? undefined : JSON.parse(text);
      } catch {
        json = undefined;
      }
      if (res.ok) {
        if (json === undefined) throw new EddyClientError('INVALID_RESPONSE', `${method} ${path}: HTTP ${res.status} with a body that is not JSON`);
        return json as T;
      }
      if (res.status === 503 && !last) {
        // The server did not act: waiting as long as it asks is always safe.
        const wait = retryAfterMs(res.headers.get('retry-after'));
        await sleep(Math.min(this.o.backoff.maxMs, Math.max(wait ?? 0, this.backoff(attempt))), opts.signal);
        continue;
      }
      const error: EddyApiError = apiErrorOf(res.status, json, attempts);
      throw error;
    }
  }
}
