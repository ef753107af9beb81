import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_FEATURIZER_CONFIG, normalizeText, TextFeaturizer, tokenize, type SparseVector } from '../featurizer/text.ts';
import { featureId, normalizeWithMap, textFeatureOccurrences } from '../featurizer/spans.ts';
import { explainPrediction } from '../models/explain.ts';
import { loadPredictor, type Predictor } from '../models/predictor.ts';
import { FsModelStore } from '../models/store.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { ADMIN_KEY, CLIENT_KEYS, HELPDESK_LABELS, publishFixtureModel, serverTestConfig, serverTestStreams, writeFixtureModel } from './server-fixtures.ts';

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

/** Texts that exercise the normaliser: case, diacritics, full-width forms, ligatures, final sigma, scripts, apostrophes, emoji. */
const TEXTS = [
  'My VPN keeps dropping since Monday',
  'Réseau en panne — le Wi-Fi ne marche plus',
  'ＶＰＮ　ｄｏｗｎ on the ﬁrst floor',
  'ΟΔΟΣ ΣΟΦΟΚΛΕΟΥΣ: το δίκτυο δεν δουλεύει',
  "can't log in, it's broken   again\n\tsalary 2024",
  'パスワードを忘れました 🔑 please help',
  'e\u0301cran noir apre\u0300s mise a\u0300 jour',
  'x'.repeat(30) + ' tail',
  '',
];

describe('feature spans (featurizer/spans.ts)', () => {
  const configs = [DEFAULT_FEATURIZER_CONFIG, { ...DEFAULT_FEATURIZER_CONFIG, wordNgrams: [1, 2, 3], charNgrams: [3, 4] }, { ...DEFAULT_FEATURIZER_CONFIG, maxChars: 12, charNgrams: [2] }];

  it('yields exactly the names and ids featurize() yields, with spans, for every config and text', () => {
    for (const config of configs) {
      const f = new TextFeaturizer(config);
      for (const text of TEXTS) {
        const occurrences = textFeatureOccurrences(f, text);
        expect(occurrences.map((o) => o.name), text).toEqual(f.textFeatureNames(text));
        // The ids of the text part of featurize(): without metadata and real-time features, all of them.
        expect([...new Set(occurrences.map((o) => o.id))].sort((a, b) => a - b), text).toEqual([...f.featurize(text).ids]);
        for (const o of occurrences) {
          expect(o.span, `${o.name} in ${JSON.stringify(text)}`).not.toBeNull();
          expect(o.id).toBe(featureId(config, o.name));
          // The span holds what the feature was built from: its words, or its characters (markers aside).
          const typed = normalizeText(text.slice(o.span![0], o.span![1]));
          const core = o.name.slice(o.name.indexOf(':') + 1);
          if (o.kind === 'word') expect(tokenize(typed).join(' '), `${o.name} in ${JSON.stringify(text)}`).toContain(core);
          else expect(typed, `${o.name} in ${JSON.stringify(text)}`).toContain(core.replace(/^<|>$/g, ''));
        }
      }
    }
  });

  it('maps each word back to the text as typed', () => {
    const f = new TextFeaturizer(DEFAULT_FEATURIZER_CONFIG);
    const typed = (text: string, name: string) => textFeatureOccurrences(f, text).filter((o) => o.name === name).map((o) => text.slice(o.span![0], o.span![1]));
    expect(typed('My VPN keeps dropping', 'w:vpn')).toEqual(['VPN']);
    expect(typed('My VPN keeps dropping', 'w2:vpn keeps')).toEqual(['VPN keeps']);
    expect(typed('Réseau en panne', 'w:reseau')).toEqual(['Réseau']);
    expect(typed('ＶＰＮ　ｄｏｗｎ', 'w:vpn')).toEqual(['ＶＰＮ']);
    expect(typed('e\u0301cran noir', 'w:ecran')).toEqual(['e\u0301cran']);
    // Lower-casing looks at context (a final sigma): the chunk maps as a whole.
    expect(typed('ΟΔΟΣ ok', `w:${normalizeText('ΟΔΟΣ')}`)).toEqual(['ΟΔΟΣ']);
    expect(typed('vpn VPN Vpn', 'w:vpn')).toEqual(['vpn', 'VPN', 'Vpn']);
    // Character n-grams: the characters inside the word boundary markers.
    const chars = new TextFeaturizer({ ...DEFAULT_FEATURIZER_CONFIG, charNgrams: [3] });
    const grams = textFeatureOccurrences(chars, 'My VPN').filter((o) => o.kind === 'char').map((o) => [o.name, 'My VPN'.slice(o.span![0], o.span![1])]);
    expect(grams).toEqual([['c3:<my', 'My'], ['c3:my>', 'My'], ['c3:<vp', 'VP'], ['c3:vpn', 'VPN'], ['c3:pn>', 'PN']]);
  });

  it('reproduces normalizeText exactly or claims no map', () => {
    for (const text of TEXTS) {
      const m = normalizeWithMap(text, 4000);
      expect(m?.normalized, text).toBe(normalizeText(text, 4000));
      expect(m!.from.length).toBe(m!.normalized.length);
    }
  });
});

