import { apiErrorOf, EddyApiError, EddyClientError, EddyNetworkError, EddyTimeoutError } from './errors.ts';

/**
 * The client's HTTP transport: JSON in and out, a timeout per attempt, and retries with
 * exponential backoff (full jitter) when the server says it cannot answer now (503, honouring
 * Retry-After) or, for requests that are safe to repeat, when no answer came (a timeout, a
 * refused connection). A request is safe to repeat when repeating it cannot do anything twice:
 * predictions carry the request id chosen before the first attempt, a review label derives its
 * event id from the item and the label.
 *
 * Several servers (replicas behind no load balancer): requests are spread over them round-robin,
 * and an attempt that gets no answer (refused, reset, timed out) or a 503 is retried on the next
 * server. The server that failed is skipped for `failoverCooldownMs` (a 503's Retry-After, when
 * longer): a dead replica then costs one failed attempt per cooldown, not one per request. When
 * every server is in its cooldown the one that comes back first is tried anyway (a client never
 * refuses to try). Round-robin rather than sticking to one healthy server: the replicas share the
 * load the way a proxy would spread it, and each is kept warm (its models loaded) for the day the
 * other dies. What is repeated does not change: a request that is not safe to repeat goes to the
 * next server only after a 503 (the server did not act), never after a lost answer.
 */
export interface TransportOptions {
  /** One server, or several replicas to spread requests over and fail over between. */
  url: string | readonly string[];
  apiKey?: string;
  /** Per attempt (default 5000 ms). */
  timeoutMs: number;
  /** Attempts after the first (default 3). */
  retries: number;
  backoff: { initialMs: number; maxMs: number };
  /** How long a server that failed an attempt is skipped while another one is available (default 5000 ms). */
  failoverCooldownMs: number;
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

interface Server {
  base: string;
  /** Skipped until then (ms since the epoch) while another server is available. */
  skipUntil: number;
}

export class Transport {
  private readonly servers: Server[];
  /** The server the next request starts on (round-robin). */
  private turn = 0;

  constructor(private readonly o: TransportOptions) {
    const urls = typeof o.url === 'string' ? [o.url] : [...o.url];
    if (urls.length === 0) throw new TypeError('EddyClient: `url` lists no server');
    this.servers = urls.map((u) => ({ base: u.replace(/\/+$/, ''), skipUntil: 0 }));
  }

  private backoff(attempt: number): number {
    const cap = Math.min(this.o.backoff.maxMs, this.o.backoff.initialMs * 2 ** attempt);
    return Math.random() * cap;
  }

  /** The next server in turn that is not being skipped; if all are, the one whose skip ends first. */
  private pick(after?: Server): Server {
    const n = this.servers.length;
    const from = after ? this.servers.indexOf(after) + 1 : this.turn++;
    const now = Date.now();
    for (let i = 0; i < n; i++) {
      const s = this.servers[(from + i) % n]!;
      if (s.skipUntil <= now) return s;
    }
    return this.servers.reduce((a, b) => (b.skipUntil < a.skipUntil ? b : a));
  }

  private failed(server: Server, forMs: number): void {
    if (this.servers.length > 1) server.skipUntil = Date.now() + Math.max(this.o.failoverCooldownMs, forMs);
  }

  /** Before the next attempt: the backoff, or the server's Retry-After when the next attempt goes back to that same server. */
  private waitBefore(next: Server, attempt: number, retryAfter: number | undefined): number {
    const backoff = this.backoff(attempt);
    if (retryAfter === undefined) return backoff;
    // Retry-After is what that server asked for; another replica need not wait for it.
    const sameServer = next.skipUntil > Date.now() || this.servers.length === 1;
    return sameServer ? Math.min(this.o.backoff.maxMs, Math.max(retryAfter, backoff)) : backoff;
  }

  async request<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown, opts: RequestOptions = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? this.o.timeoutMs;
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.o.apiKey) headers.authorization = `Bearer ${this.o.apiKey}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const payload = body === undefined ? undefined : JSON.stringify(body);
    let server = this.pick();
    for (let attempt = 0; ; attempt++) {
      const attempts = attempt + 1;
      const last = attempt >= this.o.retries;
      const signal = opts.signal ? AbortSignal.any([opts.signal, AbortSignal.timeout(timeoutMs)]) : AbortSignal.timeout(timeoutMs);
      let res: Response;
      let text: string;
      try {
        res = await this.o.fetch(server.base + path, { method, headers, body: payload, signal });
        text = await res.text();
      } catch (err) {
        if (opts.signal?.aborted) throw err;
        const timedOut = (err as { name?: string }).name === 'TimeoutError' || (err as { name?: string }).name === 'AbortError';
        this.failed(server, 0);
        if (!opts.idempotent || last) {
          throw timedOut
            ? new EddyTimeoutError(`${method} ${path}: no answer within ${timeoutMs} ms (${attempts} attempt${attempts === 1 ? '' : 's'})`, attempts)
            : new EddyNetworkError(`${method} ${path}: ${(err as Error).message} (${attempts} attempt${attempts === 1 ? '' : 's'})`, attempts, err);
        }
        server = this.pick(server);
        await sleep(this.waitBefore(server, attempt, undefined), opts.signal);
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
        // The server did not act: waiting as long as it asks is always safe, and so is asking another one.
        const wait = retryAfterMs(res.headers.get('retry-after'));
        this.failed(server, wait ?? 0);
        server = this.pick(server);
        await sleep(this.waitBefore(server, attempt, wait), opts.signal);
        continue;
      }
      const error: EddyApiError = apiErrorOf(res.status, json, attempts);
      throw error;
    }
  }
}
