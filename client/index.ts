import { randomUUID } from 'node:crypto';
import { EventSender, type KafkaOptions, type LabeledExampleInput, type LabelSetChangedInput, type PredictionFeedbackInput, type PredictionRequestedInput, type UpstreamEventName, type UpstreamEvents } from './events.ts';
import { Transport, type RequestOptions } from './http.ts';
import type { ExplainedPrediction, Prediction, PredictInput, PredictOptions, ReviewQueue } from './types.ts';

export * from './errors.ts';
export type * from './types.ts';
export { UPSTREAM_EVENTS, type KafkaOptions, type LabeledExampleInput, type LabelSetChangedInput, type PredictionFeedbackInput, type PredictionRequestedInput, type UpstreamEventName, type UpstreamEvents } from './events.ts';
export { retryAfterMs } from './http.ts';

export interface EddyClientOptions {
  /**
   * The prediction API, e.g. http://eddy:8080 (a gateway), or several server replicas
   * (['http://eddy-1:8080', 'http://eddy-2:8080']): requests are spread over them round-robin, and
   * one that gets no answer or a 503 is retried on the next (./http.ts). Needed for predict, explain and review.
   */
  url?: string | readonly string[];
  /** A client's key (acts for that client only) or the admin key. */
  apiKey?: string;
  /** Per attempt (default 5000 ms). */
  timeoutMs?: number;
  /** Attempts after the first on 503 (and, for requests safe to repeat, on timeouts and network errors); default 3. */
  retries?: number;
  /** Exponential backoff with full jitter between attempts (default 100 ms doubling to 5 s); Retry-After wins when longer and the next attempt goes to the same server. */
  backoff?: { initialMs?: number; maxMs?: number };
  /** With several `url`s: how long a server that failed an attempt is skipped while another is available (default 5000 ms). */
  failoverCooldownMs?: number;
  /** Kafka, for the typed event producers. */
  kafka?: KafkaOptions;
  /** Another fetch (tests, proxies); default the global one. */
  fetch?: typeof fetch;
}

/**
 * Eddy for upstream services, typed end to end: predictions over HTTP (with explanations), the
 * review queue, and the upstream events on Kafka (validated before they are sent). Errors are
 * typed and carry the API's codes (./errors.ts). Example in README.md ("A typed client").
 */
export class EddyClient {
  private readonly http: Transport | undefined;
  private readonly events: EventSender;

  constructor(options: EddyClientOptions) {
    this.http = options.url === undefined ? undefined : new Transport({
      url: options.url,
      apiKey: options.apiKey,
      timeoutMs: options.timeoutMs ?? 5000,
      retries: options.retries ?? 3,
      backoff: { initialMs: options.backoff?.initialMs ?? 100, maxMs: options.backoff?.maxMs ?? 5000 },
      failoverCooldownMs: options.failoverCooldownMs ?? 5000,
      fetch: options.fetch ?? fetch,
    });
    this.events = new EventSender(options.kafka);
  }

  private api(): Transport {
    if (!this.http) throw new TypeError('this EddyClient was created without `url`; HTTP calls need it');
    return this.http;
  }

  private path(clientId: string, rest: string): string {
    return `/v1/clients/${encodeURIComponent(clientId)}${rest}`;
  }

  /** The client's model answers `input` (a request id is chosen here when absent, so retries are one request). */
  async predict(clientId: string, input: PredictInput, opts: PredictOptions = {}): Promise<Prediction> {
    const body = { ...input, requestId: input.requestId ?? randomUUID(), ...(opts.topK !== undefined ? { topK: opts.topK } : {}), ...(opts.explain ? { explain: true } : {}) };
    return this.api().request<Prediction>('POST', this.path(clientId, '/predict'), body, { idempotent: true, timeoutMs: opts.timeoutMs, signal: opts.signal });
  }

  /** Predictions for many inputs in one request, in order. */
  async predictBatch(clientId: string, items: PredictInput[], opts: PredictOptions = {}): Promise<Prediction[]> {
    const body = {
      items: items.map((i) => ({ ...i, requestId: i.requestId ?? randomUUID() })),
      ...(opts.topK !== undefined ? { topK: opts.topK } : {}), ...(opts.explain ? { explain: true } : {}),
    };
    const r = await this.api().request<{ predictions: Prediction[] }>('POST', this.path(clientId, '/predict/batch'), body, { idempotent: true, timeoutMs: opts.timeoutMs, signal: opts.signal });
    return r.predictions;
  }

  /** A prediction with the terms that pushed each returned label's score. */
  async explain(clientId: string, input: PredictInput, opts: Omit<PredictOptions, 'explain'> = {}): Promise<ExplainedPrediction> {
    return (await this.predict(clientId, input, { ...opts, explain: true })) as ExplainedPrediction;
  }

  /** The review queue of a client, most worth a label first. */
  async reviewQueue(clientId: string, page: { limit?: number; offset?: number } = {}, opts: RequestOptions = {}): Promise<ReviewQueue> {
    const q = new URLSearchParams();
    if (page.limit !== undefined) q.set('limit', String(page.limit));
    if (page.offset !== undefined) q.set('offset', String(page.offset));
    const query = q.size ? `?${q}` : '';
    return this.api().request<ReviewQueue>('GET', this.path(clientId, `/review${query}`), undefined, { ...opts, idempotent: true });
  }

  /** Labels a review item: it becomes a LabeledExample (source REVIEW) and leaves the queue. */
  async labelReviewItem(clientId: string, itemId: string, label: string, reviewer?: string): Promise<{ itemId: string; label: string; exampleId: string; eventId: string }> {
    // Safe to repeat: the example's event id is derived from the item and the label.
    return this.api().request('POST', this.path(clientId, `/review/${encodeURIComponent(itemId)}/label`), { label, ...(reviewer ? { reviewer } : {}) }, { idempotent: true });
  }

  /** Skips a review item (not shown again). Repeated only after a 503: a second skip would find it gone. */
  async skipReviewItem(clientId: string, itemId: string): Promise<{ itemId: string; skipped: boolean }> {
    return this.api().request('POST', this.path(clientId, `/review/${encodeURIComponent(itemId)}/skip`), {});
  }

  sendLabeledExample(e: LabeledExampleInput): Promise<UpstreamEvents['LabeledExample']> {
    return this.events.send('LabeledExample', e);
  }

  sendLabelSetChanged(e: LabelSetChangedInput): Promise<UpstreamEvents['LabelSetChanged']> {
    return this.events.send('LabelSetChanged', e);
  }

  /** An asynchronous prediction: the answer is a PredictionMade with this requestId on the `predictions` topic. */
  requestPrediction(e: PredictionRequestedInput): Promise<UpstreamEvents['PredictionRequested']> {
    return this.events.send('PredictionRequested', e);
  }

  sendFeedback(e: PredictionFeedbackInput): Promise<UpstreamEvents['PredictionFeedback']> {
    return this.events.send('PredictionFeedback', e);
  }

  /** Any upstream event by name (the typed methods above are this with the name filled in). */
  send<N extends UpstreamEventName>(name: N, e: Record<string, unknown>): Promise<UpstreamEvents[N]> {
    return this.events.send(name, e);
  }

  /** Disconnects the producer (pending sends finish first). */
  async close(): Promise<void> {
    await this.events.close();
  }
}
