/**
 * The platform benchmark (`npm run bench`): headline figures of the whole loop measured in one run
 * on this machine, beside the reference platform's published figures.
 *
 * 1. Freshness with 100 active clients: the real platform (processors, trainer, server as child
 *    processes of the real CLI) in its own namespace; 100 clients sign up (first-model time is
 *    measured too) and then send steady traffic (HTTP + Kafka requests, feedback, assignments).
 *    Then each client, one after the other, gets a probe: a new team with a dozen labelled tickets
 *    in words no other team uses. Freshness = from producing those labelled events to the first
 *    prediction, served by the server, that answers the new team for a probe text — proof that a
 *    model trained on them is serving. A watcher on `models` tells when to start asking.
 * 2. A bulk import: one new client's 20,000 labelled examples (and its labels) produced as fast as
 *    the producer goes, while the 100 clients' traffic continues; measured from the import's last
 *    event to the first served model trained on ≥ 99% of it (by the watermark of the retrain it
 *    answered: the examples the trigger had seen when it asked, which the trainer waits for).
 * 3. The component benchmarks (every `bench:<area>` script in package.json), run as child
 *    processes after the freshness run (so they do not share the CPU with it); their markdown
 *    tables are collected into this report.
 *
 * Flags: --clients N (default 100), --probes N (default = clients), --rate R (requests/s,
 * default 20), --import N (examples of the bulk import, default 20000; 0 skips it), --import-only
 * (no 100 clients, no probes: only the import, on an idle platform), --skip-components, --write
 * (writes docs/benchmarks/platform.md).
 */
import { execSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '../../common/log.ts';
import type { ModelPublished } from '../../schemas/events.ts';
import { FETCH_EACH_EVENT, type AnyEvent } from '../../streams/index.ts';
import { startSession } from '../../simulator/session.ts';
import { Simulator } from '../../simulator/simulator.ts';
import { generatedClients } from '../../simulator/workload.ts';
import { generateClient } from '../quality/workload.ts';
import type { Session } from '../../simulator/session.ts';

const args = process.argv.slice(2);
const flag = (name: string) => args.includes(`--${name}`);
const option = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? Number(args[i + 1]) : def;
};
const CLIENTS = option('clients', 100);
const PROBES = Math.min(option('probes', CLIENTS), CLIENTS);
const RATE = option('rate', 20);
const IMPORT_EXAMPLES = option('import', 20_000);
const IMPORT_ONLY = flag('import-only');
const IMPORT_TIMEOUT_MS = 5 * 60_000;
const PROBE_SPACING_MS = 500;
const PROBE_TIMEOUT_MS = 180_000;
const FIRST_MODELS_TIMEOUT_MS = 15 * 60_000;
const root = path.resolve(import.meta.dirname, '../..');
const say = (line: string) => process.stderr.write(`[bench] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function quantile(sorted: number[], q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}
const secs = (ms: number) => (Number.isFinite(ms) ? `${(ms / 1000).toFixed(1)} s` : Number.isNaN(ms) ? 'n/a' : 'never');

interface Probe {
  clientId: string;
  label: string;
  text: string;
  producedAt: number;
  publishedAt?: number;
  version?: string;
  servedAt?: number;
  /** ModelRejected events for this client after the probe (why a probe may never be served). */
  rejections: string[];
  /** Their details (the gate's figures), for the report's list of probes never served. */
  rejectionDetails: string[];
}

async function measureFreshness(session: Session, afterProbes: () => Promise<void>) {
  const clients = generatedClients(CLIENTS);
  say(`starting ${CLIENTS} clients …`);
  const probes = new Map<string, Probe>();
  let simulator: Simulator | undefined;
  const watcher = session.streams.consumer({
    group: `${session.id}.bench-watch`, topics: ['models'], fromBeginning: false,
    fetch: FETCH_EACH_EVENT, // it times what it sees: each event at once
    handler: {
      async handle(records) {
        for (const r of records) {
          if (r.event.name === 'ModelRejected') {
            const p = probes.get(r.event.value.clientId);
            if (p && !p.servedAt) {
              p.rejections.push(`${r.event.value.stage}: ${r.event.value.reasons.join(',')}`);
              p.rejectionDetails.push(`${r.event.value.candidateVersion ?? '?'}: ${r.event.value.detail}`);
            }
            continue;
          }
          if (r.event.name !== 'ModelPublished') continue;
          const m: ModelPublished = r.event.value;
          const p = probes.get(m.clientId);
          if (p && !p.publishedAt && m.labels.includes(p.label)) {
            p.publishedAt = Date.now();
            p.version = m.modelVersion;
          }
        }
      },
    },
  });
  const watcherAssigned = watcher.waitForAssignment(60_000);
  await watcher.start();
  await watcherAssigned;
  try {
    simulator = new Simulator({
      streams: session.streams, serverUrl: session.serverUrls[0]!, apiKey: session.apiKey, clients,
      requestsPerSecond: RATE, kafkaShare: 0.3, feedbackRate: 0.8, humanErrorRate: 0.03, feedbackDelayMs: 2000,
      manualAssignmentsPerSecond: 2, logger: createLogger('bench', 'warn'), group: `${session.id}.simulator`,
    });
    const signUpAt = Date.now();
    await simulator.start();
    // First model per client after sign-up (all 100 sign up at once: the trainer's backlog).
    const firstModel = new Map<string, number>();
    while (firstModel.size < CLIENTS) {
      for (const c of simulator.snapshot().clients) if (c.liveVersion && !firstModel.has(c.clientId)) firstModel.set(c.clientId, Date.now() - signUpAt);
      if (Date.now() - signUpAt > FIRST_MODELS_TIMEOUT_MS) throw new Error(`only ${firstModel.size}/${CLIENTS} clients got a first model in ${FIRST_MODELS_TIMEOUT_MS / 60000} min`);
      await sleep(500);
    }
    const firstModelMs = [...firstModel.values()].sort((a, b) => a - b);
    say(`all ${CLIENTS} clients have a model (last after ${secs(firstModelMs[firstModelMs.length - 1]!)}); probing ${PROBES} …`);

    const probeClients = clients.slice(0, PROBES);
    const probing = (async () => {
      for (const [i, spec] of probeClients.entries()) {
        const words = Array.from({ length: 5 }, (_, w) => `zq${i.toString(36)}x${w}${spec.seed.toString(36)}`);
        const label = `probe-team-${i}`;
        const sentence = (n: number) => `${words[n % 5]} ${words[(n + 2) % 5]} please help ${words[(n + 1) % 5]}`;
        const now = Date.now();
        const events: AnyEvent[] = Array.from({ length: 12 }, (_, n) => ({
          name: 'LabeledExample' as const,
          value: { eventId: randomUUID(), clientId: spec.clientId, occurredAt: now, exampleId: `${spec.clientId}-probe-${n}`, text: sentence(n), label, source: 'ASSIGNMENT' as const, metadata: {}, predictionId: null },
        }));
        events.push({ name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: spec.clientId, occurredAt: now, change: 'ADDED', label, previousLabel: null, description: `${label} handles ${words.slice(0, 3).join(', ')}`, keywords: words.slice(0, 3) } });
        probes.set(spec.clientId, { clientId: spec.clientId, label, text: `${words[0]} ${words[3]} is broken`, producedAt: now, rejections: [], rejectionDetails: [] });
        await simulator!.produce(events);
        await sleep(PROBE_SPACING_MS);
      }
    })();
    // Ask the server for every probe whose model was published, until it answers the new team.
    const deadline = Date.now() + PROBES * PROBE_SPACING_MS + PROBE_TIMEOUT_MS;
    for (;;) {
      const waiting = [...probes.values()].filter((p) => p.publishedAt && !p.servedAt);
      await Promise.all(waiting.map(async (p) => {
        const res = await fetch(`${session.serverUrls[0]}/v1/clients/${p.clientId}/predict`, {
          method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${session.apiKey}` },
          body: JSON.stringify({ text: p.text }), signal: AbortSignal.timeout(5000),
        }).catch(() => undefined);
        const body = res?.ok ? ((await res.json()) as { label: string; modelVersion: string | null }) : undefined;
        if (body?.label === p.label && body.modelVersion) p.servedAt = Date.now();
      }));
      const served = [...probes.values()].filter((p) => p.servedAt).length;
      if (probes.size === PROBES && served === PROBES) break;
      if (Date.now() > deadline) break;
      await sleep(200);
    }
    await probing;
    // The bulk import runs while the clients' traffic goes on, after the probes (not to disturb them).
    await afterProbes();
    const all = [...probes.values()];
    // A probe never served counts as infinitely late: quantiles are over ALL probes, not the served ones.
    const fresh = all.map((p) => (p.servedAt ? p.servedAt - p.producedAt : Infinity)).sort((a, b) => a - b);
    const toPublish = all.map((p) => (p.publishedAt ? p.publishedAt - p.producedAt : Infinity)).sort((a, b) => a - b);
    const unservedReasons = new Map<string, number>();
    for (const p of all.filter((x) => !x.servedAt)) {
      const why = p.rejections.length ? p.rejections.join(' then ') : p.publishedAt ? 'published but not answered' : 'no model with the new team published';
      unservedReasons.set(why, (unservedReasons.get(why) ?? 0) + 1);
    }
    // /metrics carries every client's series: the admin key (the session's key) reads it.
    const metrics = await fetch(`${session.serverUrls[0]}/metrics`, { headers: { authorization: `Bearer ${session.apiKey}` } }).then((r) => r.text()).catch(() => '');
    const gauge = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(metrics)?.[1] ?? NaN);
    const modelFiles = listFiles(path.join(session.runDir, 'models'));
    const snap = simulator.snapshot();
    return {
      clients: CLIENTS, probes: PROBES, rate: RATE,
      served: fresh.filter(Number.isFinite).length, unserved: fresh.filter((x) => !Number.isFinite(x)).length,
      unservedReasons: [...unservedReasons],
      unservedDetails: all.filter((x) => !x.servedAt && x.rejectionDetails.length).map((x) => `${x.clientId}: ${x.rejectionDetails.join(' then ')}`),
      freshness: { p50: quantile(fresh, 0.5), p99: quantile(fresh, 0.99), p90: quantile(fresh, 0.9), maxServed: Math.max(0, ...fresh.filter(Number.isFinite)) },
      toPublish: { p50: quantile(toPublish, 0.5), p99: quantile(toPublish, 0.99) },
      firstModel: { p50: quantile(firstModelMs, 0.5), p99: quantile(firstModelMs, 0.99), all: firstModelMs[firstModelMs.length - 1]! },
      loadedModels: gauge('eddy_server_models_loaded'), loadedBytes: gauge('eddy_server_models_loaded_bytes'),
      artifacts: modelFiles.length, artifactBytes: modelFiles.reduce((a, f) => a + f.size, 0),
      requests: snap.requests,
      failures: snap.failures,
      versions: snap.clients.reduce((a, c) => a + c.versions, 0),
      rejected: snap.clients.reduce((a, c) => a + c.rejected, 0),
    };
  } finally {
    await simulator?.stop().catch(() => undefined);
    await watcher.stop().catch(() => undefined);
  }
}

