import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { EddyConfig } from '../../common/config.ts';
import { errorMessage } from '../../common/errors.ts';
import { createLogger } from '../../common/log.ts';
import { metricsRegistry } from '../../common/metrics.ts';
import type { Streams } from '../../streams/index.ts';
import { LagCollector } from './lag.ts';

export interface MetricsEndpoint {
  url: string;
  lag: LagCollector | undefined;
  close(): Promise<void>;
}

/**
 * GET /metrics for processes without an HTTP API (processors, trainer): the shared registry, so
 * every consumer group, the monitor's quality gauges, retrain outcomes and the Redis/ClickHouse
 * latency histograms of that process are scraped. With `streams`, the process also samples
 * consumer lag of every group of its prefix (the processors do; one sampler per deployment is
 * enough, Grafana takes the max across jobs). The socket is unref'd: it never keeps a process alive.
 */
export async function serveProcessMetrics(config: EddyConfig, component: string, streams?: Pick<Streams, 'withAdmin' | 'topics'>): Promise<MetricsEndpoint | undefined> {
  const { metricsPort, metricsHost, lagIntervalMs } = config.monitor;
  if (metricsPort === 0) return undefined;
  const logger = createLogger(`${component}-metrics`, config.logLevel);
  const lag = streams ? new LagCollector(streams, lagIntervalMs, logger) : undefined;
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
    // A busy port must not stop the processors: they work without being scraped.
    logger.warn({ err: errorMessage(err), port: metricsPort }, 'metrics endpoint not started (set EDDY_METRICS_PORT to a free port, or 0)');
    return undefined;
  }
  server.unref();
  lag?.start();
  const { port } = server.address() as AddressInfo;
  const url = `http://${metricsHost}:${port}/metrics`;
  logger.info({ url }, 'metrics endpoint listening');
  return {
    url,
    lag,
    async close() {
      await lag?.stop();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
