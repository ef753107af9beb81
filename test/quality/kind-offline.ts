/**
 * One model kind on the real-text clients, without the model search: fits QUALITY_KIND (default
 * embedding-bag) with its default params (overridden by QUALITY_PARAMS, JSON) on each client's
 * train split plus its label-name definitions, scores the 20% test split with the pure-JS scorer,
 * and fits sparse-linear's defaults on the same featurized data in the same run as the reference
 * (its macro-F1 and CPU, and the ratio of CPU). The loop for tuning a kind's hyperparameters.
 *
 *   tsx test/quality/kind-offline.ts
 *   QUALITY_KIND=embedding-bag QUALITY_PARAMS='{"embedding":32}' QUALITY_CHARS=3,4 QUALITY_CLIENTS=fortune-small tsx test/quality/kind-offline.ts
 * QUALITY_BACKEND forces a TensorFlow.js backend (wasm, cpu); QUALITY_REFERENCE=0 skips sparse-linear.
 */
import type { SparseVector } from '../../featurizer/text.ts';
import type { ModelManifest } from '../../models/artifact.ts';
import type { FitData } from '../../models/kinds/index.ts';
import { kindTrainer } from '../../models/kinds/trainers.ts';
import { initBackend } from '../../trainer/backend.ts';
import { definitionText } from '../../trainer/dataset.ts';
import { evaluate } from '../../trainer/evaluate.ts';
import { featurizerOf } from '../../trainer/search.ts';
import { loadClients, REAL_CLIENTS, type CorpusClient } from './corpora.ts';

const kindName = process.env.QUALITY_KIND ?? 'embedding-bag';
const params = JSON.parse(process.env.QUALITY_PARAMS ?? '{}') as Record<string, unknown>;
const charNgrams = (process.env.QUALITY_CHARS ?? '').split(',').filter(Boolean).map(Number);
const only = process.env.QUALITY_CLIENTS?.split(',').filter(Boolean);
const withReference = process.env.QUALITY_REFERENCE !== '0';

interface Score { macroF1: number; cpuMs: number; iterations: number; bytes: number; usPerPredict: number }

async function fitAndScore(kind: string, kparams: Record<string, unknown>, c: CorpusClient, train: FitData, test: SparseVector[]): Promise<Score> {
  const trainer = kindTrainer(kind);
  if (!trainer) throw new Error(`no trainer for kind ${kind}`);
  const cpu0 = process.cpuUsage();
  const fitted = await trainer.fit(train, { ...(trainer.defaults as Record<string, unknown>), ...kparams }, { epochs: 10, seed: 42 });
  const cpu = process.cpuUsage(cpu0);
  const manifest = { labels: c.labels, model: fitted.model } as ModelManifest;
  const scorer = trainer.kind.scorer(manifest, fitted.weights);
  const predictAll = () => test.map((v) => {
    const z = scorer.logits(v);
    let best = 0;
    for (let k = 1; k < z.length; k++) if (z[k]! > z[best]!) best = k;
    return c.labels[best]!;
  });
  const predicted = predictAll();
  // Scorer time per test example after a warm-up pass (featurizing excluded).
  const rounds = Math.max(1, Math.ceil(5000 / Math.max(1, test.length)));
  const t0 = performance.now();
  for (let r = 0; r < rounds; r++) predictAll();
  const usPerPredict = ((performance.now() - t0) * 1000) / Math.max(1, rounds * test.length);
  return {
    macroF1: evaluate(c.test.map((e) => e.label), predicted).macroF1, cpuMs: Math.round((cpu.user + cpu.system) / 1000),
    iterations: fitted.iterations ?? 0, bytes: trainer.kind.estimateBytes(manifest), usPerPredict,
  };
}

const backend = await initBackend(undefined, process.env.QUALITY_BACKEND || undefined);
const clients = loadClients(only ? REAL_CLIENTS.filter((s) => only.includes(s.clientId)) : REAL_CLIENTS);
console.log(`kind ${kindName} params ${JSON.stringify(params)} charNgrams [${charNgrams.join(',')}] backend ${backend}`);
console.log(`| client | train examples | ${kindName} macro-F1 | epochs | train CPU ms | µs/predict | model KiB |${withReference ? ' sparse-linear macro-F1 | its CPU ms | CPU ratio |' : ''}`);
console.log(`|---|---|---|---|---|---|---|${withReference ? '---|---|---|' : ''}`);
const f1s: number[] = [];
for (const c of clients) {
  const fz = featurizerOf({ charNgrams });
  const index = new Map(c.labels.map((l, i) => [l, i]));
  // As the event run: the label names are the definitions (no description or keywords).
  const defs = c.labels.map((l) => ({ label: l, text: definitionText({ label: l, description: "", keywords: [] }) }));
  const train: FitData = {
    vectors: [...c.train.map((e) => fz.featurize(e.text)), ...defs.map((d) => fz.featurize(d.text))],
    targets: Int32Array.from([...c.train.map((e) => index.get(e.label)!), ...defs.map((d) => index.get(d.label)!)]),
    numLabels: c.labels.length,
  };
  const test = c.test.map((e) => fz.featurize(e.text));
  const s = await fitAndScore(kindName, params, c, train, test);
  f1s.push(s.macroF1);
  let ref = '';
  if (withReference) {
    const r = await fitAndScore('sparse-linear', {}, c, train, test);
    ref = ` ${r.macroF1.toFixed(4)} | ${r.cpuMs} | ${(s.cpuMs / Math.max(1, r.cpuMs)).toFixed(1)} |`;
  }
  console.log(`| ${c.clientId} | ${c.train.length} | ${s.macroF1.toFixed(4)} | ${s.iterations} | ${s.cpuMs} | ${s.usPerPredict.toFixed(1)} | ${(s.bytes / 1024).toFixed(0)} |${ref}`);
}
console.log(`\nmean ${kindName} macro-F1 ${(f1s.reduce((a, b) => a + b, 0) / Math.max(1, f1s.length)).toFixed(4)}`);
