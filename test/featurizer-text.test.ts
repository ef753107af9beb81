import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FEATURIZER_CONFIG, featurizerFor, featurizerIdentity, hashString, normalizeText, TextFeaturizer, tokenize,
  type FeaturizerConfig, type SparseVector,
} from '../featurizer/text.ts';

/**
 * The featurizer's definition, as FEATURIZER_VERSION 1 first implemented it: every n-gram built as
 * a string and hashed, counted in a Map (first-occurrence order), L2-normalised, then metadata and
 * real-time features added in sorted key order. `TextFeaturizer.featurize` hashes n-grams without
 * building them and counts in a reused table; it must agree with this bit for bit.
 */
function definitionFeaturize(config: FeaturizerConfig, text: string, metadata: Record<string, string> = {}, realtime: Record<string, number> = {}): SparseVector {
  const mask = (1 << config.hashBits) - 1;
  const id = (s: string) => (hashString(s) & mask) >>> 0;
  const words = tokenize(text.slice(0, config.maxChars).normalize('NFKC').toLowerCase().normalize('NFD').replace(/\p{M}+/gu, ''))
    .filter((w) => !config.minWordChars || w.length >= config.minWordChars);
  const names: string[] = [];
  for (const n of config.wordNgrams) for (let i = 0; i + n <= words.length; i++) names.push(n === 1 ? `w:${words[i]}` : `w${n}:${words.slice(i, i + n).join(' ')}`);
  for (const n of config.charNgrams) {
    for (const w of words) {
      const padded = `<${w}>`;
      for (let i = 0; i + n <= padded.length; i++) names.push(`c${n}:${padded.slice(i, i + n)}`);
    }
  }
  const counts = new Map<number, number>();
  for (const name of names) counts.set(id(name), (counts.get(id(name)) ?? 0) + 1);
  let norm = 0;
  for (const [k, c] of counts) {
    const v = 1 + Math.log(c);
    counts.set(k, v);
    norm += v * v;
  }
  const scale = norm > 0 ? 1 / Math.sqrt(norm) : 0;
  const values = new Map<number, number>();
  for (const [k, v] of counts) values.set(k, v * scale);
  for (const key of Object.keys(metadata).sort()) {
    if (!config.metadataKeys.includes(key)) continue;
    const k = id(`m:${key}=${(metadata[key] ?? '').slice(0, 200).normalize('NFKC').toLowerCase().normalize('NFD').replace(/\p{M}+/gu, '')}`);
    values.set(k, (values.get(k) ?? 0) + 1);
  }
  for (const name of Object.keys(realtime).sort()) {
    const raw = realtime[name];
    if (raw === undefined || !Number.isFinite(raw) || raw === 0) continue;
    const k = id(`r:${name}`);
    values.set(k, (values.get(k) ?? 0) + Math.max(-config.realtimeClip, Math.min(config.realtimeClip, raw)));
  }
  const ids = Uint32Array.from(values.keys()).sort();
  const vals = new Float32Array(ids.length);
  for (let i = 0; i < ids.length; i++) vals[i] = values.get(ids[i]!)!;
  return { ids, values: vals };
}

const featurizer = new TextFeaturizer();

