import http from 'node:http';
import type { AddressInfo } from 'node:net';
import client from 'prom-client';
import type { EddyConfig } from './config.ts';
import { errorMessage } from './errors.ts';
import { createLogger } from './log.ts';

/**
 * The process-wide Prometheus registry. Runtimes (consumer runner, HTTP server) register their
 * metrics here once, so every component gets received/processed/error/latency metrics without
 * writing them by hand; `/metrics` endpoints serialise this registry.
 */
export const metricsRegistry = new client.Registry();

/** Returns the metric registered under `name`, creating it on first use (safe across modules and tests). */
export function metric<T extends client.Metric>(name: string, create: () => T): T {
  const existing = metricsRegistry.getSingleMetric(name);
  if (existing) return existing as unknown as T;
  const m = create();
  metricsRegistry.registerMetric(m);
  return m;
}

/** A counter registered under its configured name, created on first use (the name is written once). */
export function counter<L extends string>(config: client.CounterConfiguration<L>): client.Counter<L> {
  return metric(config.name, () => new client.Counter<L>(config));
}

/** A gauge registered under its configured name, created on first use. */
export function gauge<L extends string>(config: client.GaugeConfiguration<L>): client.Gauge<L> {
  return metric(config.name, () => new client.Gauge<L>(config));
}

/** A histogram registered under its configured name, created on first use. */
export function histogram<L extends string>(config: client.HistogramConfiguration<L>): client.Histogram<L> {
  return metric(config.name, () => new client.Histogram<L>(config));
}

export { client as prom };

/** One label set of a {@link HotCounter}: `n` counts up on the hot path. */
export interface CounterCell {
  n: number;
}

const hotCounters = new Map<string, HotCounter<string>>();

/**
 * A counter for the request path. prom-client's `inc(labels)` builds a key string from the label
 * object on every call; here each label set is a cell whose `n` is a plain number, added to the
 * prom-client counter when the registry is read (prom-client's `collect` hook, so /metrics and
 * `get()` see every increment). Created once per name, like {@link metric}.
 */
export class HotCounter<L extends string> {
  private readonly cells = new Map<string, { labels: Partial<Record<L, string | number>>; cell: CounterCell }>();
  readonly counter: client.Counter<L>;

  private constructor(config: client.CounterConfiguration<L>) {
    this.counter = metric(config.name, () => new client.Counter<L>({ ...config, collect: () => this.flush() }));
  }

  static of<L extends string>(config: client.CounterConfiguration<L>): HotCounter<L> {
    let hot = hotCounters.get(config.name) as HotCounter<L> | undefined;
    if (!hot) hotCounters.set(config.name, (hot = new HotCounter<L>(config) as unknown as HotCounter<string>) as unknown as HotCounter<L>);
    return hot;
  }

  /** The cell of one label set: look it up once and keep it (the lookup builds a key). */
  cell(labels: Partial<Record<L, string | number>> = {}): CounterCell {
    const key = JSON.stringify(labels);
    let entry = this.cells.get(key);
    if (!entry) {
      entry = { labels, cell: { n: 0 } };
      this.cells.set(key, entry);
      // The series exists from its first cell on (0 until counted), as prom-client's would after inc(0).
      this.counter.inc(labels, 0);
    }
    return entry.cell;
  }

  private flush(): void {
    for (const { labels, cell } of this.cells.values()) {
      if (cell.n === 0) continue;
      this.counter.inc(labels, cell.n);
      cell.n = 0;
    }
  }
}

/** One exported sample of a {@link HotHistogram}. */
interface HistogramValue {
  metricName: string;
  labels: Record<string, string | number>;
  value: number;
}

/** One label set of a {@link HotHistogram}: observe on the hot path. */
export interface HistogramCell {
  observe(value: number): void;
}

class HistogramSeries implements HistogramCell {
  /** Observations per bucket (not cumulative), the last one for +Inf. */
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly labels: Record<string, string | number>, private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const b = this.bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

/**
 * A histogram for the request path, exported like prom-client's (`_bucket{le}` cumulative,
 * `_sum`, `_count`; registered in {@link metricsRegistry}, read with `get()`). prom-client's
 * `observe` validates the labels, hashes them into a key and finds the bucket by a number-keyed
 * property on every call, ~1–2 µs per request for the server's two latency histograms
 * (docs/benchmarks/server.md); here a caller looks up the cell of its label set once and an
 * observation is a bucket scan and three additions. Created once per name, like {@link metric}.
 */
export class HotHistogram<L extends string> {
  readonly type = 'histogram';
  readonly aggregator = 'sum';
  readonly name: string;
  readonly help: string;
  private readonly bounds: readonly number[];
  private readonly series = new Map<string, HistogramSeries>();

