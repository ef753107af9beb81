import avro from 'avsc';
import { SchemaRegistry, COMPATIBILITY } from '@kafkajs/confluent-schema-registry';
import { EVENT_NAMES, loadSchema as readSchema, type EventName, type EventTypes } from '../schemas/index.ts';
import { DependencyUnavailableError, EddyError, InvalidEventError, errorMessage } from '../common/errors.ts';
import type { OutgoingMessage } from './client.ts';
import type { Logger } from '../common/log.ts';
import { retry } from '../common/retry.ts';

/**
 * Avro serde through a Confluent-compatible schema registry (Confluent wire format: magic byte 0,
 * 4-byte schema id, Avro binary).
 *
 * Subjects follow the RecordNameStrategy (`eddy.events.LabeledExample`): the models topic carries
 * four event types, and a subject per record lets each evolve on its own under BACKWARD
 * compatibility. Messages are decoded with the writer's schema (fetched by id, cached) and resolved
 * into this build's reader schema, so old events stay readable after a compatible change.
 */

export type DecodeFailureCode = 'UNDECODABLE' | 'UNKNOWN_SCHEMA' | 'UNEXPECTED_TYPE' | 'INVALID';

/** A message that can never be decoded, however often we retry: it goes to the dead letters. */
export class DecodeError extends EddyError {
  constructor(readonly failure: DecodeFailureCode, message: string, cause?: unknown) {
    super(failure, message, { retriable: false, cause });
    this.name = 'DecodeError';
  }
}

export type AnyEvent = { [N in EventName]: { name: N; value: EventTypes[N] } }[EventName];

export interface RegistryOptions {
  url: string;
  /** Attempts to reach the registry before start-up fails (bounded; default 5). */
  connectAttempts?: number;
  /** First retry delay in ms, doubled each attempt (default 250). */
  retryDelayMs?: number;
  logger?: Logger;
  /**
   * Subject names are `<subjectPrefix><EventName>` (default `eddy.events.`). Environments that
   * share a registry but evolve their schemas apart (and tests that must provoke a refusal without
   * touching the shared subjects) use their own prefix; decoding is by schema id and unaffected.
   */
  subjectPrefix?: string;
}

const MAGIC_BYTE = 0;
/** How long after an outage a "schema id not found" is retried instead of dead-lettered. */
const NOT_FOUND_GRACE_MS = 60_000;
const HEADER_BYTES = 5;

export function loadSchema(name: EventName): avro.Schema {
  return readSchema(name) as avro.Schema;
}

export const DEFAULT_SUBJECT_PREFIX = 'eddy.events.';

export function subjectOf(name: EventName, prefix = DEFAULT_SUBJECT_PREFIX): string {
  return `${prefix}${name}`;
}

function isNotFound(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { status?: number }).status === 404;
}

/**
 * Is this registry failure an outage (retry later) rather than an answer (bad request, conflict)?
 * mappersmith, under @kafkajs/confluent-schema-registry, reports network errors as HTTP 400 with
 * the socket error in the message, so the message is checked too.
 */
/**
 * Two processes registering a new subject at once both find it unconfigured and both set its
 * compatibility; the registry refuses the second (Apicurio: 409 "A rule named 'COMPATIBILITY'
 * already exists"). The subject is configured then, so registering again succeeds.
 */
function isConfigRace(err: unknown): boolean {
  const e = err as { status?: number; url?: string } | null;
  return typeof e === 'object' && e !== null && e.status === 409 && /\/config\//.test(String(e.url ?? '')) ;
}

function isOutage(err: unknown): boolean {
  const status = typeof err === 'object' && err !== null ? (err as { status?: number }).status : undefined;
  if (/ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EAI_AGAIN|socket hang up|timeout/i.test(errorMessage(err))) return true;
  return status === undefined || status >= 500 || status === 408 || status === 429;
}

/**
 * The error for an event that failed `type.isValid` (the cheap check, without a hook): checked
 * again with avsc's error hook, which walks every field, to name each one that does not fit.
 */
