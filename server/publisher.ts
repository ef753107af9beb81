import os from 'node:os';
import avro from 'avsc';
import { parentPort, type Worker } from 'node:worker_threads';
import type { EddyConfig } from '../common/config.ts';
import { EddyError, errorMessage } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { retry } from '../common/retry.ts';
import { startThread } from '../common/threads.ts';
import type { PredictionMade } from '../schemas/events.ts';
import { countProduced, createKafkaClient, EVENT_HEADER, EventCodec, EventProducer, FramedEventWriter, framedMessages, loadSchema, TOPIC_OF_EVENT, TopicNames, type FramedBatch, type OutgoingMessage } from '../streams/index.ts';
import { serverMetrics } from './metrics.ts';
import type { PredictionSpool } from './spool.ts';

/**
 * PredictionMade publishing for HTTP predictions, in two halves:
 *
 * - {@link PredictionPublisher}, on the request thread: it bounds how many events may be on their
 *   way (EDDY_SERVER_PUBLISH_BUFFER) by refusing new predictions while the backlog is full
 *   ({@link PredictionPublisher.admit}: 503 with Retry-After before predicting, counted in
 *   `eddy_server_publish_refused_total`, logged at most once per interval) — an answered
 *   prediction's events are never dropped for room — writes the events to the spool before the
 *   answer leaves ({@link PredictionPublisher.committed}, server/spool.ts), and hands events over
 *   in small batches.
 * - {@link PredictionSender} batches them into produce requests, lingers so many predictions share
 *   one request, retries while Kafka is away, and drops (loudly) what the producer refuses.
 *
 * By default the sender runs in a worker thread with its own Kafka connection and schema codec.
 * Measured on this project's 2-core machine (BENCHMARKS.md, with kafkajs then): producing cost
 * 30–40 µs of CPU per event, and a 50 ms flush of ~250 events encoded on the request thread held
 * the server's p99 at ~8 ms; handing a batch to the thread costs ~1.3 µs per event. The Kafka
 * client (@platformatic/kafka) is pure JavaScript, so it runs in the thread as kafkajs did (a
 * native client such as librdkafka's cannot be loaded by a second thread of the process; see
 * docs/streams.md). With the patched client producing costs ~4–5 µs per event, and the thread
 * still wins (2026-11-29: inline cost 2.3–3.3× the floor's CPU per request against 2.1–2.4×, and
 * batches of 100 ran at 28–30k against 36–65k predictions/s; docs/benchmarks/server.md). `EDDY_SERVER_PUBLISHER=inline`
 * keeps the sender on the request thread (one thread fewer, for tests and comparisons).
 */

/** What the sender reports back for every batch it finished with. */
interface SendResult {
  sent: number;
  refused: number;
}

/** Messages from the request thread to the publisher thread. */
type ToThread =
  | { type: 'events'; events: PredictionMade[] }
  | { type: 'framed'; batch: FramedBatch }
  | { type: 'hurry' }
  | { type: 'close'; timeoutMs: number };

/** Messages from the publisher thread to the request thread. */
type FromThread =
  | ({ type: 'result' } & SendResult)
  | { type: 'closed' };

/** What the publisher thread needs to produce (plain data: it is copied into the thread). */
export interface ThreadData {
  kafka: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>;
  schemaRegistryUrl: string;
  topicPrefix: string;
  replicaId: string;
  lingerMs: number;
  batchSize: number;
}

export interface PublisherOptions {
  /** Most events on their way to Kafka at once; beyond it new predictions are refused (admit). */
  capacity: number;
  /** Where events are written before their prediction is answered; replayed at the next start. */
  spool?: PredictionSpool;
  logger: Logger;
  /** How long the first event of a produce request waits for company (Kafka's linger.ms). */
  lingerMs?: number;
  /** Most events per produce request. */
  batchSize?: number;
}

/**
 * Where the sender runs: a worker thread connecting with `config` (production), or this thread
 * with an already-connected producer.
 */
