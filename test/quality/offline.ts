/**
 * `npm run bench:quality:offline`: the real-text clients of `bench:quality` trained in process by
 * the trainer's own `fitCandidate` (the search, the held-out fit, calibration and the refit on all
 * data; no Kafka, no ClickHouse), scored on the same 20% test split with the serving predictor.
 * Minutes instead of the event run's twenty: the loop for tuning the model search. The event run
 * stays the benchmark of record (it also measures how a model reaches the server).
 *
 * With `--reference`, the scikit-learn reference (reference_cv.py) runs on the same split after
 * Eddy, one client at a time, and each line shows both (the reference alone takes ~5 min on 2 cores).
 * Options: QUALITY_CLIENTS=fortune-geek,wordnet-verbs (a subset), QUALITY_PYTHON (default /usr/bin/python3).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { loadConfig } from '../../common/config.ts';
import { buildTrainingSet, type ExampleRow, type LabelChangeRow } from '../../trainer/dataset.ts';
import { evaluate } from '../../trainer/evaluate.ts';
import { fitCandidate, trainerSettings } from '../../trainer/pipeline.ts';
import { validateTrainingSet } from '../../trainer/validate.ts';
import { aptInstall } from '../../cli/stack.ts';
import { CORPUS_PACKAGE, loadClients, REAL_CLIENTS, type CorpusClient } from './corpora.ts';

const only = process.env.QUALITY_CLIENTS?.split(',').filter(Boolean);
const withReference = process.argv.includes('--reference');
const python = process.env.QUALITY_PYTHON ?? '/usr/bin/python3';

interface Line { client: string; examples: number; macroF1: number; config: string; cvMacroF1: number | null; trainMs: number; cpuMs: number; reference?: { macroF1: number; C: number } }

async function trainAndScore(c: CorpusClient): Promise<Line> {
  const rows: ExampleRow[] = c.train.map((e, i) => ({
    event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'IMPORT', metadata: '{}', features: '{}', occurred_at_ms: i,
  }));
  // As the event run: the label names only (no description or keywords; the reference gets none either).
  const changes: LabelChangeRow[] = c.labels.map((l, i) => ({ event_id: `l${i}`, change: 'ADDED', label: l, previous_label: '', description: '', keywords: [], occurred_at_ms: 0 }));
  // The searched model, as it serves once the search ran: a large client's quick first model
  // (quickFirstModelExamples) defers the search to its next version, which this loop is for.
  const settings = { ...trainerSettings(loadConfig().trainer), quickFirstModelExamples: 0 };
  const set = buildTrainingSet(c.clientId, rows, changes);
  const validation = validateTrainingSet(set, settings);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const candidate = await fitCandidate(set, validation.examples, settings, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
  const trainMs = Math.round(performance.now() - t0);
  const cpu = process.cpuUsage(cpu0);
  const predicted = c.test.map((e) => candidate.predictor.predict(e.text, {}, {}, 1).label);
  const sel = candidate.manifest.selection;
  return {
    client: c.clientId, examples: c.train.length, macroF1: evaluate(c.test.map((e) => e.label), predicted).macroF1,
    config: sel ? JSON.stringify(sel.config) : '', cvMacroF1: sel?.cvMacroF1 ?? null, trainMs, cpuMs: Math.round((cpu.user + cpu.system) / 1000),
  };
}

function reference(c: CorpusClient): { macroF1: number; C: number } | undefined {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-offline-'));
  try {
    const lines = (rows: Array<{ text: string; label: string }>) => rows.map((x) => JSON.stringify({ text: x.text, label: x.label })).join('\n') + '\n';
    fs.writeFileSync(path.join(dir, `${c.clientId}.train.jsonl`), lines(c.train));
    fs.writeFileSync(path.join(dir, `${c.clientId}.test.jsonl`), lines(c.test));
    const ref = spawnSync(python, [path.join(import.meta.dirname, 'reference_cv.py'), dir], { encoding: 'utf8', maxBuffer: 1 << 26 });
    if (ref.status !== 0) {
      process.stderr.write(`reference failed for ${c.clientId}: ${ref.error?.message ?? ref.stderr}\n`);
      return undefined;
    }
    const out = JSON.parse(ref.stdout.trim().split('\n').at(-1)!) as { macroF1: number; C: number };
    return { macroF1: out.macroF1, C: out.C };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const specs = only ? REAL_CLIENTS.filter((s) => only.includes(s.clientId)) : REAL_CLIENTS;
// As bench:quality: the corpora and the reference's scikit-learn come from Debian, once.
const progress = (line: string) => process.stderr.write(`[bench:quality:offline] ${line}\n`);
for (const corpus of new Set(specs.map((c) => c.corpus))) aptInstall(CORPUS_PACKAGE[corpus].pkg, CORPUS_PACKAGE[corpus].probe, progress);
if (withReference && !process.env.QUALITY_PYTHON) aptInstall('python3-sklearn', () => spawnSync(python, ['-c', 'import sklearn']).status === 0, progress);
const clients = loadClients(specs);
console.log(`| client | examples | Eddy macro-F1 | ${withReference ? 'reference (C) | delta | ' : ''}config (cv macro-F1) | train wall ms | train CPU ms |`);
console.log(`|---|---|---|${withReference ? '---|---|' : ''}---|---|---|`);
const lines: Line[] = [];
for (const c of clients) {
  const line = await trainAndScore(c);
  if (withReference) {
    const ref = reference(c);
    if (ref) line.reference = ref;
  }
  lines.push(line);
  const ref = line.reference ? `${line.reference.macroF1.toFixed(4)} (C=${line.reference.C}) | ${((line.macroF1 - line.reference.macroF1) * 100).toFixed(2)} | ` : withReference ? '— | — | ' : '';
  console.log(`| ${line.client} | ${line.examples} | ${line.macroF1.toFixed(4)} | ${ref}${line.config} (${line.cvMacroF1?.toFixed(3) ?? '—'}) | ${line.trainMs} | ${line.cpuMs} |`);
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const refs = lines.filter((l) => l.reference);
console.log(`\nmean Eddy macro-F1 ${mean(lines.map((l) => l.macroF1)).toFixed(4)}${refs.length ? `, reference ${mean(refs.map((l) => l.reference!.macroF1)).toFixed(4)} over ${refs.length} clients (Eddy on those: ${mean(refs.map((l) => l.macroF1)).toFixed(4)})` : ''}; train CPU ${lines.reduce((a, l) => a + l.cpuMs, 0)} ms in all`);
