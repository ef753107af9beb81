import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { loadSchema } from '../streams/index.ts';
import { serverMetrics } from './metrics.ts';
import { pidAlive } from '../common/shutdown.ts';

/**
 * The prediction server's spool: every PredictionMade of an answered HTTP prediction is appended
 * to a local file BEFORE the answer is sent, and forgotten once Kafka acknowledged it. A server
 * killed with events still in its publish buffer leaves them in the spool; the next server started
 * on this host for the same topic replays them (docs/reliability.md, "PredictionMade").
 *
 * - Writes are group commits: the request thread appends the events of every request answered in
 *   one turn of the event loop with one write(2) (server/publisher.ts). A write is in the kernel's
 *   page cache when it returns, so it survives the process's death (kill -9, a crash, the OOM
 *   killer); it survives a power loss or a kernel crash only with `fsync` (EDDY_SERVER_SPOOL=fsync,
 *   an fdatasync per group commit).
 * - Files are segments: `<topic>~<host>~<pid>~<spool>.<seq>.spool`, a 16-byte header (magic, fingerprint
 *   of the PredictionMade schema the records were encoded with) and then the records in the framed
 *   layout of streams/codec.ts FramedEventWriter (u32 key length, key, u32 value length, value:
 *   magic byte, schema id to be stamped, Avro). A segment is closed at SEGMENT_BYTES and deleted
 *   once Kafka acknowledged (or refused) every event in it: the publisher settles events in the
 *   order they were written, so a count is enough to know which.
 * - At start, segments of this topic left by a dead process of this host (its pid no longer runs,
 *   or is this process's own pid after a container restart) are adopted: renamed into this
 *   process's name (atomic: of two servers starting at once, one wins) and replayed. The events
 *   keep their eventId and requestId, so a replayed event that Kafka had in fact acknowledged just
 *   before the crash is a duplicate a reader can recognise (docs/reliability.md).
 */

const MAGIC = Buffer.from('EDDYSPL1', 'latin1');
const HEADER_BYTES = 16;
/** A segment is closed (and a new one started) once it holds this much. */
export const SEGMENT_BYTES = 4 * 1024 * 1024;

/** Segment files this process holds open: never adopted by another server of the same process (tests run several). */
const heldHere = new Set<string>();
/** Spools opened by this process so far: each names its segments apart (several servers in one process). */
let spoolsHere = 0;

const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');

/** First 8 bytes of the SHA-256 of the PredictionMade schema this build encodes with. */
function schemaFingerprint(): Buffer {
  return createHash('sha256').update(JSON.stringify(loadSchema('PredictionMade'))).digest().subarray(0, 8);
}

/** Records read back from a segment. */
export interface SpooledRecords {
  /** The records, in the framed layout (a FramedBatch's bytes). */
  bytes: Buffer;
  count: number;
  /** Bytes at the end that do not form a whole record (a write cut by a power loss). */
  tornBytes: number;
}

/** Parses a segment's records; a torn tail is reported, not returned. */
export function parseRecords(data: Buffer): SpooledRecords {
  let pos = 0;
  let count = 0;
  while (pos + 4 <= data.length) {
    const keyBytes = data.readUInt32BE(pos);
    const valueAt = pos + 4 + keyBytes;
    if (valueAt + 4 > data.length) break;
    const end = valueAt + 4 + data.readUInt32BE(valueAt);
    if (end > data.length) break;
    pos = end;
    count++;
  }
  return { bytes: data.subarray(0, pos), count, tornBytes: data.length - pos };
}

interface Segment {
  file: string;
  /** Events written before this segment's last one, plus its own: settled past this, it is deleted. */
  end: number;
}

export interface SpoolOptions {
  dir: string;
  /** The physical topic the events go to: a segment is only ever replayed to its own topic. */
  topic: string;
  /** fdatasync every group commit (survives a power loss; costs a disk flush per commit). */
  fsync: boolean;
  logger: Logger;
  segmentBytes?: number;
}

export class PredictionSpool {
  readonly dir: string;
  private readonly prefix: string;
  private readonly fingerprint = schemaFingerprint();
  private readonly segmentBytes: number;
  private fd: number | undefined;
  private current: Segment | undefined;
  private currentBytes = 0;
  private seq = 0;
  private readonly instance = spoolsHere++;
  /** Closed (or adopted) segments not settled yet, oldest first. */
  private readonly closedSegments: Segment[] = [];
  /** Events written (own and adopted), and events settled (acknowledged or refused by Kafka). */
  private written = 0;
  private settledCount = 0;

  constructor(private readonly options: SpoolOptions) {
    this.dir = options.dir;
    this.segmentBytes = options.segmentBytes ?? SEGMENT_BYTES;
    fs.mkdirSync(this.dir, { recursive: true });
    this.prefix = `${safe(options.topic)}~${safe(os.hostname())}~`;
  }

  /** Events written and not settled yet (what a kill -9 now would leave for the next start). */
  get unsettled(): number {
    return this.written - this.settledCount;
  }