function refusal(name: EventName, type: avro.Type, value: unknown): InvalidEventError {
  const problems: string[] = [];
  const paths: string[] = [];
  type.isValid(value, {
    errorHook: (p: string[], v: unknown, t: avro.Type) => {
      const field = p.join('.') || '(root)';
      paths.push(field);
      problems.push(`${field}: expected ${describeType(t)}, got ${describeValue(v)}`);
    },
  });
  return new InvalidEventError(name, paths, problems.join('; ') || 'does not fit its schema');
}

export class EventCodec {
  private readonly readers = new Map<EventName, avro.Type>();
  /** Where {@link encode} writes an event before copying it out (grown for a larger event and kept: at most the largest event produced, which Kafka bounds by its message size). */
  private scratch = Buffer.allocUnsafeSlow(64 * 1024);
  private readonly writerIds = new Map<EventName, number>();
  /** schema id -> how to read it: the event name and a resolver from writer to reader schema. */
  private readonly byId = new Map<number, { name: EventName; read: (buf: Buffer) => unknown }>();
  private readonly knownNames = new Set<string>(EVENT_NAMES.map((n) => `eddy.events.${n}`));
  /** When a registry call last failed as an outage (0: never): see NOT_FOUND_GRACE_MS. */
  private lastOutageAt = 0;

  private constructor(readonly registry: SchemaRegistry, private readonly url: string, private readonly subjectPrefix: string) {
    for (const name of EVENT_NAMES) this.readers.set(name, avro.Type.forSchema(loadSchema(name)));
  }

  /**
   * Connects to the registry and registers every event schema under BACKWARD compatibility
   * (idempotent: an identical schema returns its existing id). Fails after bounded retries with a
   * message that says which registry could not be reached.
   */
  static async connect(opts: RegistryOptions): Promise<EventCodec> {
    const registry = new SchemaRegistry(
      { host: opts.url, retry: { retries: 0 } },
    );
    const codec = new EventCodec(registry, opts.url, opts.subjectPrefix ?? DEFAULT_SUBJECT_PREFIX);
    const attempts = opts.connectAttempts ?? 5;
    try {
      await retry(() => codec.registerAll(), {
        initialMs: opts.retryDelayMs ?? 250, maxMs: 30_000, attempts,
        retriable: (err) => isOutage(err) || isConfigRace(err),
        onRetry: (err, retryInMs, attempt) => opts.logger?.warn({ attempt, attempts, retryInMs, err: errorMessage(err) }, 'schema registry not reachable, retrying'),
      });
      return codec;
    } catch (err) {
      if (!isOutage(err) && !isConfigRace(err)) {
        throw new EddyError('SCHEMA_REGISTRATION_FAILED', `schema registry at ${opts.url} refused a schema: ${errorMessage(err)}`, { cause: err });
      }
      throw new DependencyUnavailableError(
        'schema_registry',
        `schema registry at ${opts.url} is not reachable after ${attempts} attempts (${errorMessage(err)}); is it running? try 'eddy stack status'`,
        err,
      );
    }
  }