interface ImportResult {
  examples: number;
  labels: number;
  produceS: number;
  /** Last event produced -> a served model trained on >= 99% of the import (null: not within the timeout). */
  servedAfterMs: number | null;
  version: string | null;
  coverage: number;
  trainingExamples: number | null;
  trainingMs: number | null;
  /** Every version published for the client, in order: what it covered, when after the last event. */
  versions: Array<{ version: string; coverage: number; afterLastEventMs: number; reason: string; config: string; macroF1: number | null; trainingMs: number }>;
  rejections: string[];
}

/**
 * One new client's history produced at once (LabelSetChanged per label, then the examples in
 * batches of 1,000 through the real producer), then: how long after the last event does the
 * server serve a model trained on >= 99% of it.
 */
async function measureImport(session: Session): Promise<ImportResult> {
  const c = generateClient({ clientId: 'bulk-import', examples: IMPORT_EXAMPLES, labels: 10, noise: 0.05, seed: 2026 });
  const requests = new Map<string, { position: number; reason: string }>();
  const position = new Map<string, number>();
  const published: Array<{ m: ModelPublished; at: number }> = [];
  const rejections: string[] = [];
  const watcher = session.streams.consumer({
    group: `${session.id}.bench-import`, topics: ['models', 'retrain-requests'], fromBeginning: false,
    // It times what it sees, and a request must be read before the model that answers it: each event at once.
    fetch: FETCH_EACH_EVENT,
    handler: {
      async handle(records) {
        for (const r of records) {
          const e = r.event;
          if (e.value.clientId !== c.clientId) continue;
          if (e.name === 'RetrainRequested') requests.set(e.value.eventId, { position: position.get(e.value.dataAsOf?.examplesEventId ?? '') ?? 0, reason: e.value.reason });
          else if (e.name === 'ModelPublished') published.push({ m: e.value, at: Date.now() });
          else if (e.name === 'ModelRejected') rejections.push(`${e.value.stage}: ${e.value.reasons.join(',')}`);
        }
      },
    },
  });
  const assigned = watcher.waitForAssignment(60_000);
  await watcher.start();
  await assigned;
  try {
    say(`importing ${c.examples.length} examples of one new client …`);
    const startedAt = Date.now();
    await session.streams.producer.sendAll(c.labels.map((l): AnyEvent => ({
      name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: c.clientId, occurredAt: Date.now(), change: 'ADDED', label: l.name, previousLabel: null, description: l.description, keywords: l.keywords },
    })));
    for (let i = 0; i < c.examples.length; i += 1000) {
      await session.streams.producer.sendAll(c.examples.slice(i, i + 1000).map((e, j): AnyEvent => {
        const eventId = randomUUID();
        position.set(eventId, i + j + 1);
        return { name: 'LabeledExample', value: { eventId, clientId: c.clientId, occurredAt: Date.now(), exampleId: e.exampleId, text: e.text, label: e.label, source: 'IMPORT', metadata: e.metadata, predictionId: null } };
      }));
    }
    const lastEventAt = Date.now();
    say(`imported in ${((lastEventAt - startedAt) / 1000).toFixed(1)} s; waiting for a served model trained on >= 99% of it …`);
    const coverage = (m: ModelPublished) => (m.retrainEventId ? requests.get(m.retrainEventId)?.position ?? 0 : 0) / c.examples.length;
    let served: { m: ModelPublished; at: number } | undefined;
    while (!served && Date.now() - lastEventAt < IMPORT_TIMEOUT_MS) {
      const full = published.filter((p) => coverage(p.m) >= 0.99);
      if (full.length > 0) {
        // Served = the server answers with such a version (it loads a client's model on its first request).
        const res = await fetch(`${session.serverUrls[0]}/v1/clients/${c.clientId}/predict`, {
          method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${session.apiKey}` },
          body: JSON.stringify({ text: c.examples[0]!.text }), signal: AbortSignal.timeout(5000),
        }).catch(() => undefined);
        const body = res?.ok ? ((await res.json()) as { modelVersion: string | null }) : undefined;
        const hit = full.find((p) => p.m.modelVersion === body?.modelVersion);
        if (hit) served = { m: hit.m, at: Date.now() };
      }
      if (!served) await sleep(100);
    }
    const quick = served?.m;
    if (quick && !quick.searched && quick.cvMacroF1 === null) {
      // A quick first model (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES): the searched version answers the same request later.
      say(`${quick.modelVersion} (default configuration, no search) serves the import; waiting for the searched version …`);
      const rejectedBefore = rejections.length;
      while (Date.now() - lastEventAt < IMPORT_TIMEOUT_MS && rejections.length === rejectedBefore
        && !published.some((p) => p.m.retrainEventId === quick.retrainEventId && p.m.modelVersion !== quick.modelVersion)) await sleep(250);
    }
    return {
      examples: c.examples.length, labels: c.labels.length, produceS: (lastEventAt - startedAt) / 1000,
      servedAfterMs: served ? served.at - lastEventAt : null, version: served?.m.modelVersion ?? null, coverage: served ? coverage(served.m) : 0,
      trainingExamples: served?.m.trainingExamples ?? null, trainingMs: served?.m.trainingMs ?? null,
      versions: published.map((p) => ({
        version: p.m.modelVersion, coverage: coverage(p.m), afterLastEventMs: p.at - lastEventAt, reason: (p.m.retrainEventId && requests.get(p.m.retrainEventId)?.reason) || '?',
        config: p.m.searched ? `searched (cv ${p.m.cvMacroF1?.toFixed(3) ?? '?'})` : p.m.cvMacroF1 === null ? 'default configuration' : 'configuration carried over',
        macroF1: p.m.metrics.macroF1 ?? null, trainingMs: p.m.trainingMs,
      })),
      rejections,
    };
  } finally {
    await watcher.stop().catch(() => undefined);
  }
}

function listFiles(dir: string): Array<{ size: number }> {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((d) => d.isFile() && !d.name.endsWith('.tmp'))
    .map((d) => ({ size: fs.statSync(path.join(d.parentPath, d.name)).size }));
}

/** Runs every `bench:<area>` script's benchmark command (without its --write) and keeps its tables. */
async function componentBenchmarks(): Promise<Array<{ area: string; command: string; ok: boolean; output: string }>> {
  const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const results = [];
  for (const [script, line] of Object.entries(pkg.scripts)) {
    const m = /^bench:(.+)$/.exec(script);
    if (!m) continue;
    // The stack is already up: run only the benchmark itself, and let this report be the one written.
    const command = line.split('&&').pop()!.trim().replace(/\s--write\b/, '');
    say(`running ${script}: ${command}`);
    const output = await new Promise<{ ok: boolean; text: string }>((resolve) => {
      const child = spawn('sh', ['-c', command], {
        cwd: root,
        env: { ...process.env, PATH: `${path.join(root, 'node_modules/.bin')}:${process.env.PATH}` },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let text = '';
      child.stdout.on('data', (b: Buffer) => { text += b.toString(); });
      child.stderr.on('data', (b: Buffer) => process.stderr.write(b));
      const timer = setTimeout(() => child.kill('SIGTERM'), 20 * 60_000);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolve({ ok: code === 0, text });
      });
    });
    results.push({ area: m[1]!, command: `npm run ${script}`, ok: output.ok, output: output.text });
  }
  return results;
}

function machine(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  let free = '';
  try {
    free = execSync('free -g', { encoding: 'utf8' }).split('\n')[1]?.trim().replace(/\s+/g, ' ') ?? '';
  } catch { /* not Linux */ }
  return `${os.cpus().length} cores (nproc ${execSync('nproc', { encoding: 'utf8' }).trim()}), ${cpu}; free -g: ${free}; Node ${process.version}`;
}

const started = new Date();
say('starting the platform …');
const session = await startSession({
  noSimulator: true,
  platformEnv: {
    // Probes add a team: LABELS_CHANGED retrains at once (cooldown from the previous request).
    EDDY_TRIGGER_COOLDOWN_MS: '5000',
    EDDY_TRIGGER_MIN_EXAMPLES: '40',
  },
});
let f: Awaited<ReturnType<typeof measureFreshness>> | undefined;
let imported: ImportResult | undefined;
try {
  const runImport = async () => {
    if (IMPORT_EXAMPLES > 0) imported = await measureImport(session);
  };
  if (IMPORT_ONLY) await runImport();
  else f = await measureFreshness(session, runImport);
} finally {
  await session.stop();
}
const components = flag('skip-components') ? [] : await componentBenchmarks();

const gb = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(2)} GB`;
const lines: string[] = [];
lines.push('# Platform benchmark (end to end)');
lines.push('');
const shownArgs = args.filter((a) => a !== '--write');
lines.push(`- command: \`npm run bench${shownArgs.length ? ` -- ${shownArgs.join(' ')}` : ''}\`${f ? ` (clients ${f.clients}, probes ${f.probes}, ${f.rate} requests/s background traffic)` : ''}`);
lines.push(`- date: ${started.toISOString()}`);
lines.push(`- machine: ${machine()}`);
// The load average says whether anything else competed for the 2 cores during the run.
lines.push(`- load average (1/5/15 min) at the end of the run: ${os.loadavg().map((x) => x.toFixed(2)).join(' ')} (2 cores)`);
lines.push('- platform: processors, trainer (TensorFlow.js, wasm/cpu backend), one prediction server, each a child process of the real CLI; real Kafka, registry, Redis, ClickHouse.');
lines.push('');
lines.push('## Headline');
lines.push('');
lines.push('| figure | Eddy, this run | reference platform (published) | target |');
lines.push('|---|---|---|---|');
if (f) {
  const perModel = f.loadedModels > 0 ? f.loadedBytes / f.loadedModels : NaN;
  const artifactAvg = f.artifacts > 0 ? f.artifactBytes / f.artifacts : NaN;
  lines.push(`| freshness p50: labelled event produced -> prediction served by a model trained on it, ${f.clients} active clients | ${secs(f.freshness.p50)} | 15–30 min | ≤ 10 s |`);
  lines.push(`| freshness p90 / p99 (a probe never served counts as never) | ${secs(f.freshness.p90)} / ${secs(f.freshness.p99)} (${f.served}/${f.probes} probes served, slowest served ${secs(f.freshness.maxServed)}${f.unserved ? `; ${f.unserved} not served within ${PROBE_TIMEOUT_MS / 60000} min` : ''}) | 15–30 min | ≤ 60 s |`);
  lines.push(`| of which produced -> ModelPublished seen, p50 / p99 | ${secs(f.toPublish.p50)} / ${secs(f.toPublish.p99)} | | |`);
  lines.push(`| first model after sign-up, ${f.clients} clients signing up at once: p50 / p99 / all | ${secs(f.firstModel.p50)} / ${secs(f.firstModel.p99)} / ${secs(f.firstModel.all)} | | |`);
  lines.push(`| loaded model memory in the server | ${Number.isFinite(perModel) ? `${(perModel / 1024).toFixed(1)} KB/model (${f.loadedModels} loaded) -> 25,000 models ≈ ${gb(perModel * 25_000)}` : 'n/a'} | 25,000 client models in 10 GB (≈ 420 KB/model) | |`);
  lines.push(`| model artifact on disk | ${Number.isFinite(artifactAvg) ? `${(artifactAvg / 1024).toFixed(1)} KB/version (${f.artifacts} files) -> 25,000 models ≈ ${gb(artifactAvg * 25_000)}` : 'n/a'} | | |`);
}
const im = imported;
if (im) {
  lines.push(`| bulk import: ${im.examples.toLocaleString('en')} examples of one new client (${im.labels} labels, produced in ${im.produceS.toFixed(1)} s${f ? `, while the ${f.clients} clients' traffic went on` : ', idle platform'}) -> served by a model trained on ≥ 99% of it, after the last event | ${im.servedAfterMs === null ? `not within ${IMPORT_TIMEOUT_MS / 60000} min` : `${secs(im.servedAfterMs)} (${im.version}: ${(100 * im.coverage).toFixed(1)}% of the import by its watermark, trainingExamples ${im.trainingExamples}, trained in ${secs(im.trainingMs ?? NaN)})`} | | ≤ 30 s |`);
}
if (f?.unserved) {
  lines.push('');
  lines.push('Probes never served, by what the trainer answered to their retrains:');
  for (const [why, n] of f.unservedReasons) lines.push(`- ${n} × ${why}`);
  for (const d of f.unservedDetails) lines.push(`  - ${d}`);
}
if (im) {
  lines.push('');
  lines.push(`Bulk import, every version published for the client (reason, share of the import its retrain's watermark covered, seen after the last event): ${im.versions.map((v) => `${v.version} ${v.reason} ${(100 * v.coverage).toFixed(1)}% at ${secs(v.afterLastEventMs)} (${v.config}, held-out macro-F1 ${v.macroF1?.toFixed(4) ?? '?'}, trained in ${secs(v.trainingMs)})`).join('; ') || 'none'}${im.rejections.length ? `; rejected: ${im.rejections.join('; ')}` : ''}.`);
}
if (f) {
  lines.push('');
  lines.push(`During the run: ${f.requests.http} HTTP and ${f.requests.kafka} Kafka predictions (${f.requests.failed} failed${f.requests.failed ? `: ${Object.entries(f.failures).map(([k, n]) => `${n} × ${k}`).join(', ')}` : ''}), ${f.versions} model versions published, ${f.rejected} candidates rejected by the trainer.`);
  lines.push('');
  lines.push('Freshness is measured per probe: a new team plus 12 labelled tickets in words no other team uses, for one client at a time (every 0.5 s); the clock stops at the first prediction the server answers with the new team for a probe text. Trigger settings: `simulator/session.ts` FAST_PLATFORM_ENV with `EDDY_TRIGGER_COOLDOWN_MS=5000`.');
}
for (const c of components) {
  lines.push('');
  lines.push(`## ${c.area} (\`${c.command}\`)${c.ok ? '' : ' — FAILED in this run'}`);
  lines.push('');
  const tables = c.output.split('\n').filter((l) => l.startsWith('|') || l.startsWith('#') || /^\s*$/.test(l));
  lines.push(tables.join('\n').replace(/\n{3,}/g, '\n\n').trim() || '(no table printed)');
}
const report = lines.join('\n') + '\n';
process.stdout.write(report);
if (flag('write')) {
  const file = path.join(root, 'docs/benchmarks/platform.md');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, report);
  say(`wrote ${path.relative(root, file)}`);
}
process.exit(0);
