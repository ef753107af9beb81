import { describe, expect, it } from 'vitest';
import { derivedId, randomId } from '../common/ids.ts';

describe('ids', () => {
  it('randomId gives RFC 4122 version-4 UUIDs, all distinct, across pool refills', () => {
    const seen = new Set<string>();
    // 256 ids per pool: 5,000 spans many refills.
    for (let i = 0; i < 5000; i++) {
      const id = randomId();
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      seen.add(id);
    }
    expect(seen.size).toBe(5000);
    // Every hex digit position varies (the text buffer is rewritten whole each time).
    const ids = [...seen];
    for (let pos = 0; pos < 36; pos++) {
      if ([8, 13, 14, 18, 23].includes(pos)) continue;
      expect(new Set(ids.map((id) => id[pos])).size, `position ${pos}`).toBeGreaterThan(3);
    }
  });

  it('derivedId is a stable version-5-shaped id of its source', () => {
    expect(derivedId('a:made')).toBe(derivedId('a:made'));
    expect(derivedId('a:made')).not.toBe(derivedId('b:made'));
    expect(derivedId('a:made')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    // The ids are part of the contract (events already sent were keyed by them): pinned values
    // of sha256 rendered as above, whichever hashing call computes them.
    expect(derivedId('eddy:predict:c1:r1:made')).toBe('89bbee60-5d89-50a8-af29-894da9fb75f4');
    expect(derivedId('')).toBe('e3b0c442-98fc-5c14-9afb-f4c8996fb924');
  });
});