export type PublishVia = { thread: EddyConfig } | { producer: EventProducer };

/** How the request thread reaches a sender. */
interface SenderChannel {
  /** Queues one event here (throws InvalidEventError when it does not fit the schema: nothing queued). */
  add(event: PredictionMade): void;
  /** The encoded records added since the last call, for the spool (a view valid until the next add). */
  unspooled(): { bytes: Buffer; count: number } | undefined;
  /** Hands already encoded records (framed layout: a spool's replay) to the sender. */
  postFramed(batch: FramedBatch): void;
  /** Events queued here and not posted yet. */
  readonly queued: number;
  /** Hands the queued events to the sender. */
  post(): void;
  /** Skip the linger: someone is waiting for everything to be written. */
  hurry(): void;
  /** Stops the sender; what it still holds after `timeoutMs` is abandoned. */
  close(timeoutMs: number): Promise<void>;
}

/**
 * Linger 50 ms by default. A produce request has a fixed cost (kafkajs: ~96 µs of CPU per event in
 * 20-event requests but ~25 at 100 and ~19 at 1,000, measured here), so at 5,000 predictions/s
 * 50 ms (~250 events per request) saves most of it; PredictionMade is for monitoring, 50 ms later
 * is fine.
 */
const DEFAULT_LINGER_MS = 50;
const DEFAULT_BATCH = 1000;
/**
 * The request thread hands events over every POST_INTERVAL_MS or every POST_BATCH events,
 * whichever comes first: one postMessage per event would cost ~2.5 µs each and wake the thread
 * per prediction; batches of ~50 cost ~1.3 µs per event.
 */
const POST_INTERVAL_MS = 10;
const POST_BATCH = 256;

export class PredictionPublisher {
  private readonly channel: SenderChannel;
  private readonly capacity: number;
  private readonly logger: Logger;
  private postTimer: NodeJS.Timeout | undefined;
  /** Events handed to publish() and neither written nor dropped yet. */
  private inFlight = 0;
  private closed = false;
  private droppedSinceLog = 0;
  private lastDropLog = 0;
  private refusedSinceLog = 0;
  private lastRefuseLog = 0;
  private idleWaiters: Array<() => void> = [];
  private readonly spool: PredictionSpool | undefined;
  private readonly spoolCommits = serverMetrics.spoolCommits();
  /** The group commit in preparation: requests answered in this turn of the event loop wait for it. */
  private commit: { promise: Promise<void>; resolve(): void; reject(err: unknown): void } | undefined;
  publishedTotal = 0;
  droppedTotal = 0;
  /** Predict requests refused (503) because the backlog was full. */
  refusedTotal = 0;
  /** Events replayed from a dead server's spool at start. */
  replayedTotal = 0;

  constructor(via: PublishVia, options: PublisherOptions) {
    this.capacity = options.capacity;
    this.logger = options.logger;
    this.spool = options.spool;
    const lingerMs = options.lingerMs ?? DEFAULT_LINGER_MS;
    const batchSize = options.batchSize ?? DEFAULT_BATCH;
    const onResult = (r: SendResult) => this.settled(r);
    this.channel = 'thread' in via
      ? new ThreadChannel(threadData(via.thread, lingerMs, batchSize), onResult, this.logger)
      : inlineChannel(via.producer, onResult, this.logger, lingerMs, batchSize, this.spool !== undefined);
    if (this.spool) this.replay(this.spool);
  }

  /**
   * What dead servers of this host left in the spool goes out first, before any new event: their
   * segments become this spool's (deleted once Kafka acknowledged them), their records are handed
   * to the sender as they are (same eventId and requestId).
   */
  private replay(spool: PredictionSpool): void {
    for (const records of spool.adopt()) {
      const buffer = new ArrayBuffer(records.bytes.length);
      Buffer.from(buffer).set(records.bytes);
      this.inFlight += records.count;
      this.replayedTotal += records.count;
      serverMetrics.spoolReplayed().inc(records.count);
      this.channel.postFramed({ buffer, bytes: records.bytes.length, count: records.count });
    }
    if (this.replayedTotal > 0) {
      this.logger.warn({ events: this.replayedTotal, dir: spool.dir }, 'replaying PredictionMade events a dead server left in the spool');
      serverMetrics.bufferSize().set(this.inFlight);
    }
  }

