import type { SparseVector } from '../../../featurizer/text.ts';
import { corrupt, type ArtifactSection, type ModelInfo, type ModelManifest } from '../../artifact.ts';
import type { ModelKind, Scorer } from '../kind.ts';
import { rowLookup, weighVector, type Quantization } from '../sparse-linear/index.ts';

/**
 * "embedding-bag": a small neural classifier over the featurizer's hashed sparse features (the
 * input sparse-linear gets): every feature id the client's training data touched has an embedding
 * row; an input is the weighted sum of its features' rows (the bag), then one ReLU hidden layer,
 * then the output layer:
 *   e = sum_i value_i * E[row(id_i)]          (D)
 *   h = relu(e W1 + b1)                       (H)
 *   logits = h W2 + b2                        (K labels)
 * The values are weighted as sparse-linear weighs them (weighVector: TF-IDF with the idf learnt
 * from the client's data and the text part L2-normalised, when the artifact has an `idf` section),
 * so the bag is an idf-weighted mean of the rows. Unknown feature ids are dropped.
 *
 * Only the rows of feature ids the training data touched are stored (`featureIds`, ascending,
 * binary search), so a model's size follows its client's vocabulary. Embeddings are int8 with one
 * float32 scale per row (row-wise absmax), or float32; the dense layers are float32 (small).
 *
 * Sections, in this order: featureIds (uint32, V), embeddings (int8 | float32, row-major V x D),
 * rowScales (float32 V, int8 only), idf (float32 V, optional), hiddenWeights (float32, D x H),
 * hiddenBias (float32 H), outputWeights (float32, H x K), outputBias (float32 K).
 */
export interface EmbeddingBagInfo extends ModelInfo {
  kind: 'embedding-bag';
  dimensions: { features: number; embedding: number; hidden: number; labels: number };
  quantization: Quantization;
  /** True when the artifact has an `idf` section (TF-IDF weighting of the bag). */
  tfidf?: boolean;
}

export interface EmbeddingBagWeights {
  featureIds: Uint32Array;
  /** Row-major [features x embedding]. */
  embeddings: Int8Array | Float32Array;
  /** One scale per row, for int8-row. */
  rowScales: Float32Array | null;
  /** Per-row idf (0 = unweighted metadata/real-time feature), or null without TF-IDF weighting. */
  idf: Float32Array | null;
  /** Row-major [embedding x hidden]. */
  hiddenWeights: Float32Array;
  hiddenBias: Float32Array;
  /** Row-major [hidden x labels]. */
  outputWeights: Float32Array;
  outputBias: Float32Array;
}

function isDim(n: unknown, min: number): n is number {
  return Number.isInteger(n) && (n as number) >= min;
}

function info(manifest: ModelManifest): EmbeddingBagInfo {
  const m = manifest.model as Partial<EmbeddingBagInfo>;
  const d = m.dimensions;
  if (!d || !isDim(d.features, 0) || !isDim(d.embedding, 1) || !isDim(d.hidden, 1) || !isDim(d.labels, 1)) throw corrupt('embedding-bag dimensions missing or invalid');
  if (m.quantization !== 'int8-row' && m.quantization !== 'float32') throw corrupt(`unknown quantization ${String(m.quantization)}`);
  return m as EmbeddingBagInfo;
}

function f32(a: unknown, length: number, what: string): Float32Array {
  if (!(a instanceof Float32Array) || a.length !== length) throw corrupt(`${what} missing or wrong length`);
  return a;
}

