import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { describeConfig } from '../common/config.ts';
import { serveProcessMetrics } from '../common/metrics.ts';
import { createLogger } from '../common/log.ts';
import { LagCollector } from '../streams/index.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { freePort } from './processors-support.ts';

/**
 * Prometheus and Grafana cannot run here (no Docker engine): this keeps their configuration
 * honest instead. Every metric a panel or a rule queries is one the code registers, every scrape
 * target is a compose service on the port that service exports, and every file is mounted.
 */

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return ['node_modules', '.git', 'scratch', 'test'].includes(e.name) ? [] : sourceFiles(p);
    return p.endsWith('.ts') ? [p] : [];
  });
}

const registered = new Set(sourceFiles('.').flatMap((f) => [...fs.readFileSync(f, 'utf8').matchAll(/name: '(eddy_[a-z0-9_]+)'/g)].map((m) => m[1]!)));
const queried = (text: string) => [...new Set([...text.matchAll(/\b(eddy_[a-z0-9_]+)/g)].map((m) => m[1]!.replace(/_(bucket|sum|count)$/, '')))];

describe('Prometheus and Grafana configuration', () => {
  it('queries only metrics the code exports', () => {
    const dashboard = fs.readFileSync('deploy/grafana/dashboards/eddy.json', 'utf8');
    const rules = fs.readFileSync('deploy/prometheus-alerts.yml', 'utf8');
    const used = queried(dashboard + rules);
    expect(used.length).toBeGreaterThan(15);
    expect(used.filter((m) => !registered.has(m))).toEqual([]);
  });

  it('is a well-formed dashboard with unique panel ids and a client selector', () => {
    const d = JSON.parse(fs.readFileSync('deploy/grafana/dashboards/eddy.json', 'utf8')) as { uid: string; panels: Array<{ id: number; targets?: unknown[]; type: string }>; templating: { list: Array<{ name: string }> } };
    const ids = d.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(d.panels.filter((p) => p.type !== 'row').every((p) => (p.targets ?? []).length > 0)).toBe(true);
    expect(d.templating.list.map((v) => v.name)).toContain('client');
  });

  it('scrapes compose services on the ports they export, with the rules mounted', () => {
    const prom = parse(fs.readFileSync('deploy/prometheus.yml', 'utf8')) as { rule_files: string[]; scrape_configs: Array<{ static_configs: Array<{ targets: string[] }> }> };
    const compose = parse(fs.readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as { services: Record<string, { volumes?: string[]; environment?: Record<string, string> }> };
    const metricsPort = describeConfig().find((v) => v.name === 'EDDY_METRICS_PORT')!.default;
    const serverPort = describeConfig().find((v) => v.name === 'EDDY_SERVER_PORT')!.default;
    for (const target of prom.scrape_configs.flatMap((s) => s.static_configs.flatMap((c) => c.targets))) {
      const [host, port] = target.split(':');
      expect(Object.keys(compose.services), target).toContain(host);
      expect([metricsPort, serverPort], target).toContain(port);
    }
    expect(compose.services.processors!.environment!.EDDY_METRICS_HOST).toBe('0.0.0.0');
    const mounts = compose.services.prometheus!.volumes!.map((v) => v.split(':')[1]);
    for (const f of prom.rule_files) expect(mounts).toContain(f);
    expect(compose.services.grafana!.volumes!.some((v) => v.startsWith('./deploy/grafana/dashboards:'))).toBe(true);
  });
});

describe('metrics endpoint of the processors process', () => {
  const config = testConfig({ EDDY_METRICS_PORT: '0', EDDY_MONITOR_LAG_INTERVAL_MS: '500' });
  let streams: Awaited<ReturnType<typeof testStreams>> | undefined;
  afterAll(async () => {
    await streams?.cleanup();
  });

  it('is disabled by port 0, and otherwise serves the registry with consumer lag', async () => {
    expect(await serveProcessMetrics(config, 'test')).toBeUndefined();
    streams = await testStreams(config);
    const lag = new LagCollector(streams, config.monitor.lagIntervalMs, createLogger('lag', 'silent'));
    const endpoint = await serveProcessMetrics({ ...config, monitor: { ...config.monitor, metricsPort: await freePort() } }, 'test', lag);
    expect(endpoint).toBeDefined();
    try {
      const sample = await waitFor('a lag sample', () => endpoint!.sampler.latest, 20_000);
      expect(Object.keys(sample.ends)).toEqual(expect.arrayContaining(['predictions', 'feedback', 'models']));
      const res = await fetch(endpoint!.url);
      expect(res.status).toBe(200);
      expect(await res.text()).toContain(`eddy_topic_end_offset{topic="predictions"} 0`);
      const other = await fetch(endpoint!.url.replace('/metrics', '/nope'));
      expect(other.status).toBe(404);
      expect(await other.json()).toMatchObject({ error: { code: 'NOT_FOUND' } });
    } finally {
      await endpoint!.close();
    }
  });
});