  /**
   * Call before predicting `events` (at most) events' worth of requests: throws a retriable
   * KAFKA_UNAVAILABLE (the API answers 503 with Retry-After) while the backlog is full, so nothing
   * is predicted that could not be logged. A request is admitted whenever nothing is waiting, so
   * a batch larger than the buffer still goes through on an idle server.
   */
  admit(events = 1): void {
    if (this.inFlight === 0 || this.inFlight + events <= this.capacity) return;
    this.refusedTotal++;
    this.refusedSinceLog++;
    serverMetrics.refused().inc();
    const now = Date.now();
    if (now - this.lastRefuseLog > 5_000) {
      this.logger.error({ refused: this.refusedSinceLog, waiting: this.inFlight, capacity: this.capacity }, 'PredictionMade backlog full (Kafka slow or down): predict requests answered 503');
      this.refusedSinceLog = 0;
      this.lastRefuseLog = now;
    }
    throw Object.assign(
      new EddyError('KAFKA_UNAVAILABLE', `${this.inFlight} predictions are waiting to be logged to Kafka (the limit is ${this.capacity}); retry later`, { retriable: true }),
      { loggedByThrower: true }, // logged above at most every 5 s, not per request
    );
  }

  /**
   * Resolves once every event published so far is in the spool (at once without a spool): the
   * answer is sent after it. Requests answered in the same turn of the event loop share one
   * write. Rejects (the API answers 503) when the spool cannot be written.
   */
  committed(): Promise<void> {
    if (!this.spool) return RESOLVED;
    if (!this.commit) {
      let resolve!: () => void;
      let reject!: (err: unknown) => void;
      const promise = new Promise<void>((res, rej) => {
        resolve = res;
        reject = rej;
      });
      this.commit = { promise, resolve, reject };
      setImmediate(() => this.writeSpool());
    }
    return this.commit.promise;
  }

  /** Writes what was published since the last write to the spool and releases the answers waiting for it. */
  private writeSpool(): void {
    const waiting = this.commit;
    this.commit = undefined;
    const records = this.channel.unspooled();
    try {
      if (records && this.spool) {
        this.spool.append(records.bytes, records.count);
        this.spoolCommits.inc();
      }
      waiting?.resolve();
    } catch (err) {
      // The events still go to Kafka; only the answers are refused (retriable), never given without a spool copy.
      serverMetrics.spoolFailures().inc();
      this.logger.error({ err: errorMessage(err), events: records?.count }, 'cannot write the PredictionMade spool; answering 503');
      waiting?.reject(new EddyError('SPOOL_UNAVAILABLE', `cannot write the prediction spool: ${errorMessage(err)}`, { retriable: true }));
    }
  }

  /** Events accepted and not yet written to Kafka. */
  get pending(): number {
    return this.inFlight;
  }

  /**
   * Never blocks and never throws: the event is queued (room was checked by `admit` before the
   * prediction, so a full buffer takes it anyway), or dropped and counted when it does not fit its
   * schema or the publisher is closed.
   */
  publish(event: PredictionMade): void {
    if (this.closed) {
      this.drop(1, 'PredictionMade published after the publisher closed: dropped');
      return;
    }
    try {
      this.channel.add(event);
    } catch (err) {
      // Not valid for its schema: it can never be sent (a bug); counted as refused, logged at most once per interval.
      this.drop(1, `PredictionMade refused by its schema: ${errorMessage(err)}`);
      return;
    }
    this.inFlight++;
    if (this.channel.queued >= POST_BATCH) this.postNow();
    else this.postTimer ??= setTimeout(() => this.postNow(), POST_INTERVAL_MS);
  }