export const embeddingBag: ModelKind<EmbeddingBagWeights> = {
  name: 'embedding-bag',

  read(manifest, sections) {
    const { dimensions: { features: V, embedding: D, hidden: H, labels: K }, tfidf } = info(manifest);
    const { featureIds, embeddings, rowScales, idf } = sections;
    if (manifest.labels.length !== K) throw corrupt('labels do not match the output dimension');
    if ((tfidf === true) !== (idf !== undefined)) throw corrupt(tfidf ? 'idf section missing' : 'idf section without model.tfidf');
    if (!(featureIds instanceof Uint32Array) || featureIds.length !== V) throw corrupt('featureIds missing or wrong length');
    for (let i = 1; i < V; i++) if (featureIds[i]! <= featureIds[i - 1]!) throw corrupt('featureIds not ascending');
    if (!(embeddings instanceof Int8Array || embeddings instanceof Float32Array) || embeddings.length !== V * D) throw corrupt('embeddings missing or wrong length');
    if ((embeddings instanceof Int8Array) !== (manifest.model.quantization === 'int8-row')) throw corrupt('embeddings dtype does not match the quantization');
    if (embeddings instanceof Int8Array) f32(rowScales, V, 'rowScales');
    else if (rowScales !== undefined) throw corrupt('rowScales on float32 embeddings');
    return {
      featureIds, embeddings,
      rowScales: embeddings instanceof Int8Array ? (rowScales as Float32Array) : null,
      idf: idf === undefined ? null : f32(idf, V, 'idf'),
      hiddenWeights: f32(sections.hiddenWeights, D * H, 'hiddenWeights'),
      hiddenBias: f32(sections.hiddenBias, H, 'hiddenBias'),
      outputWeights: f32(sections.outputWeights, H * K, 'outputWeights'),
      outputBias: f32(sections.outputBias, K, 'outputBias'),
    };
  },

  write(w): ArtifactSection[] {
    return [
      { name: 'featureIds', data: w.featureIds },
      { name: 'embeddings', data: w.embeddings },
      ...(w.rowScales ? [{ name: 'rowScales', data: w.rowScales }] : []),
      ...(w.idf ? [{ name: 'idf', data: w.idf }] : []),
      { name: 'hiddenWeights', data: w.hiddenWeights },
      { name: 'hiddenBias', data: w.hiddenBias },
      { name: 'outputWeights', data: w.outputWeights },
      { name: 'outputBias', data: w.outputBias },
    ];
  },

  scorer(manifest, w): Scorer {
    const { dimensions: { embedding: D, hidden: H, labels: K } } = info(manifest);
    const { featureIds, embeddings: E, rowScales, idf, hiddenWeights: W1, hiddenBias: b1, outputWeights: W2, outputBias: b2 } = w;
    const rowOf = rowLookup(featureIds);
    // Scratch buffers reused across calls (a scorer runs on one thread), grown on demand.
    let rows = new Int32Array(64);
    let vals = new Float64Array(64);
    const e = new Float64Array(D);
    const h = new Float64Array(H);
    return {
      memoryBytes: featureIds.byteLength + E.byteLength + (rowScales?.byteLength ?? 0) + (idf?.byteLength ?? 0)
        + W1.byteLength + b1.byteLength + W2.byteLength + b2.byteLength,
      logits(vector: SparseVector, into?: Float64Array): Float64Array {
        if (rows.length < vector.ids.length) {
          rows = new Int32Array(vector.ids.length);
          vals = new Float64Array(vector.ids.length);
        }
        const k = weighVector(vector, rowOf, idf, rows, vals);
        e.fill(0);
        for (let j = 0; j < k; j++) {
          const r = rows[j]!;
          const v = vals[j]! * (rowScales ? rowScales[r]! : 1);
          const base = r * D;
          for (let d = 0; d < D; d++) e[d]! += v * E[base + d]!;
        }
        for (let u = 0; u < H; u++) h[u] = b1[u]!;
        for (let d = 0; d < D; d++) {
          const x = e[d]!;
          if (x === 0) continue;
          const base = d * H;
          for (let u = 0; u < H; u++) h[u]! += x * W1[base + u]!;
        }
        const out = into ?? new Float64Array(b2.length);
        out.set(b2);
        for (let u = 0; u < H; u++) {
          const x = h[u]!;
          if (x <= 0) continue; // ReLU
          const base = u * K;
          for (let c = 0; c < K; c++) out[c]! += x * W2[base + c]!;
        }
        return out;
      },
    };
  },

  estimateBytes(manifest) {
    const { dimensions: { features: V, embedding: D, hidden: H, labels: K }, quantization, tfidf } = info(manifest);
    const int8 = quantization === 'int8-row';
    return V * 4 + V * D * (int8 ? 1 : 4) + (int8 ? V * 4 : 0) + (tfidf ? V * 4 : 0) + (D * H + H + H * K + K) * 4;
  },
};
