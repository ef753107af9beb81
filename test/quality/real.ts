/**
 * The real-text half of `npm run bench:quality`: the corpora of corpora.ts imported into a real
 * Eddy (processors, trainer, server as child processes of the CLI, in a private namespace: topic
 * prefix, Redis prefix, ClickHouse database, model store; all deleted afterwards) through Eddy's
 * own Avro producer, trained by Eddy on its own with its DEFAULT settings, and scored through
 * `POST /v1/clients/:id/predict/batch` on the held-out 20%. The reference (reference_cv.py) fits
 * on the same 80% and scores the same 20% in the same run.
 */
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { ModelPublished, RetrainRequested } from '../../schemas/events.ts';
import type { AnyEvent } from '../../streams/index.ts';
import { startSession } from '../../simulator/session.ts';
import type { CorpusClient } from './corpora.ts';

const say = (line: string) => process.stderr.write(`[bench:quality] ${line}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface RealResult {
  client: CorpusClient;
  /** The version scored (null: no model was ever served). */
  version: string | null;
  /** Share of the imported examples the scored version's training data was cut after (its retrain's watermark). */
  coverage: number;
  trainingExamples: number | null;
  trainingMs: number | null;
  /** Model kind and configuration as ModelPublished carries them ('—' when it does not). */
  kind: string;
  /** Seconds from the import's last event to the first served version trained on all of it. */
  servedAfterS: number | null;
  /** Predicted label per held-out example, in `client.test` order. */
  predictions: string[];
  /** Versions that answered the held-out predictions (should be one: `version`). */
  answeredBy: string[];
}

/** What a ModelPublished says about the model's kind and configuration, whichever fields this build has. */
export function describeModel(m: ModelPublished): string {
  const v = m as unknown as Record<string, unknown>;
  const show = (x: unknown) => (x === null || x === undefined || x === '' ? undefined : typeof x === 'string' ? x : JSON.stringify(x));
  const kind = show(v.modelKind ?? v.kind);
  const config = show(v.modelConfig ?? v.configuration ?? v.config);
  const cv = typeof v.cvMacroF1 === 'number' ? `cv ${v.cvMacroF1.toFixed(3)}` : undefined;
  const parts = [kind, config, cv].filter(Boolean);
  return parts.length ? parts.join(' ').replace(/\|/g, '/') : '—';
}

export async function runRealText(clients: CorpusClient[], opts: { waitMs: number }): Promise<RealResult[]> {
  say(`starting Eddy (default settings) for ${clients.length} clients …`);
  // Default settings, except the quick first model (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES): this
  // benchmark scores the model the search chooses, which would otherwise come as the second version
  // of the larger clients; how fast an import is served is `npm run bench`'s import line.
  const session = await startSession({ noSimulator: true, fast: false, platformEnv: { EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES: '0' } });
  const requests = new Map<string, RetrainRequested>();
  const published: ModelPublished[] = [];
  const rejected: string[] = [];
  const watcher = session.streams.consumer({
    group: `${session.id}.quality-watch`, topics: ['models', 'retrain-requests'], fromBeginning: true,
    handler: {
      async handle(records) {
        for (const r of records) {
          if (r.event.name === 'RetrainRequested') requests.set(r.event.value.eventId, r.event.value);
          else if (r.event.name === 'ModelPublished') published.push(r.event.value);
          else if (r.event.name === 'ModelRejected') rejected.push(`${r.event.value.clientId}: ${r.event.value.stage} ${r.event.value.reasons.join(',')}`);
        }
      },
    },
  });
  const assigned = watcher.waitForAssignment(60_000);
  await watcher.start();
  await assigned;
  try {
    // Every example's position in its client's import, to read how much of it a model's watermark covers.
    const position = new Map<string, number>();
    const lastEventAt = new Map<string, number>();
    const started = Date.now();
    for (const c of clients) {
      const now = Date.now();
      // A client announces its labels (teams) first; the label name is all Eddy learns from them
      // (no description or keywords: the reference does not get them either).
      await session.streams.producer.sendAll(c.labels.map((label): AnyEvent => ({
        name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: c.clientId, occurredAt: now, change: 'ADDED', label, previousLabel: null, description: '', keywords: [] },
      })));
      for (let i = 0; i < c.train.length; i += 1000) {
        const chunk = c.train.slice(i, i + 1000).map((e, j): AnyEvent => {
          const eventId = randomUUID();
          position.set(eventId, i + j + 1);
          return { name: 'LabeledExample', value: { eventId, clientId: c.clientId, occurredAt: Date.now(), exampleId: e.exampleId, text: e.text, label: e.label, source: 'IMPORT', metadata: {}, predictionId: null } };
        });
        await session.streams.producer.sendAll(chunk);
      }
      lastEventAt.set(c.clientId, Date.now());
    }
    const total = clients.reduce((a, c) => a + c.train.length, 0);
    say(`imported ${total} examples of ${clients.length} clients in ${((Date.now() - started) / 1000).toFixed(1)} s; waiting for models trained on all of it …`);

    const coverageOf = (m: ModelPublished, c: CorpusClient) => {
      const req = m.retrainEventId ? requests.get(m.retrainEventId) : undefined;
      const seen = req?.dataAsOf?.examplesEventId ? position.get(req.dataAsOf.examplesEventId) ?? 0 : 0;
      return seen / c.train.length;
    };
    const full = new Map<string, { m: ModelPublished; at: number }>();
    const deadline = Date.now() + opts.waitMs;
    let lastReport = 0;
    while (full.size < clients.length && Date.now() < deadline) {
      for (const c of clients) {
        if (full.has(c.clientId)) continue;
        const m = published.filter((p) => p.clientId === c.clientId).find((p) => coverageOf(p, c) >= 1);
        if (m) {
          full.set(c.clientId, { m, at: Date.now() });
          say(`${c.clientId}: ${m.modelVersion} trained on all ${c.train.length} imported examples (trainingExamples ${m.trainingExamples}, ${m.trainingMs} ms), ${((Date.now() - lastEventAt.get(c.clientId)!) / 1000).toFixed(1)} s after its last event`);
        }
      }
      if (Date.now() - lastReport > 15_000) {
        lastReport = Date.now();
        say(`${full.size}/${clients.length} clients served on all their data; ${published.length} versions published, ${rejected.length} rejected so far`);
      }
      await sleep(250);
    }
    for (const r of rejected) say(`rejected: ${r}`);

    const results: RealResult[] = [];
    for (const c of clients) {
      const got = full.get(c.clientId);
      // Without a full-data model in time, score whatever the server serves now, and say how much it saw.
      const fallback = published.filter((p) => p.clientId === c.clientId).at(-1);
      const m = got?.m ?? fallback;
      if (m) {
        const mine = published.filter((p) => p.clientId === c.clientId).map((p) => p.modelVersion);
        await waitServed(session.serverUrls[0]!, session.apiKey, c, m.modelVersion, (v) => mine.indexOf(v) > mine.indexOf(m.modelVersion));
      }
      const { labels, versions } = await predictAll(session.serverUrls[0]!, session.apiKey, c);
      results.push({
        client: c, version: m?.modelVersion ?? null, coverage: m ? coverageOf(m, c) : 0,
        trainingExamples: m?.trainingExamples ?? null, trainingMs: m?.trainingMs ?? null, kind: m ? describeModel(m) : '—',
        servedAfterS: got ? (got.at - lastEventAt.get(c.clientId)!) / 1000 : null, predictions: labels, answeredBy: versions,
      });
      say(`${c.clientId}: scored ${c.test.length} held-out texts through /predict/batch (answered by ${versions.join(', ')})`);
    }
    return results;
  } finally {
    await watcher.stop().catch(() => undefined);
    await session.stop();
  }
}

/**
 * Waits until the server answers the client with `version` or a later one (asked with a predict:
 * servers load a client's model lazily, on its first request, so GET /model says "not loaded" until then).
 */
async function waitServed(url: string, key: string, c: CorpusClient, version: string, later: (v: string) => boolean): Promise<void> {
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/v1/clients/${c.clientId}/predict`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify({ text: c.test[0]!.text }),
    }).catch(() => undefined);
    const body = res?.ok ? ((await res.json()) as { modelVersion: string | null }) : undefined;
    if (body?.modelVersion && (body.modelVersion === version || later(body.modelVersion))) return;
    await sleep(200);
  }
  say(`${c.clientId}: ${version} not served after 60 s; scoring what is served`);
}

