import fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeArtifact } from '../models/artifact.ts';
import { modelKind } from '../models/kinds/index.ts';
import { FsModelStore } from '../models/store.ts';
import { startServer, type PredictionServer } from '../server/main.ts';
import { ADMIN_KEY, modelPublished, serverTestConfig, serverTestStreams } from './server-fixtures.ts';
import { waitFor } from './helpers.ts';

/**
 * The served path scores frozen models exactly as they were scored when they were written: the
 * artifacts in test/fixtures/models/ with the logits recorded then (expected-logits.json), through
 * HTTP (Fastify, the prediction service, Redis features, the featurizer, the model, the response
 * serialiser). The probabilities in the answers must equal, bit for bit, the softmax of the
 * recorded logits: any change of the featurizer's ids or values, of the scorer, or a lossy
 * serialisation shows here.
 */
const fixtures = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures', 'models');

interface Expected {
  texts: string[];
  metadata: Record<string, string>;
  'int8-row': number[][];
  float32: number[][];
}

/** The predictor's softmax and order (models/predictor.ts), over recorded logits. */
function referenceScores(logits: number[], labels: string[]): Array<{ label: string; score: number }> {
  const z = [...logits];
  let max = -Infinity;
  for (const x of z) max = Math.max(max, x);
  let sum = 0;
  for (let c = 0; c < z.length; c++) {
    z[c] = Math.exp(z[c]! - max);
    sum += z[c]!;
  }
  const order = z.map((_, c) => c).sort((a, b) => z[b]! - z[a]! || a - b);
  return order.map((c) => ({ label: labels[c]!, score: z[c]! / sum }));
}

describe('served scores of frozen models', () => {
  let config: Awaited<ReturnType<typeof serverTestConfig>>;
  let streams: Awaited<ReturnType<typeof serverTestStreams>>;
  let server: PredictionServer;
  let expected: Expected;
  const models: Array<{ clientId: string; quantization: 'int8-row' | 'float32'; labels: string[] }> = [];

  beforeAll(async () => {
    config = await serverTestConfig();
    streams = await serverTestStreams(config);
    expected = JSON.parse(await fs.readFile(path.join(fixtures, 'expected-logits.json'), 'utf8')) as Expected;
    const store = new FsModelStore(config.modelStoreDir);
    for (const quantization of ['int8-row', 'float32'] as const) {
      const artifact = decodeArtifact(await fs.readFile(path.join(fixtures, `sparse-linear-${quantization}.eddymodel`)));
      const { weights: _sections, ...manifest } = artifact.manifest;
      const clientId = `frozen-${quantization}`;
      const kind = modelKind('sparse-linear')!;
      const put = await store.put({ ...manifest, clientId, modelVersion: 'v1' }, kind.write(kind.read(artifact.manifest, artifact.sections)));
      await streams.producer.send('ModelPublished', modelPublished({ clientId, version: 'v1', ...put, labels: manifest.labels }));
      models.push({ clientId, quantization, labels: manifest.labels });
    }
    server = await startServer(config, { listen: false, kafkaPredict: false });
    await server.ready;
    await waitFor('both models in the registry', () => models.every((m) => server.registry.get(m.clientId)?.live === 'v1'));
  }, 60_000);

  afterAll(async () => {
    await server?.close();
    await streams?.cleanup();
    await config?.cleanupStore();
  });

  it('answers every label with the probabilities of the recorded logits, bit for bit (single and batch predict)', async () => {
    for (const m of models) {
      const want = expected[m.quantization].map((logits) => referenceScores(logits, m.labels));
      const single = [];
      for (const text of expected.texts) {
        const r = await server.app.inject({
          method: 'POST', url: `/v1/clients/${m.clientId}/predict`, headers: { authorization: `Bearer ${ADMIN_KEY}` },
          payload: { text, metadata: expected.metadata, topK: m.labels.length },
        });
        expect(r.statusCode, r.body).toBe(200);
        const body = r.json() as { label: string; scores: Array<{ label: string; score: number }>; variant: string };
        expect(body.variant).toBe('LIVE');
        single.push(body.scores);
      }
      // toEqual compares numbers with Object.is: exact, not close.
      expect(single, m.quantization).toEqual(want);
      const batch = await server.app.inject({
        method: 'POST', url: `/v1/clients/${m.clientId}/predict/batch`, headers: { authorization: `Bearer ${ADMIN_KEY}` },
        payload: { items: expected.texts.map((text) => ({ text, metadata: expected.metadata })), topK: m.labels.length },
      });
      expect(batch.statusCode, batch.body).toBe(200);
      expect((batch.json() as { predictions: Array<{ scores: unknown }> }).predictions.map((p) => p.scores)).toEqual(want);
    }
  });
});
