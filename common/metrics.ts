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

export { client as prom };

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
