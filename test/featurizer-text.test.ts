import { describe, expect, it } from 'vitest';
import {
  DEFAULT_FEATURIZER_CONFIG, featurizerFor, featurizerIdentity, hashString, normalizeText, TextFeaturizer, tokenize,
} from '../featurizer/text.ts';

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
});
