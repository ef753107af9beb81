import { createHash } from 'node:crypto';
import { EddyError } from '../common/errors.ts';
import type { FeaturizerConfig } from '../featurizer/text.ts';

/**
 * The model artifact: one self-describing binary file (manifest + weights), the unit the model
 * store keeps, the trainer writes and the server loads.
 *
 * Layout (little-endian):
 *   bytes 0..7    magic "EDDYMDL\0"
 *   bytes 8..11   u32 manifest length M
 *   bytes 12..    manifest JSON (UTF-8), zero-padded to a multiple of 8
 *   then          the weight sections, each at `offset` bytes from the start of the section area,
 *                 8-byte aligned, described by `manifest.weights.sections`.
 *
 * The model is a sparse linear softmax classifier over hashed features ("sparse-linear"):
 * logits[c] = bias[c] + sum_i value_i * W[row(id_i)][c]. Only the rows of feature ids the
 * client's training data touched are stored (`featureIds`, ascending: the predictor finds a row by
 * binary search), so a model's size follows its client's vocabulary, not the hash space.
 * Weights are int8 with one float32 scale per row (row-wise absmax quantisation), or float32.
 */
export const ARTIFACT_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('EDDYMDL\0', 'latin1');

export type Quantization = 'int8-row' | 'float32';

export interface ModelManifest {
  formatVersion: number;
  clientId: string;
  /** `v<N>`, increasing per client. */
  modelVersion: string;
  /** ISO-8601. */
  createdAt: string;
  /** Output classes, in the order of the weight columns. */
  labels: string[];
  featurizer: { name: string; version: string; config: FeaturizerConfig; id: string };
  model: {
    kind: 'sparse-linear';
    /** Stored feature rows x labels. */
    dimensions: { features: number; labels: number };
    quantization: Quantization;
  };
  /** Evaluation on the held-out test set: accuracy, macroF1, and per label `f1:<label>` etc. */
  metrics: Record<string, number>;
  trainingDataSha256: string;
  trainingExamples: number;
  /** TensorFlow.js backend that trained it. */
  backend: string;
  parentVersion: string | null;
  /** Share of each label in the training examples: the baseline the next training's drift check compares to. */
  labelDistribution?: Record<string, number>;
  /** The RetrainRequested that produced it (a redelivered request re-announces this version instead of training again). */
  retrainEventId?: string | null;
  /** Wall time of training (featurize + fit + evaluate), ms. */
  trainingMs?: number;
  weights: { sections: Array<{ name: WeightSectionName; dtype: 'uint32' | 'int8' | 'float32'; offset: number; length: number }> };
}

export type WeightSectionName = 'featureIds' | 'weights' | 'rowScales' | 'bias';

/** Decoded weights. `weights` is row-major [features x labels]; `rowScales` only for int8-row. */
export interface ModelWeights {
  featureIds: Uint32Array;
  weights: Int8Array | Float32Array;
  rowScales: Float32Array | null;
  bias: Float32Array;
}

export interface ModelArtifact {
  manifest: ModelManifest;
  weights: ModelWeights;
}