  private postNow(): void {
    clearTimeout(this.postTimer);
    this.postTimer = undefined;
    if (this.channel.queued === 0) return;
    // Nothing reaches the sender before it is in the spool (answers still waiting for this commit go out with it).
    if (this.spool) this.writeSpool();
    // The gauge follows hand-overs (every POST_INTERVAL_MS at most), not every event.
    serverMetrics.bufferSize().set(this.inFlight);
    this.channel.post();
  }

  /** The sender wrote `sent` and gave up on `refused` (refused by the producer, or lost with a dead thread). */
  private settled({ sent, refused }: SendResult): void {
    // After close counted what was left as dropped, a late answer (an inline send finishing) is not counted again.
    if (this.closed && this.inFlight === 0) return;
    this.inFlight -= sent + refused;
    this.spool?.settle(sent + refused);
    if (sent > 0) {
      this.publishedTotal += sent;
      serverMetrics.published().inc(sent);
      countProduced('PredictionMade', sent);
    }
    if (refused > 0) {
      this.droppedTotal += refused;
      serverMetrics.dropped().inc(refused);
    }
    serverMetrics.bufferSize().set(this.inFlight);
    if (this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
  }

  private drop(n: number, message: string): void {
    this.droppedTotal += n;
    this.droppedSinceLog += n;
    serverMetrics.dropped().inc(n);
    const now = Date.now();
    if (now - this.lastDropLog > 5_000) {
      this.logger.error({ dropped: this.droppedSinceLog, capacity: this.capacity, closed: this.closed }, message);
      this.droppedSinceLog = 0;
      this.lastDropLog = now;
    }
  }

  /** Resolves true when everything accepted so far has been written (false on timeout). */
  async flush(timeoutMs = 10_000): Promise<boolean> {
    this.postNow();
    if (this.inFlight === 0) return true;
    this.channel.hurry();
    let timer: NodeJS.Timeout | undefined;
    const ok = await Promise.race([
      new Promise<boolean>((resolve) => this.idleWaiters.push(() => resolve(true))),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs))),
    ]);
    clearTimeout(timer);
    return ok;
  }

  /**
   * Flushes (bounded by `timeoutMs`), stops the sender. What could not be written stays in the
   * spool for the next start (without a spool it is dropped and counted).
   */
  async close(timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    const flushed = await this.flush(timeoutMs);
    this.closed = true;
    await this.channel.close(flushed ? 1_000 : 0);
    const left = this.inFlight;
    if (this.spool) {
      // Settled events were deleted as they settled; the rest stays for the next server started here.
      this.spool.close(left > 0);
      if (left > 0) this.logger.warn({ events: left, dir: this.spool.dir }, 'shutdown: PredictionMade events not written to Kafka in time stay in the spool for the next start');
      this.inFlight = 0;
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    if (left > 0) {
      this.settled({ sent: 0, refused: left });
      this.logger.error({ dropped: left }, 'shutdown: PredictionMade events could not be published in time; dropped');
    }
  }
}

/**
 * Batches events into produce requests. Runs next to a producer: in the publisher thread, or
 * inline. `send` may wait for a connection; retriable failures are retried with backoff (the
 * buffer grows, bounded by the publisher's capacity); an event the producer refuses (schema) can
 * never be sent, so its batch is reported refused and the rest keeps flowing.
 */
export class PredictionSender<T = PredictionMade> {
  private buffer: T[] = [];
  private running: Promise<void> | undefined;
  private hurried = false;
  private stopped = false;
  private backoffMs = 0;
  private wake: (() => void) | undefined;

  constructor(
    private readonly send: (events: T[]) => Promise<void>,
    private readonly report: (result: SendResult) => void,
    private readonly logger: Logger,
    private readonly lingerMs = DEFAULT_LINGER_MS,
    private readonly batchSize = DEFAULT_BATCH,
  ) {}