  /**
   * Takes over the segments of this topic that dead processes of this host left, oldest first:
   * each is renamed into this process's name and its records returned for replay (they count as
   * written: settling them deletes the segment). Unreadable ones are renamed `.bad` and counted.
   */
  adopt(): SpooledRecords[] {
    const found: Array<{ name: string; pid: number; seq: number; mtimeMs: number }> = [];
    for (const name of fs.readdirSync(this.dir)) {
      if (!name.startsWith(this.prefix) || !name.endsWith('.spool')) continue;
      const [pidText, seqText] = name.slice(this.prefix.length, -'.spool'.length).split('~');
      const pid = Number(pidText);
      const file = path.join(this.dir, name);
      if (!Number.isInteger(pid) || heldHere.has(file)) continue;
      if (pid !== process.pid && pidAlive(pid)) continue;
      try {
        found.push({ name, pid, seq: Number(seqText?.split('.')[1] ?? 0), mtimeMs: fs.statSync(file).mtimeMs });
      } catch {
        // adopted by another server meanwhile
      }
    }
    found.sort((a, b) => a.mtimeMs - b.mtimeMs || a.pid - b.pid || a.seq - b.seq);
    const out: SpooledRecords[] = [];
    for (const f of found) {
      const from = path.join(this.dir, f.name);
      const to = this.nextFile();
      try {
        fs.renameSync(from, to);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // another server took it first
        throw err;
      }
      const data = fs.readFileSync(to);
      if (data.length < HEADER_BYTES || !data.subarray(0, 8).equals(MAGIC) || !data.subarray(8, 16).equals(this.fingerprint)) {
        // Written by a build with another PredictionMade schema (or not a spool): its bytes cannot be
        // stamped with this build's schema id. Kept for an operator, counted, never replayed.
        const records = data.length >= HEADER_BYTES ? parseRecords(data.subarray(HEADER_BYTES)) : { count: 0 };
        fs.renameSync(to, `${to}.bad`);
        serverMetrics.spoolUnreplayable().inc({ reason: 'schema' }, Math.max(1, records.count));
        this.options.logger.error({ file: `${to}.bad`, events: records.count }, 'spool segment written with another PredictionMade schema (or not a spool); kept aside, not replayed');
        continue;
      }
      const records = parseRecords(data.subarray(HEADER_BYTES));
      if (records.tornBytes > 0) {
        serverMetrics.spoolUnreplayable().inc({ reason: 'torn' });
        this.options.logger.error({ file: from, tornBytes: records.tornBytes }, 'spool segment ends in a partial record (a write cut by a power loss or a full disk); the rest is replayed');
      }
      if (records.count === 0) {
        fs.rmSync(to, { force: true });
        continue;
      }
      this.written += records.count;
      this.closedSegments.push({ file: to, end: this.written });
      heldHere.add(to);
      out.push(records);
    }
    return out;
  }

  /** Appends records (framed layout); returns once write(2) (and fdatasync with `fsync`) returned. Throws on an I/O error. */
  append(bytes: Buffer, count: number): void {
    if (this.fd === undefined) this.open();
    let off = 0;
    while (off < bytes.length) off += fs.writeSync(this.fd!, bytes, off, bytes.length - off, HEADER_BYTES + this.currentBytes + off);
    if (this.options.fsync) fs.fdatasyncSync(this.fd!);
    this.currentBytes += bytes.length;
    this.written += count;
    this.current!.end = this.written;
    if (this.currentBytes >= this.segmentBytes) this.rotate();
  }

  /** The next `n` events in write order were acknowledged (or refused) by Kafka: delete segments that are done. */
  settle(n: number): void {
    this.settledCount += n;
    while (this.closedSegments.length > 0 && this.closedSegments[0]!.end <= this.settledCount) {
      this.remove(this.closedSegments.shift()!.file);
    }
    // Everything settled: the open segment starts over (no file grows while Kafka keeps up).
    if (this.current && this.settledCount === this.written && this.currentBytes > 0 && this.fd !== undefined) {
      fs.ftruncateSync(this.fd, HEADER_BYTES);
      this.currentBytes = 0;
    }
  }

  /**
   * Closes the open segment. With `keep` false (everything settled) every file of this process is
   * deleted; otherwise they stay for the next server started here, which replays them.
   */
  close(keep: boolean): void {
    if (this.fd !== undefined) fs.closeSync(this.fd);
    this.fd = undefined;
    const files = [...this.closedSegments.map((s) => s.file), ...(this.current ? [this.current.file] : [])];
    this.current = undefined;
    this.closedSegments.length = 0;
    for (const file of files) {
      if (keep) heldHere.delete(file);
      else this.remove(file);
    }
  }

  private nextFile(): string {
    return path.join(this.dir, `${this.prefix}${process.pid}~${this.instance}.${this.seq++}.spool`);
  }

  private open(): void {
    const file = this.nextFile();
    this.fd = fs.openSync(file, 'wx');
    heldHere.add(file);
    const header = Buffer.concat([MAGIC, this.fingerprint]);
    fs.writeSync(this.fd, header, 0, HEADER_BYTES, 0);
    this.current = { file, end: this.written };
    this.currentBytes = 0;
  }

  private rotate(): void {
    fs.closeSync(this.fd!);
    this.fd = undefined;
    if (this.settledCount >= this.current!.end) this.remove(this.current!.file);
    else this.closedSegments.push(this.current!);
    this.current = undefined;
  }

  private remove(file: string): void {
    heldHere.delete(file);
    try {
      fs.rmSync(file, { force: true });
    } catch (err) {
      this.options.logger.warn({ file, err: errorMessage(err) }, 'cannot delete a settled spool segment');
    }
  }
}