describe('featurizer', () => {
  it('is pinned: this exact input gives this exact vector (change it only with a new FEATURIZER_VERSION)', () => {
    // Models in the store were trained on these ids and values; a silent change would make every
    // served model wrong while the predictor still accepted them.
    const v = featurizer.featurize('Mon laptop ne démarre plus', { channel: 'Email', ignored: 'x' }, { 'requester.share:Network': 0.6 });
    expect(Array.from(v.ids)).toEqual([352695, 633618, 672995, 808678, 1279197, 1344385, 1686707, 2025682, 3315895, 3319716, 4105452]);
    expect(Array.from(v.values).map((x) => Math.round(x * 1e6) / 1e6)).toEqual([0.6, 0.333333, 0.333333, 0.333333, 0.333333, 0.333333, 0.333333, 0.333333, 0.333333, 1, 0.333333]);
    expect(hashString('w:laptop')).toBe(3737036012);
    expect(featurizerIdentity().id).toMatch(/^eddy-hashed-ngrams@1\+[0-9a-f]{12}$/);
  });

  it('normalises Unicode: full-width, case, diacritics; tokenises any script', () => {
    expect(normalizeText('ＬＡＰＴＯＰ Réseau ÇA')).toBe('laptop reseau ca');
    expect(tokenize(normalizeText("Le PC de l'équipe ne démarre pas; 東京 office #42!"))).toEqual(['le', 'pc', 'de', "l'equipe", 'ne', 'demarre', 'pas', '東京', 'office', '42']);
    expect(featurizer.featurize('Réseau DOWN').ids).toEqual(featurizer.featurize('reseau down').ids);
  });

  it('L2-normalises text features with sublinear tf, keeps metadata and real-time features apart', () => {
    const v = featurizer.featurize('vpn vpn vpn down');
    let norm = 0;
    for (const x of v.values) norm += x * x;
    expect(norm).toBeCloseTo(1, 6);
    const names = featurizer.textFeatureNames('vpn vpn vpn down');
    expect(names).toEqual(['w:vpn', 'w:vpn', 'w:vpn', 'w:down', 'w2:vpn vpn', 'w2:vpn vpn', 'w2:vpn down']);
    const withMeta = featurizer.featurize('vpn', { channel: 'chat', unrelated: 'zzz' }, { big: 1e9, nan: Number.NaN, zero: 0 });
    // text (1) + channel (1) + clipped real-time (1); unknown metadata keys, NaN and 0 add nothing.
    expect(withMeta.ids).toHaveLength(3);
    expect(Math.max(...withMeta.values)).toBe(DEFAULT_FEATURIZER_CONFIG.realtimeClip);
    expect(featurizer.featurize('').ids).toHaveLength(0);
  });

  it('bounds the work on huge texts', () => {
    const huge = 'word '.repeat(100_000);
    expect(featurizer.textFeatureNames(huge).length).toBeLessThanOrEqual(2 * DEFAULT_FEATURIZER_CONFIG.maxChars);
  });

  it('resolves an identity only when this build implements it and the config hashes to the id', () => {
    const id = featurizerIdentity();
    expect(featurizerFor(id)).toBeInstanceOf(TextFeaturizer);
    expect(featurizerFor({ ...id, version: '999' })).toBeUndefined();
    expect(featurizerFor({ ...id, name: 'other' })).toBeUndefined();
    expect(featurizerFor({ ...id, config: { ...id.config, wordNgrams: [1] } })).toBeUndefined();
    const bigrams = featurizerIdentity({ ...DEFAULT_FEATURIZER_CONFIG, wordNgrams: [1] });
    expect(bigrams.id).not.toBe(id.id);
    expect(featurizerFor(bigrams)?.textFeatureNames('a b')).toEqual(['w:a', 'w:b']);
  });

  it('minWordChars drops short words and marks the identity version 2, so a build without the option refuses it; the default stays version 1', () => {
    const id = featurizerIdentity();
    expect(id.version).toBe('1');
    const longWords = featurizerIdentity({ ...DEFAULT_FEATURIZER_CONFIG, minWordChars: 2 });
    expect(longWords.version).toBe('2');
    expect(longWords.id).toMatch(/^eddy-hashed-ngrams@2\+/);
    expect(featurizerFor(longWords)?.textFeatureNames('a vpn is down')).toEqual(['w:vpn', 'w:is', 'w:down', 'w2:vpn is', 'w2:is down']);
    // The same config claimed as version 1 (what a build that ignored the option would compute) is refused.
    expect(featurizerFor({ ...longWords, version: '1', id: longWords.id.replace('@2+', '@1+') })).toBeUndefined();
  });

  it('featurize and featurizeScratch equal the definition bit for bit (ids, and values compared with Object.is) on random inputs in several configurations', () => {
    // Pieces that exercise the paths: ASCII and not (the ASCII fast path skips normalisation),
    // repeats (sublinear tf: non-integer squares, so the norm's summation order shows), combining
    // marks, ligatures, full-width, astral characters, apostrophes; tiny hash spaces force collisions
    // between text, metadata and real-time ids.
    const pieces = ['a', 'b', 'vpn', 'laptop', 'the', 'the', ' ', ' ', ' ', 'É', 'é', 'ß', '東', '京', '😀', "'", '’', 'ﬁ', 'Ａ', '\u0301', '1', ',', '.', '\n'];
    // Every other text is ASCII only (the hand-written tokenizer's path): upper case, digits,
    // apostrophes before letters, digits, spaces and the end.
    const asciiPieces = ['a', 'Vpn', 'LAPTOP', 'x9', '42', ' ', ' ', "'", "'s", "'T", '-', '_', '.', '\t', 'Z', '0'];
    let seed = 7;
    const rnd = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    const configs: FeaturizerConfig[] = [
      DEFAULT_FEATURIZER_CONFIG,
      { ...DEFAULT_FEATURIZER_CONFIG, hashBits: 6, wordNgrams: [1, 2, 3], charNgrams: [2, 3, 4] },
      { ...DEFAULT_FEATURIZER_CONFIG, hashBits: 3, maxChars: 50 },
      { ...DEFAULT_FEATURIZER_CONFIG, hashBits: 8, charNgrams: [3, 4], minWordChars: 2 },
    ];
    const featurizers = configs.map((c) => new TextFeaturizer(c));
    let compared = 0;
    for (let t = 0; t < 3000; t++) {
      const len = Math.floor(rnd() * (t % 100 === 0 ? 2000 : 40));
      let text = '';
      const from = t % 2 === 0 ? asciiPieces : pieces;
      for (let i = 0; i < len; i++) text += from[Math.floor(rnd() * from.length)];
      const metadata: Record<string, string> = {};
      if (rnd() < 0.7) metadata.channel = rnd() < 0.5 ? 'Émail' : 'chat';
      if (rnd() < 0.5) metadata.requester = `user${Math.floor(rnd() * 3)}`;
      if (rnd() < 0.3) metadata.other = 'ignored';
      const realtime: Record<string, number> = {};
      const n = Math.floor(rnd() * (t % 50 === 0 ? 150 : 6));
      for (let i = 0; i < n; i++) realtime[`f${Math.floor(rnd() * 300)}`] = rnd() < 0.1 ? 0 : (rnd() - 0.3) * 30;
      featurizers.forEach((f, i) => {
        const want = definitionFeaturize(configs[i]!, text, metadata, realtime);
        // The scratch vector (what a prediction scores) first, then one of its own: same bits.
        for (const got of [f.featurizeScratch(text, metadata, realtime), f.featurize(text, metadata, realtime)]) {
          expect(Array.from(got.ids), JSON.stringify(text.slice(0, 80))).toEqual(Array.from(want.ids));
          got.values.forEach((v, j) => {
            if (!Object.is(v, want.values[j])) expect.fail(`value ${j} of ${JSON.stringify(text.slice(0, 80))} (config ${i}): ${v} !== ${want.values[j]}`);
          });
          compared++;
        }
      });
    }
    expect(compared).toBe(24000);
  });

  it("featurizeScratch reuses its arrays (valid until the next call) while featurize's vectors stay the caller's", () => {
    const f = new TextFeaturizer();
    const own = f.featurize('vpn down again');
    const kept = Array.from(own.ids);
    const first = f.featurizeScratch('vpn down again');
    expect(Array.from(first.ids)).toEqual(kept);
    const second = f.featurizeScratch('printer jammed on the third floor');
    expect(second.ids.buffer).toBe(first.ids.buffer);
    expect(Array.from(first.ids)).not.toEqual(kept); // overwritten, as documented
    f.featurize('something else entirely');
    expect(Array.from(own.ids)).toEqual(kept);
  });

  it('normalizeText: the ASCII fast path equals full normalisation', () => {
    for (const s of ['Hello WORLD', 'a\tb\nc', '', 'x'.repeat(5000), "it's OK, 42!"]) {
      expect(normalizeText(s)).toBe(s.slice(0, DEFAULT_FEATURIZER_CONFIG.maxChars).normalize('NFKC').toLowerCase().normalize('NFD').replace(/\p{M}+/gu, ''));
    }
  });
});
