/**
 * `npm run bench:quality`: two tables, each beside a scikit-learn reference computed in the same run.
 *
 * 1. Real text (corpora.ts: Debian's fortunes and wordnet-base, cut into seven clients): imported
 *    into a running Eddy with its default settings through its own events, trained by Eddy on its
 *    own, scored through `POST /predict/batch` on the held-out 20% (real.ts), next to TF-IDF
 *    (word 1–2-grams, sublinear tf) + logistic regression with C chosen by 5-fold cross-validation
 *    on the same 80% (reference_cv.py).
 * 2. The synthetic workload (workload.ts), trained in process by the trainer's own fitCandidate,
 *    next to TF-IDF + logistic regression with C picked on the trainer's validation split (reference.py).
 *
 * Needs Debian's python3-sklearn (/usr/bin/python3), fortunes and wordnet-base (installed with
 * apt-get when missing). Progress on stderr, tables on stdout.
 * Optional: QUALITY_CLIENTS=fortune-small,acme-100 runs a subset (names from either table);
 * QUALITY_WAIT_S (default 600) bounds the wait for models trained on all imported data.
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
import { CORPUS_PACKAGE, loadClients, REAL_CLIENTS } from './corpora.ts';
import { runRealText, writeForReference } from './real.ts';

const python = process.env.QUALITY_PYTHON ?? '/usr/bin/python3';
const progress = (line: string) => process.stderr.write(`[bench:quality] ${line}\n`);
// The reference needs scikit-learn; on the project's machine kind it comes from Debian (once).
if (!process.env.QUALITY_PYTHON) {
  aptInstall('python3-sklearn', () => spawnSync(python, ['-c', 'import sklearn']).status === 0, progress);
}
const only = process.env.QUALITY_CLIENTS?.split(',').map((s) => s.trim()).filter(Boolean);
const realSpecs = REAL_CLIENTS.filter((c) => !only || only.includes(c.clientId));
for (const corpus of new Set(realSpecs.map((c) => c.corpus))) aptInstall(CORPUS_PACKAGE[corpus].pkg, CORPUS_PACKAGE[corpus].probe, progress);

if (realSpecs.length > 0) await realTextTable();

async function realTextTable(): Promise<void> {
  const clients = loadClients(realSpecs);
  const results = await runRealText(clients, { waitMs: Number(process.env.QUALITY_WAIT_S ?? 600) * 1000 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-quality-real-'));
  writeForReference(dir, results);
  progress('fitting the reference (5-fold CV over C per client) …');
  const ref = spawnSync(python, [path.join(import.meta.dirname, 'reference_cv.py'), dir], { encoding: 'utf8', maxBuffer: 1 << 26 });
  if (ref.status !== 0) progress(`reference failed (is python3-sklearn installed for ${python}?): ${ref.error?.message ?? ref.stderr}`);
  const scored = new Map<string, { macroF1: number; C: number; cvMacroF1: number; fitSeconds: number; eddyMacroF1?: number }>();
  for (const line of (ref.stdout ?? '').split('\n').filter((l) => l.startsWith('{'))) {
    const r = JSON.parse(line) as { client: string; macroF1: number; C: number; cvMacroF1: number; fitSeconds: number; eddyMacroF1?: number };
    scored.set(r.client, r);
  }
  fs.rmSync(dir, { recursive: true, force: true });
  console.log('## Real text: Eddy (imported through its events, served by POST /predict/batch) vs TF-IDF + logistic regression (C by 5-fold CV)');
  console.log('');
  console.log('| client | corpus | examples (train/test) | labels | Eddy macro-F1 | reference macro-F1 (C) | delta (points) | Eddy model (kind, config) | Eddy version: trained on (watermark, trainingExamples) | Eddy train ms | served after last event |');
  console.log('|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|');
  const sums = { eddy: 0, ref: 0, n: 0 };
  for (const r of results) {
    const s = scored.get(r.client.clientId);
    const eddy = s?.eddyMacroF1;
    const delta = eddy !== undefined && s ? (eddy - s.macroF1) * 100 : NaN;
    if (eddy !== undefined && s) {
      sums.eddy += eddy;
      sums.ref += s.macroF1;
      sums.n++;
    }
    console.log(`| ${r.client.clientId} | ${r.client.corpus} | ${r.client.train.length + r.client.test.length} (${r.client.train.length}/${r.client.test.length}) | ${r.client.labels.length} | ${eddy?.toFixed(4) ?? 'n/a'} | ${s ? `${s.macroF1.toFixed(4)} (C=${s.C})` : 'n/a'} | ${delta.toFixed(2)} | ${r.kind} | ${r.version ?? 'none'}: ${(100 * r.coverage).toFixed(1)}% of the import, ${r.trainingExamples ?? 'n/a'} | ${r.trainingMs ?? 'n/a'} | ${r.servedAfterS === null ? 'not in time' : `${r.servedAfterS.toFixed(1)} s`} |`);
  }
  if (sums.n > 0) {
    console.log(`| **mean** | | | | **${(sums.eddy / sums.n).toFixed(4)}** | **${(sums.ref / sums.n).toFixed(4)}** | **${((100 * (sums.eddy - sums.ref)) / sums.n).toFixed(2)}** | | | | |`);
  }
  console.log('');
}

const syntheticSpecs = WORKLOAD.filter((w) => !only || only.includes(w.clientId));
if (syntheticSpecs.length > 0) await syntheticTable();

async function syntheticTable(): Promise<void> {
  const settings = trainerSettings(loadConfig().trainer);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-quality-'));
  const ours: Array<{ client: string; examples: number; labels: number; macroF1: number; accuracy: number; ms: number; bytes: number; rows: number }> = [];

  for (const spec of syntheticSpecs) {
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

  console.log('## Synthetic workload: trainer in process vs TF-IDF + logistic regression (C on the validation split)');
  console.log('');
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
}
process.exit(0);
