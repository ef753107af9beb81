/**
 * The model search with extra candidates, on the real-text clients in process (as offline.ts:
 * fitCandidate with the search, held-out fit, calibration and refit on all data): DEFAULT_SEARCH's
 * grid plus QUALITY_EXTRA (a JSON array of SearchConfig, default: embedding-bag with its defaults,
 * word n-grams). Prints per client the test macro-F1, the chosen configuration and the train CPU.
 *
 *   QUALITY_CLIENTS=fortune-geek tsx test/quality/kind-search.ts
 * QUALITY_SEARCH_ONLY=1: only the search, printing every candidate's cross-validated macro-F1.
 */
import { loadConfig } from '../../common/config.ts';
import { initBackend } from '../../trainer/backend.ts';
import { buildTrainingSet, type ExampleRow, type LabelChangeRow } from '../../trainer/dataset.ts';
import { evaluate } from '../../trainer/evaluate.ts';
import { fitCandidate, trainerSettings } from '../../trainer/pipeline.ts';
import { kindTrainer } from '../../models/kinds/trainers.ts';
import { DEFAULT_SEARCH, searchModel, type SearchConfig } from '../../trainer/search.ts';
import { validateTrainingSet } from '../../trainer/validate.ts';
import { loadClients, REAL_CLIENTS } from './corpora.ts';

const only = process.env.QUALITY_CLIENTS?.split(',').filter(Boolean);
const extra = JSON.parse(process.env.QUALITY_EXTRA ?? '[{"kind":"embedding-bag","params":{},"charNgrams":[]}]') as SearchConfig[];
const settings = { ...trainerSettings(loadConfig().trainer), search: { ...DEFAULT_SEARCH, grid: [...DEFAULT_SEARCH.grid, ...extra] } };
// fitCandidate initialises the backend itself; the search alone needs it done here.
await initBackend();
console.log(`grid: default + ${JSON.stringify(extra)}`);
console.log('| client | examples | macro-F1 | chosen config (cv macro-F1) | train CPU ms |');
console.log('|---|---|---|---|---|');
const f1s: number[] = [];
for (const c of loadClients(only ? REAL_CLIENTS.filter((s) => only.includes(s.clientId)) : REAL_CLIENTS)) {
  const rows: ExampleRow[] = c.train.map((e, i) => ({
    event_id: `e${i}`, example_id: e.exampleId, text: e.text, label: e.label, source: 'IMPORT', metadata: '{}', features: '{}', occurred_at_ms: i,
  }));
  const changes: LabelChangeRow[] = c.labels.map((l, i) => ({ event_id: `l${i}`, change: 'ADDED', label: l, previous_label: '', description: '', keywords: [], occurred_at_ms: 0 }));
  const set = buildTrainingSet(c.clientId, rows, changes);
  const validation = validateTrainingSet(set, settings);
  if (process.env.QUALITY_SEARCH_ONLY) {
    const r = await searchModel(validation.examples, set.definitions, set.labels, kindTrainer, settings.search, () => ({}));
    console.log(`| ${c.clientId} | ${c.train.length} | — | ${r.scores.map((x) => `${x.config.kind === 'sparse-linear' ? `C=${String(x.config.params.C)}` : x.config.kind}${x.config.charNgrams.length ? '+chars' : ''} ${x.cvMacroF1.toFixed(3)}`).join(', ')} | ${r.ms} ms wall |`);
    continue;
  }
  const cpu0 = process.cpuUsage();
  const candidate = await fitCandidate(set, validation.examples, settings, { version: 'v1', parent: null, labelDistribution: validation.labelDistribution, retrainEventId: null });
  const cpu = process.cpuUsage(cpu0);
  const f1 = evaluate(c.test.map((e) => e.label), c.test.map((e) => candidate.predictor.predict(e.text, {}, {}, 1).label)).macroF1;
  f1s.push(f1);
  const sel = candidate.manifest.selection;
  console.log(`| ${c.clientId} | ${c.train.length} | ${f1.toFixed(4)} | ${JSON.stringify(sel?.config)} (${sel?.cvMacroF1?.toFixed(3) ?? '—'}) | ${Math.round((cpu.user + cpu.system) / 1000)} |`);
}
console.log(`\nmean macro-F1 ${(f1s.reduce((a, b) => a + b, 0) / Math.max(1, f1s.length)).toFixed(4)}`);
