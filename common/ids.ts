import crypto, { createHash, randomFillSync } from 'node:crypto';

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
  const h = sha256Hex(source);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-${((parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16)}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/**
 * sha256 as hex. The one-shot `crypto.hash` (Node 20.12+) is ~2.5× cheaper than a Hash object
 * (0.4 vs 1.0 µs here) and the server derives an id for every prediction that carries a requestId
 * (the typed client's) or comes from Kafka; older Node 20 releases take the Hash object.
 */
const sha256Hex: (source: string) => string = typeof crypto.hash === 'function'
  ? (source) => crypto.hash('sha256', source, 'hex')
  : (source) => createHash('sha256').update(source).digest('hex');

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

const UUID_POOL = Buffer.alloc(16 * 256);
let uuidPoolAt = UUID_POOL.length;
const UUID_TEXT = Buffer.alloc(36);
const HEX_DIGITS = Buffer.from('0123456789abcdef', 'latin1');

/**
 * A random (version 4) UUID, as crypto.randomUUID() gives, from the same CSPRNG and pooled the
 * same way; written as 36 bytes and read back as one flat string. crypto.randomUUID() in Node 20
 * builds its text by ~20 string concatenations (~0.5 KB of garbage); the predict path makes two
 * per prediction (request and event ids), which was ~1 KB and ~2 µs of every prediction.
 */
export function randomId(): string {
  if (uuidPoolAt === UUID_POOL.length) {
    randomFillSync(UUID_POOL);
    uuidPoolAt = 0;
  }
  let o = 0;
  for (let i = 0; i < 16; i++) {
    let b = UUID_POOL[uuidPoolAt + i]!;
    if (i === 6) b = (b & 0x0f) | 0x40;
    else if (i === 8) b = (b & 0x3f) | 0x80;
    UUID_TEXT[o++] = HEX_DIGITS[b >> 4]!;
    UUID_TEXT[o++] = HEX_DIGITS[b & 15]!;
    if (i === 3 || i === 5 || i === 7 || i === 9) UUID_TEXT[o++] = 45; // '-'
  }
  uuidPoolAt += 16;
  return UUID_TEXT.toString('latin1', 0, 36);
}