/** A linear predictor with the fixture's weights (each keyword +8 on its label) and a small negative weight. */
async function fixturePredictor(): Promise<Predictor> {
  const dir = await import('node:fs/promises').then((fs) => fs.mkdtemp('/tmp/eddy-explain-'));
  const store = new FsModelStore(dir);
  const put = await writeFixtureModel(store, { clientId: 'unit', version: 'v1', labels: HELPDESK_LABELS, extraFeatures: 50 });
  return loadPredictor(await store.get(put.uri, put.sha256));
}

describe('explanations (models/explain.ts)', () => {
  it('names the planted term first, exactly, for a linear model: contributions add up to the logit', async () => {
    const predictor = await fixturePredictor();
    const text = 'Since Monday my VPN keeps dropping';
    const p = predictor.predict(text, {}, {}, 3);
    expect(p.label).toBe('Network');
    const e = explainPrediction(predictor, { text, metadata: {}, realtime: {} }, p.scores.map((s) => s.label), 100);
    expect(e).toMatchObject({ method: 'occlusion', exact: true });
    const network = e.labels.find((l) => l.label === 'Network')!;
    expect(network.terms[0]).toMatchObject({ term: 'VPN', kind: 'word', features: ['w:vpn'], spans: [[16, 19]] });
    // Exact: the prior plus every contribution is the logit (the fixture's weights are all >= 0, so all are listed).
    const sum = network.prior + network.terms.reduce((s, t) => s + t.contribution, 0);
    expect(sum).toBeCloseTo(network.logit, 9);
    // And the logit is the predictor's own: softmax over the explained logits gives the answered score.
    const z = e.labels.map((l) => l.logit);
    const top = Math.exp(network.logit - Math.max(...z)) / z.reduce((s, x) => s + Math.exp(x - Math.max(...z)), 0);
    expect(top).toBeCloseTo(p.scores[0]!.score, 9);
    // Labels the text says nothing for have no terms, not invented ones.
    expect(e.labels.find((l) => l.label === 'Payroll')!.terms).toEqual([]);
  });

  it('is an approximation for a non-linear scorer, and says so; the planted term still leads', () => {
    const f = new TextFeaturizer(DEFAULT_FEATURIZER_CONFIG);
    const vpn = featureId(DEFAULT_FEATURIZER_CONFIG, 'w:vpn');
    const down = featureId(DEFAULT_FEATURIZER_CONFIG, 'w:down');
    // A one-hidden-unit network: Network's logit is relu(3·vpn + 2·down - 0.05)², an interaction of both words.
    const logits = (v: SparseVector) => {
      let h = -0.05;
      for (let i = 0; i < v.ids.length; i++) {
        if (v.ids[i] === vpn) h += 3 * v.values[i]!;
        if (v.ids[i] === down) h += 2 * v.values[i]!;
      }
      const a = Math.max(0, h);
      return Float64Array.from([a * a, 0.1, 0]);
    };
    const neural: Predictor = {
      manifest: { labels: ['Network', 'Hardware', 'Payroll'], featurizer: f.identity } as unknown as Predictor['manifest'],
      memoryBytes: 0,
      logits,
      predict: () => { throw new Error('not used'); },
    };
    const e = explainPrediction(neural, { text: 'vpn is down', metadata: {}, realtime: {} }, ['Network'], 5);
    expect(e.exact).toBe(false);
    expect(e.labels[0]!.terms.map((t) => t.term).slice(0, 2)).toEqual(['vpn', 'down']);
  });

  it('explains metadata and real-time features as terms of their own', async () => {
    const predictor = await fixturePredictor();
    const e = explainPrediction(predictor, { text: 'hello', metadata: { channel: 'Email', ignored: 'x' }, realtime: { 'requester.share:Network': 0.5 } }, ['Network'], 100);
    expect(e.exact).toBe(true);
    // The fixture has no weights for them: they exist as features but push nothing, so they are not listed.
    expect(e.labels[0]!.terms).toEqual([]);
  });
});

