import client from 'prom-client';

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
