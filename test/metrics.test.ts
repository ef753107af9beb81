import { describe, expect, it } from 'vitest';
import { HotHistogram, metricsRegistry, prom } from '../common/metrics.ts';

describe('HotHistogram', () => {
  it('exports what a prom-client Histogram exports for the same observations', async () => {
    const name = `eddy_test_hot_histogram_${process.pid}_${Date.now()}`;
    const config = { name, help: 'latency by route', labelNames: ['route'] as const, buckets: [0.001, 0.005, 0.01, 0.1] };
    const hot = HotHistogram.of(config);
    const reference = new prom.Registry();
    const classic = new prom.Histogram({ ...config, labelNames: [...config.labelNames], registers: [reference] });
    // On a bound (le is inclusive), between bounds, above every bound, zero; two label sets.
    const observations: Array<[string, number]> = [['/a', 0.001], ['/a', 0.003], ['/a', 0.5], ['/b', 0], ['/a', 0.01], ['/b', 0.0049], ['/a', 0.003]];
    const cells = new Map<string, ReturnType<typeof hot.cell>>();
    for (const [route, seconds] of observations) {
      let cell = cells.get(route);
      if (!cell) cells.set(route, (cell = hot.cell({ route })));
      cell.observe(seconds);
      classic.observe({ route }, seconds);
    }
    const exported = await metricsRegistry.getSingleMetricAsString(name);
    expect(exported).toBe(await reference.getSingleMetricAsString(name));
    expect(exported).toContain(`${name}_bucket{le="0.005",route="/a"} 3`);
    // The same samples to readers of get() (tests, the dashboard); prom-client adds an exemplar field (null).
    expect(await classic.get()).toMatchObject(await metricsRegistry.getSingleMetric(name)!.get());

    // The same cell is handed out for the same labels, and a reset zeroes every series.
    expect(hot.cell({ route: '/a' })).toBe(cells.get('/a'));
    metricsRegistry.resetMetrics();
    expect(await metricsRegistry.getSingleMetricAsString(name)).toContain(`${name}_count{route="/a"} 0`);
  });
});
