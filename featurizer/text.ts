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
/**
 * Version 2 is version 1 plus `minWordChars`. A config that sets it carries version 2, so a build
 * that predates the option refuses such a model (unknown version) instead of featurizing it
 * without the filter under a matching id; configs without it stay version 1, ids unchanged.
 */
const FEATURIZER_VERSIONS = new Set(['1', '2']);

function versionOf(config: FeaturizerConfig): string {
  return config.minWordChars !== undefined ? '2' : FEATURIZER_VERSION;
}

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
  /**
   * Words shorter than this many characters are dropped before n-grams are formed (2 drops "a",
   * "i", single digits: scikit-learn's default token pattern). Absent = keep every word; absent
   * from the default config, so the default identity (and every model trained on it) is unchanged.
   */
  minWordChars?: number;
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
  const version = versionOf(config);
  return { name: FEATURIZER_NAME, version, config, id: `${FEATURIZER_NAME}@${version}+${configHash}` };
}

/**
 * Unicode-aware normalisation: NFKC folds compatibility forms (full-width letters, ligatures),
 * lower-casing is locale-independent, and diacritics are stripped (NFD + drop combining marks) so
 * "réseau" and "reseau" are one word, as users type both.
 */
export function normalizeText(text: string, maxChars = DEFAULT_FEATURIZER_CONFIG.maxChars): string {
  const cut = text.length > maxChars ? text.slice(0, maxChars) : text;
  // ASCII is stable under NFKC and NFD and has no combining marks, so for the common all-ASCII
  // input only the lower-casing is left to do: the same string, without two normalisation passes
  // and a regex replace (~40 % of featurize on a short English ticket).
  if (ASCII.test(cut)) return cut.toLowerCase();
  return cut.normalize('NFKC').toLowerCase().normalize('NFD').replace(/\p{M}+/gu, '');
}

const ASCII = /^[\x00-\x7f]*$/;

