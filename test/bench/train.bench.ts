/**
 * `npm run bench:train`: one client trained end to end in memory (featurize, fit all epochs,
 * quantise, evaluate with the serving predictor) for clients of 1k, 10k and 100k examples of the
 * synthetic workload; wall time, CPU time, examples/s, peak RSS, model size, and the pure-JS
 * predictor's single-thread speed. Each case runs in a fresh child process so peak memory is its
 * own. Prints a markdown table. Options (env): BENCH_SIZES=1000,10000,100000 BENCH_BACKENDS=wasm,cpu
 * BENCH_SEARCH=0 (a retrain between model searches: one configuration, two fits) or 1 (default: a
 * first model, with the cross-validated search). examples/s = training examples / wall time of
 * the whole retrain (search, held-out fit, calibration, refit on all data, evaluation).
 */
import type { SparseLinearInfo } from '../../models/kinds/sparse-linear/index.ts';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { loadConfig } from '../../common/config.ts';
import { buildTrainingSet, type ExampleRow, type LabelChangeRow } from '../../trainer/dataset.ts';
import { fitCandidate, trainerSettings } from '../../trainer/pipeline.ts';
import { validateTrainingSet } from '../../trainer/validate.ts';
import { generateClient } from '../quality/workload.ts';

interface CaseResult {
  examples: number; labels: number; backend: string; search: boolean; searchMs: number; trainExamples: number;
  wallMs: number; cpuMs: number; examplesPerSecond: number; peakRssMb: number; rows: number; modelBytes: number;
  macroF1: number; predictPerSecond: number; predictP99Ms: number;
}

async function runCase(examples: number, backend: string): Promise<CaseResult> {
  const labels = examples >= 50_000 ? 30 : examples >= 10_000 ? 20 : 8;
  const c = generateClient({ clientId: `bench-${examples}`, examples, labels, noise: 0.05, seed: examples });
  const rows: ExampleRow[] = c.examples.map((e, i) => ({
    event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'ASSIGNMENT', metadata: JSON.stringify(e.metadata), features: '{}', occurred_at_ms: i,
  }));
  const changes: LabelChangeRow[] = c.labels.map((l, i) => ({ event_id: `l${i}`, change: 'ADDED', label: l.name, previous_label: '', description: l.description, keywords: l.keywords, occurred_at_ms: 0 }));
  const search = process.env.BENCH_SEARCH !== '0';
  const settings = { ...trainerSettings(loadConfig().trainer), backend, ...(search ? {} : { search: false as const }) };
  const set = buildTrainingSet(c.clientId, rows, changes);
  const validation = validateTrainingSet(set, settings);
  // Warm up the backend (wasm compile) outside the timed region: a trainer process does it once.
  await (await import('../../trainer/backend.ts')).initBackend(undefined, backend);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const candidate = await fitCandidate(set, validation.examples, settings, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const trainExamples = candidate.manifest.trainingExamples;
  // Predictor: single-thread latency over test texts (what a server pays per request, without HTTP).
  const texts = candidate.test.slice(0, 2000);
  const lat: number[] = [];
  const p0 = performance.now();
  for (let round = 0; round < 3; round++) {
    for (const e of texts) {
      const s = performance.now();
      candidate.predictor.predict(e.text, e.metadata, {}, 3);
      lat.push(performance.now() - s);
    }
  }
  const predictMs = performance.now() - p0;
  lat.sort((a, b) => a - b);
  return {
    examples, labels, backend: candidate.manifest.backend, search, searchMs: candidate.manifest.metrics.searchMs ?? 0, trainExamples,
    wallMs: Math.round(wallMs), cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    examplesPerSecond: Math.round(trainExamples / (wallMs / 1000)),
    peakRssMb: Math.round(process.resourceUsage().maxRSS / 1024),
    rows: (candidate.manifest.model as SparseLinearInfo).dimensions.features, modelBytes: candidate.predictor.memoryBytes,
    macroF1: candidate.evaluation.macroF1,
    predictPerSecond: Math.round(lat.length / (predictMs / 1000)), predictP99Ms: lat[Math.floor(lat.length * 0.99)] ?? 0,
  };
}

const caseArg = process.argv.indexOf('--case');
if (caseArg > 0) {
  const [size, backend] = process.argv[caseArg + 1]!.split(':');
  process.stdout.write(JSON.stringify(await runCase(Number(size), backend!)) + '\n');
} else {
  const sizes = (process.env.BENCH_SIZES ?? '1000,10000,100000').split(',').map(Number);
  const backends = (process.env.BENCH_BACKENDS ?? 'wasm').split(',');
  const self = fileURLToPath(import.meta.url);
  const results: CaseResult[] = [];
  for (const backend of backends) {
    for (const size of sizes) {
      const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--case', `${size}:${backend}`], {
        encoding: 'utf8', env: { ...process.env, EDDY_LOG_LEVEL: 'warn' }, stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 24,
      });
      const r = JSON.parse(out.trim().split('\n').at(-1)!) as CaseResult;
      results.push(r);
      process.stderr.write(`${size} on ${backend}: ${r.wallMs} ms\n`);
    }
  }
  console.log('| examples | labels | backend | search | search ms | training examples | wall ms (search+featurize+fits+eval) | CPU ms | examples/s | peak RSS MB | model rows | model bytes (in memory) | test macro-F1 | predictor predictions/s (1 thread) | predictor p99 ms |');
  console.log('|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const r of results) {
    console.log(`| ${r.examples} | ${r.labels} | ${r.backend} | ${r.search ? 'yes' : 'no'} | ${r.searchMs} | ${r.trainExamples} | ${r.wallMs} | ${r.cpuMs} | ${r.examplesPerSecond} | ${r.peakRssMb} | ${r.rows} | ${r.modelBytes} | ${r.macroF1.toFixed(4)} | ${r.predictPerSecond} | ${r.predictP99Ms.toFixed(3)} |`);
  }
}
