import { createHash } from 'node:crypto';

/**
 * Ids derived from what caused them, and model version names.
 *
 * A derived id is a UUID-shaped (version-5 layout) rendering of sha256(source): the same cause
 * always yields the same id, so a redelivered or replayed event re-sends the same eventId and
 * consumers dedupe it. Each caller namespaces its source (`eddy:retrain:<cause>`, ...): the
 * strings are part of the contract, since a changed source after an upgrade would mint new ids
 * for events already sent.
 */
export function derivedId(source: string): string {
  const h = createHash('sha256').update(source).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const VERSION = /^v([1-9]\d*)$/;

/** `v7` -> 7; anything else (including `v0`, `v07`) -> undefined. */
export function versionNumber(version: string | null | undefined): number | undefined {
  const m = version ? VERSION.exec(version) : null;
  return m ? Number(m[1]) : undefined;
}

/** Orders `v<N>` numerically (v10 after v9); anything else sorts before, by name. */
export function compareVersions(a: string, b: string): number {
  const na = versionNumber(a);
  const nb = versionNumber(b);
  if (na !== undefined && nb !== undefined) return na - nb;
  if (na !== undefined) return 1;
  if (nb !== undefined) return -1;
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The version after the highest of `versions` (`v1` when there is none). */
export function nextVersion(versions: Iterable<string>): string {
  let max = 0;
  for (const v of versions) max = Math.max(max, versionNumber(v) ?? 0);
  return `v${max + 1}`;
}

/** A bounded set of recently seen event ids (oldest forgotten first): redelivered events apply once. */
export class RecentIds {
  private readonly ids = new Set<string>();
  constructor(private readonly capacity: number) {}
  has(id: string): boolean {
    return this.ids.has(id);
  }
  /** True the first time an id is seen. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value!);
    return true;
  }
}