  /**
   * Registers every event's schema, all subjects at once: one after the other they were a dozen
   * sequential registry round trips, the largest part of a process's connect time (a restarted
   * server answers that much later). Waits for all before reporting the first failure, so that a
   * retry never races a registration still in flight on the same subject.
   */
  private async registerAll(): Promise<void> {
    const results = await Promise.allSettled(EVENT_NAMES.filter((name) => !this.writerIds.has(name)).map(async (name) => {
      const { id } = await this.registry.register(
        { type: 'AVRO' as never, schema: JSON.stringify(loadSchema(name)) },
        { subject: subjectOf(name, this.subjectPrefix), compatibility: COMPATIBILITY.BACKWARD },
      );
      this.writerIds.set(name, id);
      this.byId.set(id, { name, read: this.readerFor(name, undefined) });
    }));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  schemaId(name: EventName): number {
    const id = this.writerIds.get(name);
    if (id === undefined) throw new EddyError('SCHEMA_NOT_REGISTERED', `no schema id for ${name}`);
    return id;
  }

  /**
   * Checks an event against its schema; throws InvalidEventError naming every bad field
   * (e.g. `invalid LabeledExample: text: expected string, got undefined`).
   */
  validate<N extends EventName>(name: N, value: EventTypes[N]): void {
    const type = this.readers.get(name)!;
    // The check without a hook is the cheap one (a hook makes avsc walk every field on its slow
    // path: ~1 µs more per event); the field-by-field report is for the refusal only.
    if (!type.isValid(value)) throw refusal(name, type, value);
    const clientId = (value as { clientId?: unknown }).clientId;
    if (typeof clientId === 'string' && clientId.length === 0) {
      throw new InvalidEventError(name, ['clientId'], 'clientId: must not be empty');
    }
  }

  /** Validates, then encodes in the Confluent wire format. */
  encode<N extends EventName>(name: N, value: EventTypes[N]): Buffer {
    this.validate(name, value);
    const type = this.readers.get(name)!;
    for (;;) {
      // Written after the header's room in a reused buffer, then copied out at its exact size (one
      // allocation, from Node's pool for small events): avsc's toBuffer plus a copy behind the
      // header cost two allocations and two copies, ~1 µs more per event.
      const end = type.encode(value, this.scratch, HEADER_BYTES);
      if (end > 0) {
        const out = Buffer.allocUnsafe(end);
        this.scratch.copy(out, HEADER_BYTES, HEADER_BYTES, end);
        out.writeUInt8(MAGIC_BYTE, 0);
        out.writeInt32BE(this.schemaId(name), 1);
        return out;
      }
      // Too small: avsc answered how many bytes were missing.
      this.scratch = Buffer.allocUnsafeSlow(Math.max(2 * this.scratch.length, this.scratch.length - end));
    }
  }

  /**
   * Decodes a message value. Throws DecodeError for what can never be decoded (garbage, unknown
   * schema id, a record type this build does not know) and DependencyUnavailableError when the
   * registry cannot be asked right now (retry later; the message is fine).
   */
  async decode(buf: Buffer | null): Promise<AnyEvent> {
    const known = this.decodeKnown(buf);
    if (known !== undefined) return known;
    return this.read(await this.lookup(buf!.readInt32BE(1)), buf!);
  }

  /**
   * {@link decode} without a promise for a message whose schema id this codec already knows
   * (nearly every message after the first of each type): the consumer's hot path. Returns
   * undefined when the id must first be fetched from the registry (then call {@link decode});
   * throws DecodeError as decode does.
   */
  decodeKnown(buf: Buffer | null): AnyEvent | undefined {
    if (!buf || buf.length < HEADER_BYTES) {
      throw new DecodeError('UNDECODABLE', `message of ${buf?.length ?? 0} bytes is shorter than the ${HEADER_BYTES}-byte Confluent header`);
    }
    if (buf.readUInt8(0) !== MAGIC_BYTE) {
      throw new DecodeError('UNDECODABLE', `magic byte is ${buf.readUInt8(0)}, expected ${MAGIC_BYTE} (not Confluent wire format)`);
    }
    const entry = this.byId.get(buf.readInt32BE(1));
    return entry ? this.read(entry, buf) : undefined;
  }

  private read(entry: { name: EventName; read: (buf: Buffer) => unknown }, buf: Buffer): AnyEvent {
    let value: unknown;
    try {
      value = entry.read(buf.subarray(HEADER_BYTES));
    } catch (err) {
      throw new DecodeError('UNDECODABLE', `Avro body does not match schema id ${buf.readInt32BE(1)} (${entry.name}): ${errorMessage(err)}`, err);
    }
    const clientId = (value as { clientId?: unknown }).clientId;
    if (typeof clientId !== 'string' || clientId.length === 0) {
      throw new DecodeError('INVALID', `${entry.name} has an empty clientId`);
    }
    return { name: entry.name, value } as AnyEvent;
  }

  private async lookup(id: number): Promise<{ name: EventName; read: (buf: Buffer) => unknown }> {
    let writer: avro.Type;
    try {
      writer = (await this.registry.getSchema(id)) as unknown as avro.Type;
    } catch (err) {
      if (!isOutage(err) && (isNotFound(err) || /not found/i.test(errorMessage(err)))) {
        // A registry that just came back may answer before it has reloaded its storage (Apicurio's
        // kafkasql replays a topic): right after an outage "not found" is not yet an answer.
        if (Date.now() - this.lastOutageAt < NOT_FOUND_GRACE_MS) {
          throw new DependencyUnavailableError('schema_registry', `schema id ${id} not found at ${this.url} within ${NOT_FOUND_GRACE_MS / 1000} s of the registry being unreachable (it may still be loading); retrying`, err);
        }
        throw new DecodeError('UNKNOWN_SCHEMA', `schema id ${id} is not known to the registry at ${this.url}`, err);
      }
      if (!isOutage(err)) throw new DecodeError('UNKNOWN_SCHEMA', `the registry at ${this.url} refused schema id ${id}: ${errorMessage(err)}`, err);
      this.lastOutageAt = Date.now();
      throw new DependencyUnavailableError('schema_registry', `cannot fetch schema id ${id} from ${this.url}: ${errorMessage(err)}`, err);
    }
    const fullName = (writer as { name?: string }).name ?? '';
    if (!this.knownNames.has(fullName)) {
      throw new DecodeError('UNEXPECTED_TYPE', `schema id ${id} is ${fullName || 'an unnamed schema'}, which is not an Eddy event`);
    }
    const name = fullName.slice('eddy.events.'.length) as EventName;
    const entry = { name, read: this.readerFor(name, writer) };
    this.byId.set(id, entry);
    return entry;
  }

  private readerFor(name: EventName, writer: avro.Type | undefined): (buf: Buffer) => unknown {
    const reader = this.readers.get(name)!;
    if (!writer || writer.equals(reader)) return (buf) => reader.fromBuffer(buf);
    let resolver: avro.Resolver;
    try {
      resolver = reader.createResolver(writer);
    } catch (err) {
      return () => {
        throw new DecodeError('UNEXPECTED_TYPE', `writer schema of ${name} cannot be read by this build's schema: ${errorMessage(err)}`, err);
      };
    }
    return (buf) => reader.fromBuffer(buf, resolver);
  }
}

function describeType(t: avro.Type): string {
  const name = t.typeName;
  if (name === 'enum') return `one of ${(t as avro.types.EnumType).symbols.join('|')}`;
  if (name === 'record') return `a ${t.name ?? 'record'}`;
  if (name === 'union:unwrapped' || name === 'union:wrapped') {
    return (t as avro.types.UnwrappedUnionType).types.map((x) => x.typeName).join(' or ');
  }
  return name;
}

function describeValue(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'string') return `string ${JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v)}`;
  if (typeof v === 'object') return Array.isArray(v) ? 'an array' : 'an object';
  return `${typeof v} ${String(v)}`;
}