  private constructor(config: { name: string; help: string; labelNames?: readonly L[]; buckets: readonly number[] }) {
    this.name = config.name;
    this.help = config.help;
    this.bounds = [...config.buckets].sort((a, b) => a - b);
  }

  static of<L extends string>(config: { name: string; help: string; labelNames?: readonly L[]; buckets: readonly number[] }): HotHistogram<L> {
    return metric(config.name, () => new HotHistogram<L>(config) as unknown as client.Metric) as unknown as HotHistogram<L>;
  }

  /** The cell of one label set: look it up once and keep it (the lookup builds a key). */
  cell(labels: Partial<Record<L, string | number>> = {}): HistogramCell {
    const key = JSON.stringify(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = new HistogramSeries(labels as Record<string, string | number>, this.bounds)));
    return s;
  }

  /** What prom-client's Registry reads (the shape of a prom-client Histogram's `get()`). */
  async get(): Promise<{ name: string; help: string; type: 'histogram'; aggregator: 'sum'; values: HistogramValue[] }> {
    const values: HistogramValue[] = [];
    for (const s of this.series.values()) {
      let cumulative = 0;
      for (let i = 0; i < this.bounds.length; i++) {
        cumulative += s.counts[i]!;
        values.push({ metricName: `${this.name}_bucket`, labels: { le: this.bounds[i]!, ...s.labels }, value: cumulative });
      }
      values.push({ metricName: `${this.name}_bucket`, labels: { le: '+Inf', ...s.labels }, value: s.count });
      values.push({ metricName: `${this.name}_sum`, labels: { ...s.labels }, value: s.sum });
      values.push({ metricName: `${this.name}_count`, labels: { ...s.labels }, value: s.count });
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator };
  }

  reset(): void {
    for (const s of this.series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}

/** Something that samples on its own schedule while the endpoint is up (the consumer-lag collector). */
export interface MetricsSampler {
  start(): void;
  stop(): Promise<void>;
}

export interface MetricsEndpoint<S extends MetricsSampler | undefined = MetricsSampler | undefined> {
  url: string;
  sampler: S;
  close(): Promise<void>;
}

/**
 * GET /metrics for processes without an HTTP API (processors, trainer): the process registry, so
 * every consumer group, the monitor's quality gauges, retrain outcomes and the Redis/ClickHouse
 * latency histograms of that process are scraped. A `sampler` (the processors pass the consumer
 * lag collector; one per deployment is enough, Grafana takes the max across jobs) runs while the
 * endpoint is up. The socket is unref'd: it never keeps a process alive; close it on shutdown.
 * Returns undefined when disabled (port 0) or when the port is taken (the process works unscraped).
 */
export async function serveProcessMetrics<S extends MetricsSampler | undefined = undefined>(
  config: Pick<EddyConfig, 'monitor' | 'logLevel'>, component: string, sampler?: S,
): Promise<MetricsEndpoint<S> | undefined> {
  const { metricsPort, metricsHost } = config.monitor;
  if (metricsPort === 0) return undefined;
  const logger = createLogger(`${component}-metrics`, config.logLevel);
  const server = http.createServer((req, res) => {
    if (req.method === 'GET' && req.url?.split('?')[0] === '/metrics') {
      metricsRegistry.metrics().then(
        (text) => res.writeHead(200, { 'content-type': metricsRegistry.contentType }).end(text),
        (err: unknown) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'INTERNAL', message: errorMessage(err) } })),
      );
      return;
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'NOT_FOUND', message: 'only GET /metrics is served here' } }));
  });
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(metricsPort, metricsHost, () => resolve());
    });
  } catch (err) {
    logger.warn({ err: errorMessage(err), port: metricsPort }, 'metrics endpoint not started (set EDDY_METRICS_PORT to a free port, or 0)');
    return undefined;
  }
  server.unref();
  sampler?.start();
  const { port } = server.address() as AddressInfo;
  const url = `http://${metricsHost}:${port}/metrics`;
  logger.info({ url }, 'metrics endpoint listening');
  let closing: Promise<void> | undefined;
  return {
    url,
    sampler: sampler as S,
    close() {
      closing ??= (async () => {
        await sampler?.stop();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
      })();
      return closing;
    },
  };
}