async function predictAll(url: string, key: string, c: CorpusClient): Promise<{ labels: string[]; versions: string[] }> {
  const labels: string[] = [];
  const versions = new Set<string>();
  // The server's default EDDY_SERVER_MAX_BATCH is 100.
  for (let i = 0; i < c.test.length; i += 100) {
    const items = c.test.slice(i, i + 100).map((e) => ({ text: e.text }));
    const res = await fetch(`${url}/v1/clients/${c.clientId}/predict/batch`, {
      method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify({ items }),
    });
    if (!res.ok) throw new Error(`${c.clientId}: predict/batch answered ${res.status}: ${await res.text()}`);
    const body = (await res.json()) as { predictions: Array<{ label: string; modelVersion: string | null; variant: string }> };
    for (const p of body.predictions) {
      labels.push(p.label);
      versions.add(`${p.modelVersion ?? 'baseline'} (${p.variant})`);
    }
  }
  return { labels, versions: [...versions] };
}

/** Writes the split and Eddy's predictions where reference_cv.py reads them. */
export function writeForReference(dir: string, results: RealResult[]): void {
  for (const r of results) {
    const lines = (rows: Array<{ text: string; label: string }>) => rows.map((x) => JSON.stringify({ text: x.text, label: x.label })).join('\n') + '\n';
    fs.writeFileSync(path.join(dir, `${r.client.clientId}.train.jsonl`), lines(r.client.train));
    fs.writeFileSync(path.join(dir, `${r.client.clientId}.test.jsonl`), lines(r.client.test));
    fs.writeFileSync(path.join(dir, `${r.client.clientId}.eddy.jsonl`), r.predictions.map((label) => JSON.stringify({ label })).join('\n') + '\n');
  }
}
