/**
 * `npm run bench:quality`: macro-F1 of Eddy's trainer per client of the synthetic workload, next
 * to TF-IDF + logistic regression (sklearn, development-only reference) on the SAME split in the
 * same run. Prints a markdown table. Needs Debian's python3-sklearn (/usr/bin/python3).
 * Optional: QUALITY_CLIENTS=acme-100,eps-10k to run a subset.
 */
import type { SparseLinearInfo } from '../../models/kinds/sparse-linear/index.ts';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from '../../common/config.ts';
import { buildTrainingSet, definitionText, splitOf, type ExampleRow, type LabelChangeRow } from '../../trainer/dataset.ts';
import { fitCandidate, trainerSettings } from '../../trainer/pipeline.ts';
import { validateTrainingSet } from '../../trainer/validate.ts';
import { generateClient, WORKLOAD } from './workload.ts';
import { aptInstall } from '../../cli/stack.ts';

const python = process.env.QUALITY_PYTHON ?? '/usr/bin/python3';
// The reference needs scikit-learn; on the project's machine kind it comes from Debian (once).
if (!process.env.QUALITY_PYTHON) {
  aptInstall('python3-sklearn', () => spawnSync(python, ['-c', 'import sklearn']).status === 0, (line) => process.stderr.write(`[bench:quality] ${line}\n`));
}
const only = process.env.QUALITY_CLIENTS?.split(',');
const settings = trainerSettings(loadConfig().trainer);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-quality-'));
const ours: Array<{ client: string; examples: number; labels: number; macroF1: number; accuracy: number; ms: number; bytes: number; rows: number }> = [];

for (const spec of WORKLOAD.filter((w) => !only || only.includes(w.clientId))) {
  const c = generateClient(spec);
  const exampleRows: ExampleRow[] = c.examples.map((e, i) => ({
    event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'ASSIGNMENT',
    metadata: JSON.stringify(e.metadata), features: '{}', occurred_at_ms: 1_000 + i,
  }));
  const changes: LabelChangeRow[] = c.labels.map((l, i) => ({
    event_id: `l${i}`, change: 'ADDED', label: l.name, previous_label: '', description: l.description, keywords: l.keywords, occurred_at_ms: i,
  }));
  const set = buildTrainingSet(c.clientId, exampleRows, changes);
  const validation = validateTrainingSet(set, settings);
  if (!validation.ok) throw new Error(`${c.clientId}: ${validation.detail}`);
  const candidate = await fitCandidate(set, validation.examples, settings, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
  ours.push({
    client: c.clientId, examples: c.examples.length, labels: c.labels.length, macroF1: candidate.evaluation.macroF1,
    accuracy: candidate.evaluation.accuracy, ms: candidate.trainingMs, bytes: candidate.predictor.memoryBytes, rows: (candidate.manifest.model as SparseLinearInfo).dimensions.features,
  });
  const write = (split: string, rows: Array<{ text: string; label: string; metadata: Record<string, string> }>) =>
    fs.writeFileSync(path.join(dir, `${c.clientId}.${split}.jsonl`), rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  const bySplit = (s: string) => validation.examples.filter((e) => splitOf(e.exampleId) === s);
  write('train', [...bySplit('train'), ...set.definitions.map((d) => ({ text: definitionText(d), label: d.label, metadata: {} }))]);
  write('validation', bySplit('validation'));
  // The same test examples the trainer scored (fitCandidate falls back to validation+test when test is empty).
  write('test', candidate.test);
  process.stderr.write(`${c.clientId}: macro-F1 ${candidate.evaluation.macroF1.toFixed(4)} in ${candidate.trainingMs} ms\n`);
}

const reference = new Map<string, { macroF1: number; accuracy: number; fitSeconds: number; C: number }>();
// Lines are printed per client as they finish: keep what arrived even if the reference failed later.
const ref = spawnSync(python, [path.join(import.meta.dirname, 'reference.py'), dir], { encoding: 'utf8', maxBuffer: 1 << 26 });
if (ref.status !== 0) process.stderr.write(`reference failed (is python3-sklearn installed for ${python}?): ${ref.error?.message ?? ref.stderr}\n`);
for (const line of (ref.stdout ?? '').split('\n').filter((l) => l.startsWith('{'))) {
  const r = JSON.parse(line) as { client: string; macroF1: number; accuracy: number; fitSeconds: number; C: number };
  reference.set(r.client, r);
}

console.log(`| client | examples | labels | Eddy macro-F1 | sklearn TF-IDF+LR macro-F1 | delta (points) | Eddy accuracy | sklearn accuracy | Eddy train+eval ms | sklearn fit s (C) | model rows | model bytes |`);
console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
let worst = Infinity;
for (const o of ours) {
  const r = reference.get(o.client);
  const delta = r ? (o.macroF1 - r.macroF1) * 100 : NaN;
  if (!Number.isNaN(delta)) worst = Math.min(worst, delta);
  console.log(`| ${o.client} | ${o.examples} | ${o.labels} | ${o.macroF1.toFixed(4)} | ${r ? r.macroF1.toFixed(4) : 'n/a'} | ${delta.toFixed(2)} | ${o.accuracy.toFixed(4)} | ${r ? r.accuracy.toFixed(4) : 'n/a'} | ${o.ms} | ${r ? `${r.fitSeconds.toFixed(1)} (C=${r.C})` : 'n/a'} | ${o.rows} | ${o.bytes} |`);
}
console.log(`\nworst delta: ${worst.toFixed(2)} points (target: >= -2.00 on every client)`);
fs.rmSync(dir, { recursive: true, force: true });