/**
 * Events of one type written back to back into one buffer as Kafka messages ready to send: the
 * key (the event's clientId) and the Confluent-framed Avro value, whose schema id is stamped in
 * later by whoever holds the registry connection ({@link framedMessages}). The prediction server's
 * request thread writes PredictionMade this way and transfers the buffer to its publisher thread:
 * one memory move per batch instead of a structured clone of every event object (measured here:
 * ~20 µs per PredictionMade cloned, ~3 µs encoded), and the thread decodes nothing.
 *
 * Layout per record: u32 key length, key (UTF-8), u32 value length, value (magic byte, 4 bytes
 * of schema id, Avro binary).
 */
export interface FramedBatch {
  buffer: ArrayBuffer;
  /** Bytes used in `buffer`. */
  bytes: number;
  count: number;
}

export class FramedEventWriter {
  private readonly type: avro.Type;
  private buf: Buffer;
  private pos = 0;
  private n = 0;
  /** Where {@link unsynced} last stopped. */
  private syncedPos = 0;
  private syncedN = 0;

  constructor(readonly name: EventName, private readonly chunkBytes = 128 * 1024) {
    this.type = avro.Type.forSchema(loadSchema(name));
    this.buf = Buffer.allocUnsafeSlow(chunkBytes);
  }

