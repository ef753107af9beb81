import { createHash } from 'node:crypto';
import { REALTIME_FEATURES_VERSION } from './realtime.ts';

/**
 * The text featurizer shared by the trainer and the server: pure, deterministic, versioned.
 * A text becomes a sparse vector of (hashed feature id, value); metadata and real-time features
 * join it as named features. Everything that changes a vector for a given input MUST bump
 * FEATURIZER_VERSION or change the config (and so the featurizer id): models carry the id and
 * the predictor refuses a model whose id this build does not implement.
 */
export const FEATURIZER_NAME = 'eddy-hashed-ngrams';
export const FEATURIZER_VERSION = '1';

export interface FeaturizerConfig {
  /** Feature ids are `hash & (2^hashBits - 1)`; only the ids a client's data touched are stored. */
  hashBits: number;
  /** Word n-gram orders, e.g. [1, 2]. */
  wordNgrams: number[];
  /** Character n-gram orders inside word boundaries (e.g. [3, 4]); [] disables. */
  charNgrams: number[];
  /** Texts are cut to this many characters before tokenising (bounds latency on huge inputs). */
  maxChars: number;
  /** Metadata keys that become categorical features (`key=value`); other keys are ignored. */
  metadataKeys: string[];
  /** Real-time feature values are clipped to [-clip, clip] (they come from counters and shares). */
  realtimeClip: number;
  /**
   * Version of the real-time feature definitions (featurizer/realtime.ts) the model saw: part of
   * the identity, so a model is never paired with real-time features it was not trained on.
   */
  realtimeFeaturesVersion: string;
}

export const DEFAULT_FEATURIZER_CONFIG: FeaturizerConfig = {
  hashBits: 22,
  wordNgrams: [1, 2],
  charNgrams: [],
  maxChars: 4000,
  metadataKeys: ['channel', 'requester', 'department', 'source', 'category', 'location'],
  realtimeClip: 10,
  realtimeFeaturesVersion: REALTIME_FEATURES_VERSION,
};

export interface FeaturizerIdentity {
  name: string;
  version: string;
  config: FeaturizerConfig;
  /** `name@version+<first 12 hex of sha256(canonical config)>`: what models and ModelPublished carry. */
  id: string;
}