describe('explanations over HTTP', () => {
  let config: Awaited<ReturnType<typeof serverTestConfig>>;
  let streams: Awaited<ReturnType<typeof serverTestStreams>>;
  let server: PredictionServer;

  beforeAll(async () => {
    config = await serverTestConfig();
    streams = await serverTestStreams(config);
    await publishFixtureModel(new FsModelStore(config.modelStoreDir), streams.producer, { clientId: 'acme', version: 'v1', labels: HELPDESK_LABELS });
    await streams.producer.send('LabelSetChanged', {
      eventId: randomUUID(), clientId: 'globex', occurredAt: Date.now(), change: 'ADDED', label: 'Facilities',
      previousLabel: null, description: 'Office building, desks and heating', keywords: ['heating'],
    });
    server = await startServer(config, { kafkaPredict: false });
    await server.ready;
  }, 120_000);

  afterAll(async () => {
    await server?.close();
    await streams?.cleanup();
    await config?.cleanupStore();
  });

  const post = async (path: string, key: string, body: unknown) => {
    const res = await fetch(server.url + path, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as Json };
  };

  it('answers the terms that decided a planted case, per returned label, only when asked', async () => {
    const text = 'Since Monday my VPN keeps dropping';
    const plain = await post('/v1/clients/acme/predict', CLIENT_KEYS.acme!, { text });
    expect(plain.status).toBe(200);
    expect(plain.body.explanation).toBeUndefined();
    const r = await post('/v1/clients/acme/predict', CLIENT_KEYS.acme!, { text, explain: true, topK: 2 });
    expect(r.status).toBe(200);
    expect(r.body.label).toBe('Network');
    expect(r.body.explanation).toMatchObject({ method: 'occlusion', exact: true });
    expect(r.body.explanation.labels.map((l: Json) => l.label)).toEqual(r.body.scores.map((s: Json) => s.label));
    const top = r.body.explanation.labels[0].terms[0];
    expect(top).toMatchObject({ term: 'VPN', features: ['w:vpn'], spans: [[16, 19]] });
    expect(top.contribution).toBeGreaterThan(1);
  });

  it('explains every item of a batch, and the baseline by its keywords', async () => {
    const batch = await post('/v1/clients/acme/predict/batch', ADMIN_KEY, { items: [{ text: 'salary missing' }, { text: 'screen flickers' }], explain: true, topK: 1 });
    expect(batch.status).toBe(200);
    expect(batch.body.predictions.map((p: Json) => p.explanation.labels[0].terms[0].term)).toEqual(['salary', 'screen']);
    const base = await post('/v1/clients/globex/predict', CLIENT_KEYS.globex!, { text: 'The Heating is broken', explain: true });
    expect(base.body).toMatchObject({ variant: 'BASELINE', label: 'Facilities' });
    expect(base.body.explanation).toMatchObject({ method: 'keyword-overlap', exact: true });
    expect(base.body.explanation.labels[0].terms[0]).toMatchObject({ term: 'Heating', contribution: 2, spans: [[4, 11]] });
  });

  it('refuses a non-boolean explain like any other bad field', async () => {
    const r = await post('/v1/clients/acme/predict', CLIENT_KEYS.acme!, { text: 'vpn', explain: 'yes' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('INVALID_REQUEST');
  });
});
