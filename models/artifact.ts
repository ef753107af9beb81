import { createHash } from 'node:crypto';
import { EddyError } from '../common/errors.ts';
import type { FeaturizerConfig } from '../featurizer/text.ts';
import type { Calibration } from './calibration.ts';

/**
 * The model artifact: one self-describing binary file (manifest + named weight sections), the
 * unit the model store keeps, the trainer writes and the server loads. The container knows
 * nothing about any model kind: each kind (models/kinds/) says which sections it writes and how
 * it reads them back.
 *
 * Layout (little-endian):
 *   bytes 0..7    magic "EDDYMDL\0"
 *   bytes 8..11   u32 manifest length M
 *   bytes 12..    manifest JSON (UTF-8), zero-padded to a multiple of 8
 *   then          the sections, each at `offset` bytes from the start of the section area,
 *                 8-byte aligned, described by `manifest.weights.sections`.
 */
export const ARTIFACT_FORMAT_VERSION = 1;
const MAGIC = Buffer.from('EDDYMDL\0', 'latin1');

export type SectionArray = Uint32Array | Int32Array | Int8Array | Uint8Array | Float32Array;
export type SectionDtype = 'uint32' | 'int32' | 'int8' | 'uint8' | 'float32';

const ARRAY_OF: Record<SectionDtype, { new (length: number): SectionArray; BYTES_PER_ELEMENT: number }> = {
  uint32: Uint32Array, int32: Int32Array, int8: Int8Array, uint8: Uint8Array, float32: Float32Array,
};

function dtypeOf(a: SectionArray): SectionDtype {
  if (a instanceof Uint32Array) return 'uint32';
  if (a instanceof Int32Array) return 'int32';
  if (a instanceof Int8Array) return 'int8';
  if (a instanceof Uint8Array) return 'uint8';
  return 'float32';
}

/** One named array of a model's weights, as a kind writes it. */
export interface ArtifactSection {
  name: string;
  data: SectionArray;
}

/** What a model kind records about its shape in the manifest (`kind` picks the implementation). */
export interface ModelInfo {
  kind: string;
  [detail: string]: unknown;
}

export interface ModelManifest {
  formatVersion: number;
  clientId: string;
  /** `v<N>`, increasing per client. */
  modelVersion: string;
  /** ISO-8601. */
  createdAt: string;
  /** Output classes, in the order of the model's outputs. */
  labels: string[];
  featurizer: { name: string; version: string; config: FeaturizerConfig; id: string };
  model: ModelInfo;
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
  /**
   * What the weights were fitted on: 'all' = every example and label definition (the published
   * version is refit on all data; `metrics` then come from the same configuration fitted on the
   * train split and scored on the held-out test split); absent = the train split (older builds).
   */
  trainedOn?: 'all' | 'train-split';
  /** Newest example time (occurredAtMs) in the data the weights were fitted on. */
  dataThroughMs?: number;
  /** Temperature and `unsure` threshold fitted on held-out predictions; absent = raw softmax, never unsure. */
  calibration?: Calibration;
  /** The configuration the model search chose (kind + params + featurizer choices) and how it was chosen. */
  selection?: ModelSelection;
  weights: { sections: Array<{ name: string; dtype: SectionDtype; offset: number; length: number }> };
}

/** The model search's choice for a client, carried from version to version until the next search. */
export interface ModelSelection {
  /** Kind and hyperparameters, e.g. {"kind":"sparse-linear","params":{"C":10,"tfidf":true},"charNgrams":[]}. */
  config: { kind: string; params: Record<string, unknown>; charNgrams: number[] };
  /** Cross-validated macro-F1 of the chosen configuration at the last search (null = never searched: defaults). */
  cvMacroF1: number | null;
  /** True when this version ran the search; false when it reused the previous version's choice. */
  searched: boolean;
  /** Training examples when the search ran (the next full search comes at twice as many). */
  searchedAtExamples: number;
  /** Candidates the search scored at that time. */
  candidates: number;
}

/** A decoded artifact: the manifest and every section (each its own ArrayBuffer, safe to transfer between threads). */
export interface ModelArtifact {
  manifest: ModelManifest;
  sections: Record<string, SectionArray>;
}

function pad8(n: number): number {
  return (n + 7) & ~7;
}

function bytesOf(a: SectionArray): Buffer {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength);
}

/** Serialises an artifact; sections are stored in the order given (the manifest's `weights.sections` is filled in here). */
export function encodeArtifact(manifest: Omit<ModelManifest, 'weights'>, sections: readonly ArtifactSection[]): Buffer {
  let offset = 0;
  const placed = sections.map((p) => {
    const s = { name: p.name, dtype: dtypeOf(p.data), offset, length: p.data.length };
    offset = pad8(offset + p.data.byteLength);
    return s;
  });
  const full: ModelManifest = { ...manifest, weights: { sections: placed } };
  const json = Buffer.from(JSON.stringify(full), 'utf8');
  const headerLen = pad8(12 + json.length);
  const out = Buffer.alloc(headerLen + offset);
  MAGIC.copy(out, 0);
  out.writeUInt32LE(json.length, 8);
  json.copy(out, 12);
  sections.forEach((p, i) => bytesOf(p.data).copy(out, headerLen + placed[i]!.offset));
  return out;
}

export function corrupt(what: string): EddyError {
  return new EddyError('ARTIFACT_CORRUPT', `model artifact is unreadable: ${what}`);
}

/**
 * Parses the container; throws ARTIFACT_CORRUPT on anything malformed (never returns half a
 * model). Whether the sections make a model of its kind is the kind's check (loadPredictor).
 */
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
  if (typeof manifest.model?.kind !== 'string') throw corrupt('manifest names no model kind');
  if (!Array.isArray(manifest.weights?.sections)) throw corrupt('manifest lists no sections');
  const headerLen = pad8(12 + jsonLen);
  const sections: Record<string, SectionArray> = {};
  for (const s of manifest.weights.sections) {
    const Ctor = ARRAY_OF[s.dtype];
    if (!Ctor) throw corrupt(`section ${s.name} has unknown dtype ${String(s.dtype)}`);
    const start = headerLen + s.offset;
    const end = start + s.length * Ctor.BYTES_PER_ELEMENT;
    if (!Number.isInteger(s.length) || s.length < 0 || !Number.isInteger(s.offset) || s.offset < 0 || end > buf.length) throw corrupt(`section ${s.name} out of bounds`);
    // Copy: the file buffer's offset is not necessarily aligned for the typed array, and each
    // section gets its own ArrayBuffer (the server's loader thread transfers them).
    const copy = new Ctor(s.length);
    bytesOf(copy).set(buf.subarray(start, end));
    sections[s.name] = copy;
  }
  return { manifest, sections };
}

export function sha256Hex(buf: Buffer | string): string {
  return createHash('sha256').update(buf).digest('hex');
}