const TOKEN = /[\p{L}\p{N}]+(?:['’][\p{L}]+)?/gu;

/** Words: runs of letters/digits in any script (apostrophe contractions kept whole). */
export function tokenize(normalized: string): string[] {
  return normalized.match(TOKEN) ?? [];
}

/** FNV-1a over UTF-16 code units, 32-bit. Deterministic on every platform; fast in V8. */
export function hashString(s: string): number {
  return fmix(fnv(FNV_OFFSET, s)) >>> 0;
}

const FNV_OFFSET = 0x811c9dc5;

/**
 * FNV-1a is a streaming hash: feeding "w2:", then a word, then " ", then the next word gives the
 * hash of the concatenation. The featurizer hashes n-grams that way without building their strings.
 */
function fnv(h: number, s: string): number {
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h;
}

function fnvChar(h: number, code: number): number {
  return Math.imul(h ^ code, 0x01000193);
}

function fmix(h: number): number {
  // Final avalanche (murmur3 fmix32): FNV's low bits are weak and we mask to the low bits.
  // Returned as a signed 32-bit integer (callers mask, or `>>> 0`): an unsigned one above 2^31
  // is a heap number wherever V8 does not inline this, one allocation per feature.
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** FNV over `s[start, end)`, each code unit case-folded by {@link fold} (`up` 32: ASCII text read in its own case). */
function fnvRange(h: number, s: string, start: number, end: number, up: number): number {
  for (let i = start; i < end; i++) h = Math.imul(h ^ fold(s.charCodeAt(i), up), 0x01000193);
  return h;
}

/**
 * `c` lower-cased when it is an ASCII capital and `up` is 32 (what String.prototype.toLowerCase
 * does to ASCII); as it is when `up` is 0 (text already normalised and lower-cased).
 */
function fold(c: number, up: number): number {
  return c >= 65 && c <= 90 ? c + up : c;
}

/** TOKEN's classes on lower-cased ASCII: \p{L} is a-z, \p{N} is 0-9. */
function isAsciiLetter(c: number): boolean {
  return c >= 97 && c <= 122;
}

function isAsciiWordChar(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 48 && c <= 57);
}

/**
 * Writes the own keys of `o` into `out`, in code-unit order (as `Object.keys(o).sort()` orders
 * them), and returns how many: no array per call (a request's metadata and real-time names are a
 * few dozen; beyond 32 they are sorted by Array.prototype.sort, which allocates a copy).
 */
function sortedKeys(o: Record<string, unknown>, out: string[]): number {
  let n = 0;
  for (const key in o) {
    // Inserted in order while there are few; beyond 32 appended, and sorted below.
    let j = n++;
    if (n <= 32) {
      while (j > 0 && out[j - 1]! > key) {
        out[j] = out[j - 1]!;
        j--;
      }
    }
    out[j] = key;
  }
  if (n > 32) {
    const sorted = out.slice(0, n).sort();
    for (let i = 0; i < n; i++) out[i] = sorted[i]!;
  }
  return n;
}

const M_PREFIX = fnv(FNV_OFFSET, 'm:');
const R_PREFIX = fnv(FNV_OFFSET, 'r:');

/**
 * Turns one input into a sparse vector. Text features use sublinear tf (1 + ln count) and are
 * L2-normalised together (as TF-IDF does), so long and short texts live on one scale; metadata
 * features are 1 and real-time features keep their (clipped) value, outside the normalisation.
 */
export class TextFeaturizer {
  readonly identity: FeaturizerIdentity;
  private readonly mask: number;
  private readonly metadataKeys: Set<string>;

  /** FNV states after each n-gram order's prefix (`w2:`, `c3:`...), in config order: hashed once, not per call. */
  private readonly wordPrefixes: number[];
  private readonly charPrefixes: number[];

  constructor(readonly config: FeaturizerConfig = DEFAULT_FEATURIZER_CONFIG) {
    this.identity = featurizerIdentity(config);
    this.mask = config.hashBits >= 32 ? 0xffffffff : (1 << config.hashBits) - 1;
    this.metadataKeys = new Set(config.metadataKeys);
    this.wordPrefixes = config.wordNgrams.map((n) => fnv(FNV_OFFSET, n === 1 ? 'w:' : `w${n}:`));
    this.charPrefixes = config.charNgrams.map((n) => fnv(FNV_OFFSET, `c${n}:`));
  }

  private id(feature: string): number {
    return (hashString(feature) & this.mask) >>> 0;
  }

  /** Named features of a text (for debugging and tests; `featurize` does not build these strings twice). */
  textFeatureNames(text: string): string[] {
    const words = this.words(text);
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

  /**
   * The vector of one input. Equal, bit for bit, to counting `textFeatureNames` by hashed id in
   * first-occurrence order and adding metadata and real-time features in sorted key order (the
   * definition; test/featurizer-text.test.ts checks both against a reference copy of it), but it
   * hashes n-grams by streaming their parts (no string per n-gram) and counts in a reused
   * open-addressing table instead of Maps: a prediction featurizes every request, so this is on
   * the server's hot path. Hand-written because the accumulation order must be exactly the
   * definition's (the L2 norm is a floating-point sum), which no general hash map guarantees.
   */
  featurize(text: string, metadata: Record<string, string> = {}, realtime: Record<string, number> = {}): SparseVector {
    return this.count(text, metadata, realtime).toVector();
  }

  /**
   * {@link featurize}'s vector, equal to it bit for bit, in arrays this featurizer reuses: valid
   * until its next call (by any model that shares it), so for scoring at once, as a prediction
   * does. A vector of its own costs two typed arrays per prediction, and a typed array of more
   * than 64 bytes gets a backing store outside V8's heap: ~2 µs each on the 2-core machine, more
   * than sorting and copying the ids (docs/benchmarks/server.md, "Scratch vectors").
   */
  featurizeScratch(text: string, metadata: Record<string, string> = {}, realtime: Record<string, number> = {}): SparseVector {
    return this.count(text, metadata, realtime).scratchVector();
  }

  /** Counts the features of one input into the reused table (the definition: see featurize). */
  private count(text: string, metadata: Record<string, string>, realtime: Record<string, number>): FeatureTable {
    const norm = this.wordSpans(text);
    const up = this.caseFold;
    const nWords = this.spanCount;
    const spans = this.spans;
    const t = this.table;
    t.reset(this.textFeatureCount(nWords));
    const mask = this.mask;
    const { wordNgrams, charNgrams } = this.config;
    for (let o = 0; o < wordNgrams.length; o++) {
      const n = wordNgrams[o]!;
      const prefix = this.wordPrefixes[o]!;
      if (n === 1) {
        for (let i = 0; i < nWords; i++) t.add((fmix(fnvRange(prefix, norm, spans[2 * i]!, spans[2 * i + 1]!, up)) & mask) >>> 0, 1);
        continue;
      }
      for (let i = 0; i + n <= nWords; i++) {
        let h = fnvRange(prefix, norm, spans[2 * i]!, spans[2 * i + 1]!, up);
        for (let j = 1; j < n; j++) h = fnvRange(fnvChar(h, 32), norm, spans[2 * (i + j)]!, spans[2 * (i + j) + 1]!, up);
        t.add((fmix(h) & mask) >>> 0, 1);
      }
    }
    for (let o = 0; o < charNgrams.length; o++) {
      const n = charNgrams[o]!;
      const prefix = this.charPrefixes[o]!;
      for (let wi = 0; wi < nWords; wi++) {
        // `<${word}>` sliced n code units at a time, hashed in place.
        const start = spans[2 * wi]!;
        const len = spans[2 * wi + 1]! - start + 2;
        for (let i = 0; i + n <= len; i++) {
          let h = prefix;
          for (let j = i; j < i + n; j++) h = fnvChar(h, j === 0 ? 60 : j === len - 1 ? 62 : fold(norm.charCodeAt(start + j - 1), up));
          t.add((fmix(h) & mask) >>> 0, 1);
        }
      }
    }
    // Sublinear tf, summed in first-occurrence order (the definition's Map iteration order).
    const textEntries = t.size;
    let norm2 = 0;
    for (let e = 0; e < textEntries; e++) {
      const v = 1 + Math.log(t.values[e]!);
      t.values[e] = v;
      norm2 += v * v;
    }
    const scale = norm2 > 0 ? 1 / Math.sqrt(norm2) : 0;
    for (let e = 0; e < textEntries; e++) t.values[e] = t.values[e]! * scale;
    const keys = this.keys;
    const nMeta = sortedKeys(metadata, keys);
    for (let k = 0; k < nMeta; k++) {
      const key = keys[k]!;
      if (!this.metadataKeys.has(key)) continue;
      // `m:${key}=${value}` hashed in parts.
      t.add((fmix(fnv(fnvChar(fnv(M_PREFIX, key), 61), normalizeText(metadata[key] ?? '', 200))) & mask) >>> 0, 1);
    }
    const clip = this.config.realtimeClip;
    const nNames = sortedKeys(realtime, keys);
    for (let k = 0; k < nNames; k++) {
      const name = keys[k]!;
      const raw = realtime[name];
      if (raw === undefined || !Number.isFinite(raw) || raw === 0) continue;
      t.add((fmix(fnv(R_PREFIX, name)) & mask) >>> 0, Math.max(-clip, Math.min(clip, raw)));
    }
    keys.fill(undefined as unknown as string, 0, Math.max(nMeta, nNames)); // hold no request's strings
    return t;
  }

  private words(text: string): string[] {
    const words = tokenize(normalizeText(text, this.config.maxChars));
    const min = this.config.minWordChars;
    return min && min > 1 ? words.filter((w) => w.length >= min) : words;
  }

  /**
   * The text to hash, with the words of `words(text)` as [start, end) spans of it in `this.spans`
   * (`this.spanCount` of them; no string per word). ASCII text, the common case, is scanned in
   * one pass by hand with exactly TOKEN's rule (a run of letters and digits, then optionally an
   * apostrophe and letters) and kept in its own case: `caseFold` is 32, and hashing lower-cases
   * each code unit as it reads it (no lower-cased copy). Other text is normalised and matched by
   * TOKEN itself (`caseFold` 0).
   */
  private wordSpans(text: string): string {
    const cut = text.length > this.config.maxChars ? text.slice(0, this.config.maxChars) : text;
    const min = this.config.minWordChars && this.config.minWordChars > 1 ? this.config.minWordChars : 0;
    let count = 0;
    ascii: {
      const len = cut.length;
      let i = 0;
      while (i < len) {
        const c = cut.charCodeAt(i);
        if (c > 0x7f) break ascii; // not ASCII: the words found so far are dropped, the full path starts over
        if (!isAsciiWordChar(fold(c, 32))) {
          i++;
          continue;
        }
        const start = i;
        while (i < len && isAsciiWordChar(fold(cut.charCodeAt(i), 32))) i++;
        if (i + 1 < len && cut.charCodeAt(i) === 39 && isAsciiLetter(fold(cut.charCodeAt(i + 1), 32))) {
          i += 2;
          while (i < len && isAsciiLetter(fold(cut.charCodeAt(i), 32))) i++;
        }
        count = this.pushSpan(count, start, i, min);
      }
      this.spanCount = count;
      this.caseFold = 32;
      return cut;
    }
    count = 0;
    const norm = normalizeText(cut, this.config.maxChars);
    TOKEN.lastIndex = 0;
    for (let m = TOKEN.exec(norm); m !== null; m = TOKEN.exec(norm)) count = this.pushSpan(count, m.index, m.index + m[0].length, min);
    this.spanCount = count;
    this.caseFold = 0;
    return norm;
  }

  /** Records word `count` (when at least `min` long); returns the new count. */
  private pushSpan(count: number, start: number, end: number, min: number): number {
    if (end - start < min) return count;
    if (2 * count + 2 > this.spans.length) {
      const bigger = new Int32Array(this.spans.length * 2);
      bigger.set(this.spans);
      this.spans = bigger;
    }
    this.spans[2 * count] = start;
    this.spans[2 * count + 1] = end;
    return count + 1;
  }

  /** How many text features `featurize` counts for these words (sizes the table). */
  private textFeatureCount(nWords: number): number {
    let n = 0;
    for (const order of this.config.wordNgrams) n += Math.max(0, nWords - order + 1);
    if (this.config.charNgrams.length > 0) {
      for (const order of this.config.charNgrams) {
        for (let i = 0; i < nWords; i++) n += Math.max(0, this.spans[2 * i + 1]! - this.spans[2 * i]! + 3 - order);
      }
    }
    return n;
  }

  /** Word spans of the last `wordSpans` call: start at 2i, end at 2i + 1; `spanCount` of them. */
  private spans = new Int32Array(256);
  private spanCount = 0;
  /** 32 when the last `wordSpans` returned ASCII text in its own case (see fold), else 0. */
  private caseFold = 0;
  /** Sorted metadata keys, then real-time names, of the current call (sortedKeys). */
  private readonly keys: string[] = [];
  private readonly table = new FeatureTable();
}

/**
 * Feature id -> accumulated value, entries in first-insertion order, reused across calls: an
 * open-addressing table (linear probing) over typed arrays, cleared by bumping a generation
 * stamp instead of zeroing. Only the returned vector is allocated per call.
 */
class FeatureTable {
  ids = new Uint32Array(64);
  values = new Float64Array(64);
  size = 0;
  /** The arrays of scratchVector, reused. */
  private scratchIds = new Uint32Array(64);
  private scratchValues = new Float32Array(64);
  /** scratchVector's views of them, by length. */
  private scratchViews: SparseVector[] = [];
  /** slot -> entry index + 1 for the current generation. */
  private slots = new Int32Array(256);
  private stamps = new Uint32Array(256);
  private generation = 0;
  private slotMask = 255;

  /** Empties the table, sized for up to `expected` text entries (metadata and real-time ones fit in the slack). */
  reset(expected: number): void {
    const need = expected + 64;
    if (need > this.ids.length) {
      let cap = this.ids.length;
      while (cap < need) cap *= 2;
      this.ids = new Uint32Array(cap);
      this.values = new Float64Array(cap);
    }
    if (need * 2 > this.slots.length) {
      let cap = this.slots.length;
      while (cap < need * 2) cap *= 2;
      this.slots = new Int32Array(cap);
      this.stamps = new Uint32Array(cap);
      this.slotMask = cap - 1;
      this.generation = 0;
    }
    this.size = 0;
    this.generation++;
    if (this.generation === 0xffffffff) {
      this.stamps.fill(0);
      this.generation = 1;
    }
  }

  add(id: number, value: number): void {
    if (this.size === this.ids.length) this.grow();
    let slot = Math.imul(id, 0x9e3779b1) >>> 0 & this.slotMask;
    for (;;) {
      if (this.stamps[slot] !== this.generation) {
        const e = this.size++;
        this.ids[e] = id;
        this.values[e] = value;
        this.stamps[slot] = this.generation;
        this.slots[slot] = e;
        return;
      }
      const e = this.slots[slot]!;
      if (this.ids[e] === id) {
        this.values[e] = this.values[e]! + value;
        return;
      }
      slot = (slot + 1) & this.slotMask;
    }
  }

  /** Entries beyond the reserved slack (many metadata or real-time features): rebuild bigger. */
  private grow(): void {
    const ids = this.ids.slice(0, this.size);
    const values = this.values.slice(0, this.size);
    const n = this.size;
    this.reset(n * 2);
    for (let e = 0; e < n; e++) this.add(ids[e]!, values[e]!);
  }

  /** The entries sorted by id, in arrays of their own. */
  toVector(): SparseVector {
    const n = this.size;
    const v = { ids: this.ids.slice(0, n), values: new Float32Array(n) };
    this.sortInto(v.ids, v.values);
    return v;
  }

  /** The entries sorted by id, in views of arrays reused by the next call. */
  scratchVector(): SparseVector {
    const n = this.size;
    if (this.scratchIds.length < n) {
      let cap = this.scratchIds.length;
      while (cap < n) cap *= 2;
      this.scratchIds = new Uint32Array(cap);
      this.scratchValues = new Float32Array(cap);
      this.scratchViews = [];
    }
    // One pair of views per length, made once: a view is an object of ~100 bytes, two per call.
    const v = (this.scratchViews[n] ??= { ids: this.scratchIds.subarray(0, n), values: this.scratchValues.subarray(0, n) });
    const ids = v.ids;
    for (let i = 0; i < n; i++) ids[i] = this.ids[i]!;
    this.sortInto(ids, v.values);
    return v;
  }

  /** Sorts `ids` (the table's ids, in entry order) and writes each one's value into `out` in the same order. */
  private sortInto(ids: Uint32Array, out: Float32Array): void {
    const n = ids.length;
    if (n <= 128) {
      // A prediction has a few dozen ids: an insertion sort in place that carries each value
      // along allocates nothing (TypedArray.prototype.sort copies into a temporary array first)
      // and needs no second lookup of each id.
      for (let i = 0; i < n; i++) out[i] = this.values[i]!;
      for (let i = 1; i < n; i++) {
        const x = ids[i]!;
        const xv = out[i]!;
        let j = i - 1;
        while (j >= 0 && ids[j]! > x) {
          ids[j + 1] = ids[j]!;
          out[j + 1] = out[j]!;
          j--;
        }
        ids[j + 1] = x;
        out[j + 1] = xv;
      }
      return;
    }
    ids.sort();
    // Entry of each id, found again through the table (ids are unique).
    for (let i = 0; i < n; i++) out[i] = this.values[this.find(ids[i]!)]!;
  }

  private find(id: number): number {
    let slot = Math.imul(id, 0x9e3779b1) >>> 0 & this.slotMask;
    for (;;) {
      const e = this.slots[slot]!;
      if (this.ids[e] === id) return e;
      slot = (slot + 1) & this.slotMask;
    }
  }
}

const featurizers = new Map<string, TextFeaturizer>();

/**
 * The featurizer for an identity, or undefined when this build does not implement it (another
 * name or version, or a config whose hash does not match its id: a tampered or foreign artifact).
 */
export function featurizerFor(identity: { name: string; version: string; config: unknown; id: string }): TextFeaturizer | undefined {
  if (identity.name !== FEATURIZER_NAME || !FEATURIZER_VERSIONS.has(identity.version)) return undefined;
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
