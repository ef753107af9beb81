import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { PredictionMade } from '../schemas/events.ts';
import type { EventProducer } from '../streams/index.ts';
import { serverMetrics } from './metrics.ts';

/**
 * Publishes HTTP predictions as PredictionMade without making the response wait for Kafka.
 * Events go into a bounded in-memory buffer that one background loop drains in batches; while
 * Kafka is slow or down the loop retries with backoff and the buffer fills. When it is full, new
 * events are dropped — counted in `eddy_server_predictions_dropped_total` and logged (at most
 * once per interval, with the count) — so memory stays bounded and the loss is never silent.
 * On close the buffer is flushed (bounded by a deadline).
 */
export class PredictionPublisher {
  private buffer: PredictionMade[] = [];
  private draining: Promise<void> | undefined;
  private closed = false;
  private droppedSinceLog = 0;
  private lastDropLog = 0;
  private backoffMs = 0;
  private wake: (() => void) | undefined;
  private flushWaiters: Array<() => void> = [];
  publishedTotal = 0;
  droppedTotal = 0;

  constructor(
    private readonly producer: EventProducer,
    private readonly capacity: number,
    private readonly logger: Logger,
    private readonly batchSize = 1000,
    /**
     * How long the first event of a batch waits for company (Kafka's linger.ms). kafkajs costs
     * ~96 µs of CPU per event in 20-event produce requests but ~25 at 100 and ~19 at 1,000
     * (measured here), so at 5,000 predictions/s 50 ms (~250 per request) saves most of a
     * core's tenth; PredictionMade is for monitoring, 50 ms later is fine.
     */
    private readonly lingerMs = 50,
  ) {}

  get pending(): number {
    return this.buffer.length;
  }

  /** Never blocks and never throws: the event is queued, or dropped and counted. */
  publish(event: PredictionMade): void {
    if (this.buffer.length >= this.capacity || this.closed) {
      this.droppedTotal++;
      this.droppedSinceLog++;
      serverMetrics.dropped().inc();
      const now = Date.now();
      if (now - this.lastDropLog > 5_000) {
        this.logger.error({ dropped: this.droppedSinceLog, capacity: this.capacity, closed: this.closed }, 'PredictionMade publish buffer full: events dropped (Kafka slow or down)');
        this.droppedSinceLog = 0;
        this.lastDropLog = now;
      }
      return;
    }
    this.buffer.push(event);
    serverMetrics.bufferSize().set(this.buffer.length);
    this.kick();
  }

  private kick(): void {
    if (this.wake) {
      const w = this.wake;
      this.wake = undefined;
      w();
    }
    this.draining ??= this.drain().finally(() => {
      this.draining = undefined;
      if (this.buffer.length > 0 && !this.closed) this.kick();
    });
  }

  private async drain(): Promise<void> {
    // Linger so that many predictions share one produce request.
    await new Promise((r) => setTimeout(r, this.lingerMs));
    while (this.buffer.length > 0) {
      const batch = this.buffer.slice(0, this.batchSize);
      try {
        await this.producer.sendAll(batch.map((value) => ({ name: 'PredictionMade' as const, value })));
        this.buffer.splice(0, batch.length);
        this.publishedTotal += batch.length;
        serverMetrics.published().inc(batch.length);
        serverMetrics.bufferSize().set(this.buffer.length);
        this.backoffMs = 0;
      } catch (err) {
        if (!isRetriableSend(err)) {
          // An event the schema refuses can never be sent: drop that batch loudly, keep the rest flowing.
          this.buffer.splice(0, batch.length);
          this.droppedTotal += batch.length;
          serverMetrics.dropped().inc(batch.length);
          this.logger.error({ err: errorMessage(err), events: batch.length }, 'PredictionMade events refused by the producer; dropped');
          continue;
        }
        this.backoffMs = Math.min(Math.max(100, this.backoffMs * 2), 5_000);
        this.logger.warn({ err: errorMessage(err), pending: this.buffer.length, retryInMs: this.backoffMs }, 'cannot publish PredictionMade yet; retrying');
        if (this.closed) return;
        await new Promise<void>((r) => {
          const t = setTimeout(r, this.backoffMs);
          this.wake = () => {
            clearTimeout(t);
            r();
          };
        });
        this.wake = undefined;
      }
    }
    for (const w of this.flushWaiters.splice(0)) w();
  }

  /** Resolves when everything queued so far has been written (tests and shutdown). */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    if (this.buffer.length === 0 && !this.draining) return true;
    const done = new Promise<boolean>((resolve) => this.flushWaiters.push(() => resolve(true)));
    this.kick();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
    const ok = await Promise.race([done, timeout]);
    clearTimeout(timer);
    return ok;
  }

  async close(timeoutMs = 10_000): Promise<void> {
    const flushed = await this.flush(timeoutMs);
    this.closed = true;
    if (!flushed && this.buffer.length > 0) {
      this.droppedTotal += this.buffer.length;
      serverMetrics.dropped().inc(this.buffer.length);
      this.logger.error({ dropped: this.buffer.length }, 'shutdown: PredictionMade events could not be published in time; dropped');
      this.buffer = [];
    }
  }
}

function isRetriableSend(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retriable?: boolean }).retriable === true;
}