/** Float32 weights -> stored form. int8-row keeps each row's largest magnitude exact and rounds the rest to 1/127 of it. */
export function quantizeWeights(
  dense: Float32Array, features: number, labels: number, quantization: Quantization,
): { weights: Int8Array | Float32Array; rowScales: Float32Array | null } {
  if (quantization === 'float32') return { weights: Float32Array.from(dense), rowScales: null };
  const q = new Int8Array(features * labels);
  const scales = new Float32Array(features);
  for (let r = 0; r < features; r++) {
    let max = 0;
    const base = r * labels;
    for (let c = 0; c < labels; c++) max = Math.max(max, Math.abs(dense[base + c]!));
    const scale = max / 127;
    scales[r] = scale;
    if (scale === 0) continue;
    for (let c = 0; c < labels; c++) q[base + c] = Math.round(dense[base + c]! / scale);
  }
  return { weights: q, rowScales: scales };
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

function bytesOf(a: Uint32Array | Int8Array | Float32Array): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Serialises an artifact (the manifest's `weights.sections` is filled in here). */
export function encodeArtifact(manifest: Omit<ModelManifest, 'weights'>, weights: ModelWeights): Buffer {
  const parts: Array<{ name: WeightSectionName; data: Uint32Array | Int8Array | Float32Array; dtype: 'uint32' | 'int8' | 'float32' }> = [
    { name: 'featureIds', data: weights.featureIds, dtype: 'uint32' },
    { name: 'weights', data: weights.weights, dtype: weights.weights instanceof Int8Array ? 'int8' : 'float32' },
    ...(weights.rowScales ? [{ name: 'rowScales' as const, data: weights.rowScales, dtype: 'float32' as const }] : []),
    { name: 'bias', data: weights.bias, dtype: 'float32' },
  ];
  let offset = 0;
  const sections = parts.map((p) => {
    const s = { name: p.name, dtype: p.dtype, offset, length: p.data.length };
    offset = pad8(offset + p.data.byteLength);
    return s;
  });
  const full: ModelManifest = { ...manifest, weights: { sections } };
  const json = Buffer.from(JSON.stringify(full), 'utf8');
  const headerLen = pad8(12 + json.length);
  const out = Buffer.alloc(headerLen + offset);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(json.length, 8);
  json.copy(out, 12);
  parts.forEach((p, i) => bytesOf(p.data).copy(out, headerLen + sections[i]!.offset));
  return out;
}

function corrupt(what: string): EddyError {
  return new EddyError('ARTIFACT_CORRUPT', `model artifact is unreadable: ${what}`);
}

/** Parses an artifact; throws ARTIFACT_CORRUPT on anything malformed (never returns half a model). */
export function decodeArtifact(buf: Buffer): ModelArtifact {
  if (buf.length < 12 || !buf.subarray(0, 8).equals(MAGIC)) throw corrupt('bad magic');
  const jsonLen = buf.readUInt32LE(8);
  if (12 + jsonLen > buf.length) throw corrupt('truncated manifest');
  let manifest: ModelManifest;
  try {
    manifest = JSON.parse(buf.subarray(12, 12 + jsonLen).toString('utf8')) as ModelManifest;
  } catch (err) {
    throw corrupt(`manifest is not JSON (${String(err)})`);
  }
  if (manifest.formatVersion !== ARTIFACT_FORMAT_VERSION) throw corrupt(`format version ${manifest.formatVersion} is not ${ARTIFACT_FORMAT_VERSION}`);
  if (manifest.model?.kind !== 'sparse-linear') throw corrupt(`unknown model kind ${String(manifest.model?.kind)}`);
  const headerLen = pad8(12 + jsonLen);
  const read = (name: WeightSectionName): Uint32Array | Int8Array | Float32Array | null => {
    const s = manifest.weights?.sections?.find((x) => x.name === name);
    if (!s) return null;
    const Ctor = s.dtype === 'uint32' ? Uint32Array : s.dtype === 'int8' ? Int8Array : Float32Array;
    const start = headerLen + s.offset;
    const end = start + s.length * Ctor.BYTES_PER_ELEMENT;
    if (!Number.isInteger(s.length) || s.length < 0 || end > buf.length) throw corrupt(`section ${name} out of bounds`);
    // Copy: the file buffer's offset is not necessarily aligned for the typed array.
    const copy = new Ctor(s.length);
    bytesOf(copy).set(buf.subarray(start, end));
    return copy;
  };
  const { features, labels } = manifest.model.dimensions;
  const featureIds = read('featureIds');
  const weights = read('weights');
  const rowScales = read('rowScales');
  const bias = read('bias');
  if (!(featureIds instanceof Uint32Array) || featureIds.length !== features) throw corrupt('featureIds missing or wrong length');
  if (!(weights instanceof Int8Array || weights instanceof Float32Array) || weights.length !== features * labels) throw corrupt('weights missing or wrong length');
  if (!(bias instanceof Float32Array) || bias.length !== labels || manifest.labels.length !== labels) throw corrupt('bias/labels mismatch');
  if (weights instanceof Int8Array && !(rowScales instanceof Float32Array && rowScales.length === features)) throw corrupt('rowScales missing');
  for (let i = 1; i < featureIds.length; i++) if (featureIds[i]! <= featureIds[i - 1]!) throw corrupt('featureIds not ascending');
  return { manifest, weights: { featureIds, weights, rowScales: rowScales instanceof Float32Array ? rowScales : null, bias } };
}

export function sha256Hex(buf: Buffer | string): string {
  return createHash('sha256').update(buf).digest('hex');
}

/** `v7` -> 7; anything else -> undefined. */
export function versionNumber(version: string): number | undefined {
  const m = /^v([1-9]\d*)$/.exec(version);
  return m ? Number(m[1]) : undefined;
}