  get count(): number {
    return this.n;
  }

  /**
   * Appends one event; throws InvalidEventError (nothing written) when it does not fit the schema.
   * `isValid` without a hook is the cheap check; the hook's field-by-field report only for the refusal.
   */
  append(event: EventTypes[EventName] & { clientId: string }): void {
    if (!this.type.isValid(event)) throw refusal(this.name, this.type, event);
    const key = event.clientId;
    for (;;) {
      const start = this.pos;
      // A key of n UTF-16 units takes at most 3n bytes of UTF-8.
      if (start + 8 + 3 * key.length + HEADER_BYTES + 64 <= this.buf.length) {
        const keyBytes = this.buf.write(key, start + 4, 'utf8');
        this.buf.writeUInt32BE(keyBytes, start);
        const valueStart = start + 4 + keyBytes + 4;
        this.buf.writeUInt8(MAGIC_BYTE, valueStart);
        const end = this.type.encode(event, this.buf, valueStart + HEADER_BYTES);
        if (end > 0) {
          this.buf.writeUInt32BE(end - valueStart, valueStart - 4);
          this.pos = end;
          this.n++;
          return;
        }
      }
      this.grow();
    }
  }

  /** The records written so far (their buffer is handed over: transfer it), and a fresh buffer for the next. */
  take(): FramedBatch | undefined {
    if (this.n === 0) return undefined;
    const batch = { buffer: this.buf.buffer as ArrayBuffer, bytes: this.pos, count: this.n };
    this.buf = Buffer.allocUnsafeSlow(this.chunkBytes);
    this.pos = 0;
    this.n = 0;
    this.syncedPos = 0;
    this.syncedN = 0;
    return batch;
  }

  /**
   * The records appended since the last call (or since `take`), as a view that is valid until the
   * next `append`: the prediction server writes them to its spool before it answers, then hands the
   * whole batch over with `take`. `reset` also forgets them (a writer that is only a spool encoder).
   */
  unsynced(reset = false): { bytes: Buffer; count: number } | undefined {
    if (this.pos === this.syncedPos) return undefined;
    const out = { bytes: this.buf.subarray(this.syncedPos, this.pos), count: this.n - this.syncedN };
    if (reset) {
      this.pos = this.n = this.syncedPos = this.syncedN = 0;
    } else {
      this.syncedPos = this.pos;
      this.syncedN = this.n;
    }
    return out;
  }

  private grow(): void {
    const bigger = Buffer.allocUnsafeSlow(this.buf.length * 2);
    this.buf.copy(bigger, 0, 0, this.pos);
    this.buf = bigger;
  }
}

/** The Kafka messages of a {@link FramedBatch}, with `schemaId` stamped into each value (views of the batch, not copies). */
export function framedMessages(batch: FramedBatch, schemaId: number, headers: Record<string, string>): OutgoingMessage[] {
  const buf = Buffer.from(batch.buffer, 0, batch.bytes);
  const out: OutgoingMessage[] = new Array(batch.count);
  let pos = 0;
  for (let i = 0; i < batch.count; i++) {
    const keyBytes = buf.readUInt32BE(pos);
    const key = buf.subarray(pos + 4, pos + 4 + keyBytes);
    pos += 4 + keyBytes;
    const valueBytes = buf.readUInt32BE(pos);
    const value = buf.subarray(pos + 4, pos + 4 + valueBytes);
    value.writeInt32BE(schemaId, 1);
    pos += 4 + valueBytes;
    out[i] = { key, value, headers };
  }
  return out;
}
