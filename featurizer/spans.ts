import { hashString, normalizeText, tokenize, type FeaturizerConfig, type TextFeaturizer } from './text.ts';

/**
 * Where each feature of a text came from in the text as the user typed it: the same feature
 * names (and so the same hashed ids) as `TextFeaturizer.featurize`, each with the span of the
 * original text it was built from. Explanations (models/explain.ts) use it to name the terms
 * that decided a prediction in the user's own spelling ("VPN", "Réseau"), not the normalised form.
 *
 * featurize() normalises first (NFKC, lower case, diacritics dropped) and tokenises the result,
 * so positions in the normalised text must be mapped back. The map is built per whitespace-
 * separated chunk (no normalisation step looks across whitespace: NFKC composes only with the
 * preceding starter, the final-sigma rule of lower-casing stops at a space) and, inside a chunk,
 * per code point when normalising code point by code point gives the chunk's own result (almost
 * always); otherwise every character of the chunk maps to the whole chunk. Whatever happens, the
 * result is checked against featurize()'s own names: when they differ (a featurizer change this
 * helper does not know), spans are reported as unknown rather than wrong.
 */

export type TextFeatureKind = 'word' | 'char';

export interface TextFeatureOccurrence {
  /** The feature's name as featurize() hashes it: `w:vpn`, `w2:vpn down`, `c3:<vp`. */
  name: string;
  /** The hashed feature id (what a model's weights are indexed by). */
  id: number;
  kind: TextFeatureKind;
  /** [start, end) in the original text (UTF-16 indices), or null when spans are unknown. */
  span: [number, number] | null;
}

/** The id featurize() gives a named feature (`w:…`, `c3:…`, `m:key=value`, `r:name`). */
export function featureId(config: Pick<FeaturizerConfig, 'hashBits'>, name: string): number {
  const mask = config.hashBits >= 32 ? 0xffffffff : (1 << config.hashBits) - 1;
  return (hashString(name) & mask) >>> 0;
}

/** The name featurize() gives a metadata value (only for keys in `metadataKeys`). */
export function metadataFeatureName(key: string, value: string): string {
  return `m:${key}=${normalizeText(value, 200)}`;
}

/** The name featurize() gives a real-time feature. */
export function realtimeFeatureName(name: string): string {
  return `r:${name}`;
}

/** The normalised text and, per UTF-16 unit of it, the span of the original text it came from. */
export interface NormalizedWithMap {
  normalized: string;
  from: Int32Array;
  to: Int32Array;
}

const PLAIN_ASCII = /^[\x09\x0a\x0d\x20-\x7e]*$/;

/**
 * normalizeText(text, maxChars) together with a map back to `text`; undefined when the chunked
 * normalisation does not reproduce normalizeText exactly (then no span is claimed).
 */
export function normalizeWithMap(text: string, maxChars: number): NormalizedWithMap | undefined {
  const sliced = text.slice(0, maxChars);
  const expected = normalizeText(text, maxChars);
  const from: number[] = [];
  const to: number[] = [];
  let out = '';
  const CHUNK = /\s+|\S+/gu;
  for (const m of sliced.matchAll(CHUNK)) {
    const chunk = m[0];
    const start = m.index!;
    if (PLAIN_ASCII.test(chunk)) {
      // The common case: printable ASCII normalises to its lower case, one unit for one.
      out += chunk.toLowerCase();
      for (let i = 0; i < chunk.length; i++) {
        from.push(start + i);
        to.push(start + i + 1);
      }
      continue;
    }
    const whole = normalizeText(chunk, chunk.length);
    let pieces = '';
    const pieceFrom: number[] = [];
    const pieceTo: number[] = [];
    let offset = start;
    for (const cp of chunk) {
      const n = normalizeText(cp, cp.length);
      pieces += n;
      for (let i = 0; i < n.length; i++) {
        pieceFrom.push(offset);
        pieceTo.push(offset + cp.length);
      }
      offset += cp.length;
    }
    out += whole;
    if (pieces === whole) {
      from.push(...pieceFrom);
      to.push(...pieceTo);
    } else {
      for (let i = 0; i < whole.length; i++) {
        from.push(start);
        to.push(start + chunk.length);
      }
    }
  }
  if (out !== expected) return undefined;
  return { normalized: out, from: Int32Array.from(from), to: Int32Array.from(to) };
}

/** The tokeniser of featurizer/text.ts, with positions (checked against tokenize() below). */
const TOKEN = /[\p{L}\p{N}]+(?:['’][\p{L}]+)?/gu;

/**
 * Every text feature occurrence of `text`, in featurize()'s order (word n-grams by order, then
 * character n-grams word by word). A feature that occurs twice appears twice, with both spans.
 */
export function textFeatureOccurrences(featurizer: TextFeaturizer, text: string): TextFeatureOccurrence[] {
  const config = featurizer.config;
  const names = featurizer.textFeatureNames(text);
  const map = normalizeWithMap(text, config.maxChars);
  const withSpans = map ? occurrencesWithSpans(config, map) : undefined;
  // The helper mirrors featurize(); if the two ever disagree, the names are featurize()'s and no span is claimed.
  if (withSpans && withSpans.length === names.length && withSpans.every((o, i) => o.name === names[i])) return withSpans;
  return names.map((name) => ({ name, id: featureId(config, name), kind: name.startsWith('w') ? 'word' : 'char', span: null }));
}

function occurrencesWithSpans(config: FeaturizerConfig, map: NormalizedWithMap): TextFeatureOccurrence[] | undefined {
  const words: Array<{ w: string; start: number; end: number }> = [];
  for (const m of map.normalized.matchAll(TOKEN)) words.push({ w: m[0], start: m.index!, end: m.index! + m[0].length });
  const expected = tokenize(map.normalized);
  if (expected.length !== words.length || expected.some((w, i) => w !== words[i]!.w)) return undefined;
  const span = (start: number, end: number): [number, number] => [map.from[start]!, map.to[end - 1]!];
  const out: TextFeatureOccurrence[] = [];
  for (const n of config.wordNgrams) {
    for (let i = 0; i + n <= words.length; i++) {
      const name = n === 1 ? `w:${words[i]!.w}` : `w${n}:${words.slice(i, i + n).map((x) => x.w).join(' ')}`;
      out.push({ name, id: featureId(config, name), kind: 'word', span: span(words[i]!.start, words[i + n - 1]!.end) });
    }
  }
  for (const n of config.charNgrams) {
    for (const word of words) {
      const padded = `<${word.w}>`;
      for (let i = 0; i + n <= padded.length; i++) {
        const name = `c${n}:${padded.slice(i, i + n)}`;
        // Padded index p is word index p - 1; the markers '<' '>' cover no character of the word.
        const first = Math.max(0, i - 1);
        const last = Math.min(word.w.length, i + n - 1);
        const s = last > first ? span(word.start + first, word.start + last) : span(word.start, word.end);
        out.push({ name, id: featureId(config, name), kind: 'char', span: s });
      }
    }
  }
  return out;
}