/** Sparse features of one input: parallel arrays, ids unique and ascending. */
export interface SparseVector {
  ids: Uint32Array;
  values: Float32Array;
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function featurizerIdentity(config: FeaturizerConfig = DEFAULT_FEATURIZER_CONFIG): FeaturizerIdentity {
  const configHash = createHash('sha256').update(canonicalJson(config)).digest('hex').slice(0, 12);
  return { name: FEATURIZER_NAME, version: FEATURIZER_VERSION, config, id: `${FEATURIZER_NAME}@${FEATURIZER_VERSION}+${configHash}` };
}

/**
 * Unicode-aware normalisation: NFKC folds compatibility forms (full-width letters, ligatures),
 * lower-casing is locale-independent, and diacritics are stripped (NFD + drop combining marks) so
 * "réseau" and "reseau" are one word, as users type both.
 */
export function normalizeText(text: string, maxChars = DEFAULT_FEATURIZER_CONFIG.maxChars): string {
  return text.slice(0, maxChars).normalize('NFKC').toLowerCase().normalize('NFD').replace(/\p{M}+/gu, '');
}

const TOKEN = /[\p{L}\p{N}]+(?:['’][\p{L}]+)?/gu;

/** Words: runs of letters/digits in any script (apostrophe contractions kept whole). */
export function tokenize(normalized: string): string[] {
  return normalized.match(TOKEN) ?? [];
}

/** FNV-1a over UTF-16 code units, 32-bit. Deterministic on every platform; fast in V8. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  // Final avalanche (murmur3 fmix32): FNV's low bits are weak and we mask to the low bits.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Turns one input into a sparse vector. Text features use sublinear tf (1 + ln count) and are
 * L2-normalised together (as TF-IDF does), so long and short texts live on one scale; metadata
 * features are 1 and real-time features keep their (clipped) value, outside the normalisation.
 */
export class TextFeaturizer {
  readonly identity: FeaturizerIdentity;
  private readonly mask: number;
  private readonly metadataKeys: Set<string>;

  constructor(readonly config: FeaturizerConfig = DEFAULT_FEATURIZER_CONFIG) {
    this.identity = featurizerIdentity(config);
    this.mask = config.hashBits >= 32 ? 0xffffffff : (1 << config.hashBits) - 1;
    this.metadataKeys = new Set(config.metadataKeys);
  }

  private id(feature: string): number {
    return (hashString(feature) & this.mask) >>> 0;
  }

  /** Named features of a text (for debugging and tests; `featurize` does not build these strings twice). */
  textFeatureNames(text: string): string[] {
    const words = tokenize(normalizeText(text, this.config.maxChars));
    const out: string[] = [];
    for (const n of this.config.wordNgrams) {
      for (let i = 0; i + n <= words.length; i++) out.push(n === 1 ? `w:${words[i]}` : `w${n}:${words.slice(i, i + n).join(' ')}`);
    }
    for (const n of this.config.charNgrams) {
      for (const w of words) {
        const padded = `<${w}>`;
        for (let i = 0; i + n <= padded.length; i++) out.push(`c${n}:${padded.slice(i, i + n)}`);
      }
    }
    return out;
  }

  featurize(text: string, metadata: Record<string, string> = {}, realtime: Record<string, number> = {}): SparseVector {
    const counts = new Map<number, number>();
    for (const name of this.textFeatureNames(text)) {
      const id = this.id(name);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    let norm = 0;
    for (const [id, c] of counts) {
      const v = 1 + Math.log(c);
      counts.set(id, v);
      norm += v * v;
    }
    const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
    const values = new Map<number, number>();
    for (const [id, v] of counts) values.set(id, v * scale);
    for (const key of Object.keys(metadata).sort()) {
      if (!this.metadataKeys.has(key)) continue;
      const id = this.id(`m:${key}=${normalizeText(metadata[key] ?? '', 200)}`);
      values.set(id, (values.get(id) ?? 0) + 1);
    }
    const clip = this.config.realtimeClip;
    for (const name of Object.keys(realtime).sort()) {
      const raw = realtime[name];
      if (raw === undefined || !Number.isFinite(raw) || raw === 0) continue;
      const id = this.id(`r:${name}`);
      values.set(id, (values.get(id) ?? 0) + Math.max(-clip, Math.min(clip, raw)));
    }
    const ids = Uint32Array.from(values.keys()).sort();
    const vals = new Float32Array(ids.length);
    for (let i = 0; i < ids.length; i++) vals[i] = values.get(ids[i]!)!;
    return { ids, values: vals };
  }
}

const featurizers = new Map<string, TextFeaturizer>();

/**
 * The featurizer for an identity, or undefined when this build does not implement it (another
 * name or version, or a config whose hash does not match its id: a tampered or foreign artifact).
 */
export function featurizerFor(identity: { name: string; version: string; config: unknown; id: string }): TextFeaturizer | undefined {
  if (identity.name !== FEATURIZER_NAME || identity.version !== FEATURIZER_VERSION) return undefined;
  // Keyed by id AND config: an artifact whose config does not hash to its id must not hit the cache.
  const key = `${identity.id}|${canonicalJson(identity.config)}`;
  const cached = featurizers.get(key);
  if (cached) return cached;
  const config = identity.config as FeaturizerConfig;
  let f: TextFeaturizer;
  try {
    f = new TextFeaturizer(config);
  } catch {
    return undefined;
  }
  if (f.identity.id !== identity.id) return undefined;
  featurizers.set(key, f);
  return f;
}