  get pending(): number {
    return this.buffer.length;
  }

  add(events: T[]): void {
    if (this.stopped) {
      this.report({ sent: 0, refused: events.length });
      return;
    }
    for (const e of events) this.buffer.push(e);
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
      if (this.buffer.length > 0 && !this.stopped) this.add([]);
    });
  }

  hurry(): void {
    this.hurried = true;
    this.interrupt();
  }

  /** Stops after the batch in progress; waits up to `timeoutMs` for the buffer to empty first. */
  async stop(timeoutMs: number): Promise<void> {
    this.hurry();
    if (this.running && timeoutMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.running, new Promise((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    this.stopped = true;
    this.interrupt();
  }

  private interrupt(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        this.wake = undefined;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  private async loop(): Promise<void> {
    if (!this.hurried) await this.sleep(this.lingerMs);
    while (this.buffer.length > 0 && !this.stopped) {
      const batch = this.buffer.slice(0, this.batchSize);
      try {
        await this.send(batch);
        this.buffer.splice(0, batch.length);
        this.backoffMs = 0;
        this.report({ sent: batch.length, refused: 0 });
      } catch (err) {
        if (!isRetriableSend(err)) {
          this.buffer.splice(0, batch.length);
          this.logger.error({ err: errorMessage(err), events: batch.length }, 'PredictionMade events refused by the producer; dropped');
          this.report({ sent: 0, refused: batch.length });
          continue;
        }
        this.backoffMs = Math.min(Math.max(100, this.backoffMs * 2), 5_000);
        this.logger.warn({ err: errorMessage(err), pending: this.buffer.length, retryInMs: this.backoffMs }, 'cannot publish PredictionMade yet; retrying');
        await this.sleep(this.backoffMs);
      }
    }
    if (this.buffer.length === 0) this.hurried = false;
  }
}

function isRetriableSend(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { retriable?: boolean }).retriable === true;
}

function sendWith(producer: EventProducer): (events: PredictionMade[]) => Promise<void> {
  return (events) => producer.sendAll(events.map((value) => ({ name: 'PredictionMade' as const, value })));
}

function threadData(config: EddyConfig, lingerMs: number, batchSize: number): ThreadData {
  return {
    kafka: { kafkaBrokers: [...config.kafkaBrokers], logLevel: config.logLevel },
    schemaRegistryUrl: config.schemaRegistryUrl,
    topicPrefix: config.topicPrefix,
    replicaId: config.server.replicaId,
    lingerMs,
    batchSize,
  };
}

function inlineChannel(producer: EventProducer, onResult: (r: SendResult) => void, logger: Logger, lingerMs: number, batchSize: number, spooled: boolean): SenderChannel {
  const sender = new PredictionSender(sendWith(producer), onResult, logger, lingerMs, batchSize);
  let outbox: PredictionMade[] = [];
  // Inline, the producer encodes; the spool needs the bytes, so events are also encoded here (only with a spool).
  const spoolWriter = spooled ? new FramedEventWriter('PredictionMade') : undefined;
  let decode: ((value: Buffer) => PredictionMade) | undefined;
  return {
    add: (event) => {
      spoolWriter?.append(event);
      outbox.push(event);
    },
    unspooled: () => spoolWriter?.unsynced(true),
    postFramed: (batch) => {
      decode ??= framedDecoder();
      sender.add(framedMessages(batch, 0, {}).map((m) => decode!(m.value as Buffer)));
    },
    get queued() {
      return outbox.length;
    },
    post: () => {
      const events = outbox;
      outbox = [];
      sender.add(events);
    },
    hurry: () => sender.hurry(),
    close: (timeoutMs) => sender.stop(timeoutMs),
  };
}

/**
 * The publisher thread seen from the request thread. Counts what it posted and what came back, so
 * when the thread dies (a bug: it retries Kafka itself) the events inside it are counted as lost,
 * and a new thread is started with backoff; events posted meanwhile wait here.
 */
class ThreadChannel implements SenderChannel {
  private worker: Worker | undefined;
  /** Events posted to the current thread and not reported back. */
  private inThread = 0;
  /** Batches written while no thread was running (it died): posted to the next one. */
  private waiting: FramedBatch[] = [];
  /**
   * Events are encoded here, on the request thread, into one buffer per hand-over (the schema id
   * is stamped in by the thread, which holds the registry connection): see FramedEventWriter.
   */
  private readonly writer = new FramedEventWriter('PredictionMade');
  private closing = false;
  /** A hurry asked for while no thread was running: passed on to the next one. */
  private hurryNext = false;
  private restartMs = 500;
  private closedSignal: (() => void) | undefined;

  constructor(
    private readonly data: ThreadData,
    /** Also told about events lost with a dead thread (as refused). */
    private readonly onResult: (r: SendResult) => void,
    private readonly logger: Logger,
  ) {
    this.start();
  }

  private start(): void {
    const worker = startThread(import.meta.url, 'runPublisherThread', this.data, 'eddy-publisher');
    worker.on('message', (m: FromThread) => {
      if (m.type === 'result') {
        this.inThread -= m.sent + m.refused;
        this.restartMs = 500;
        this.onResult(m);
      } else if (m.type === 'closed') {
        this.closedSignal?.();
      }
    });
    worker.on('error', (err) => this.logger.error({ err: errorMessage(err) }, 'PredictionMade publisher thread failed'));
    worker.on('exit', (code) => {
      if (this.worker !== worker) return;
      this.worker = undefined;
      const lost = this.inThread;
      this.inThread = 0;
      if (lost > 0) this.onResult({ sent: 0, refused: lost });
      this.closedSignal?.();
      if (this.closing) return;
      this.logger.error({ code, lost, restartInMs: this.restartMs }, 'PredictionMade publisher thread exited; restarting it');
      setTimeout(() => {
        if (this.closing) return;
        this.start();
        const waiting = this.waiting;
        this.waiting = [];
        for (const batch of waiting) this.postBatch(batch);
        if (this.hurryNext) this.hurry();
      }, this.restartMs).unref();
      this.restartMs = Math.min(this.restartMs * 2, 30_000);
    });
    this.worker = worker;
  }

  add(event: PredictionMade): void {
    this.writer.append(event);
  }

  unspooled(): { bytes: Buffer; count: number } | undefined {
    return this.writer.unsynced();
  }

  postFramed(batch: FramedBatch): void {
    this.postBatch(batch);
  }

  get queued(): number {
    return this.writer.count;
  }

  post(): void {
    const batch = this.writer.take();
    if (batch) this.postBatch(batch);
  }

  private postBatch(batch: FramedBatch): void {
    if (!this.worker) {
      this.waiting.push(batch);
      return;
    }
    this.inThread += batch.count;
    // Transferred, not copied: the request thread never touches this buffer again.
    this.worker.postMessage({ type: 'framed', batch } satisfies ToThread, [batch.buffer]);
  }

  hurry(): void {
    this.hurryNext = !this.worker;
    this.worker?.postMessage({ type: 'hurry' } satisfies ToThread);
  }

  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    const worker = this.worker;
    if (!worker) return;
    const closed = new Promise<void>((resolve) => (this.closedSignal = resolve));
    worker.postMessage({ type: 'close', timeoutMs } satisfies ToThread);
    let timer: NodeJS.Timeout | undefined;
    // The thread needs timeoutMs for its buffer plus a moment to disconnect from Kafka.
    await Promise.race([closed, new Promise((r) => (timer = setTimeout(r, timeoutMs + 5_000)))]);
    clearTimeout(timer);
    this.worker = undefined;
    await worker.terminate();
  }
}

/**
 * Body of the publisher thread: connects to Kafka and the schema registry, retrying until they
 * answer (events wait meanwhile), and runs a PredictionSender until told to close.
 */
export function runPublisherThread(data: ThreadData): void {
  const port = parentPort;
  if (!port) throw new Error('runPublisherThread must run in a worker thread');
  const logger = createLogger('server-publisher', data.kafka.logLevel).child({ replica: data.replicaId });
  const lowerPriority = () => {
    try {
      // Linux nice values are per thread, and pid 0 means the calling thread: this lowers only the
      // publisher's priority, so its produce bursts wait when requests need the core.
      os.setPriority(0, os.constants.priority.PRIORITY_BELOW_NORMAL);
    } catch (err) {
      logger.debug({ err: errorMessage(err) }, 'cannot lower the publisher thread priority');
    }
  };
  let producer: EventProducer | undefined;
  let codec: EventCodec | undefined;
  let closing = false;
  const connected = retry(async () => {
    codec = await EventCodec.connect({ url: data.schemaRegistryUrl, logger });
    const p = new EventProducer(createKafkaClient(data.kafka, `eddy-server-${data.replicaId}-publisher`), codec, new TopicNames(data.topicPrefix));
    await p.connect();
    producer = p;
    return p;
  }, {
    initialMs: 500, maxMs: 10_000,
    // Kafka or the registry away at start: keep trying (events wait in the buffer) until closed.
    retriable: () => !closing,
    onRetry: (err, retryInMs) => logger.warn({ err: errorMessage(err), retryInMs }, 'publisher thread cannot reach Kafka or the registry yet; PredictionMade events wait'),
  });
  connected.catch(() => undefined); // given up only on close; a send waiting on it reports the refusal
  // Lowered only once connected: at nice 10 on a busy machine the connection (registry, metadata,
  // producer id) waited seconds for the core, and with it a restarted server's first PredictionMade.
  void connected.then(lowerPriority, () => undefined);
  const topic = new TopicNames(data.topicPrefix).physical(TOPIC_OF_EVENT.PredictionMade);
  const headers = { [EVENT_HEADER]: 'PredictionMade' };
  let schemaId: number | undefined;
  // Framed messages (the request thread's encoding) get their schema id here; event objects (the
  // inline format, still accepted) are encoded here.
  const sender = new PredictionSender<PredictionMade | OutgoingMessage>(
    async (items) => {
      const p = await connected;
      schemaId ??= codec!.schemaId('PredictionMade');
      const messages = items.map((item) => {
        if (!isFramed(item)) return p.message('PredictionMade', item);
        (item.value as Buffer).writeInt32BE(schemaId!, 1);
        return item;
      });
      await p.sendMessages([{ topic, messages }]);
    },
    (result) => port.postMessage({ type: 'result', ...result } satisfies FromThread),
    logger,
    data.lingerMs,
    data.batchSize,
  );
  port.on('message', (m: ToThread) => {
    if (m.type === 'framed') sender.add(framedMessages(m.batch, 0, headers));
    else if (m.type === 'events') sender.add(m.events);
    else if (m.type === 'hurry') sender.hurry();
    else if (m.type === 'close') {
      closing = true;
      void (async () => {
        await sender.stop(m.timeoutMs);
        await producer?.disconnect().catch((err: unknown) => logger.warn({ err: errorMessage(err) }, 'closing the publisher connection failed'));
        port.postMessage({ type: 'closed' } satisfies FromThread);
      })();
    }
  });
}

function isFramed(item: PredictionMade | OutgoingMessage): item is OutgoingMessage {
  return Buffer.isBuffer((item as OutgoingMessage).value);
}

/** Reads a framed PredictionMade value (magic byte, schema id, Avro) back into an event: the inline sender replaying a spool. */
function framedDecoder(): (value: Buffer) => PredictionMade {
  const type = avro.Type.forSchema(loadSchema('PredictionMade'));
  return (value) => type.fromBuffer(value.subarray(5)) as PredictionMade;
}

const RESOLVED: Promise<void> = Promise.resolve();
