import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import avro from 'avsc';
import { COMPATIBILITY, SchemaRegistry } from '@kafkajs/confluent-schema-registry';
import { loadConfig } from '../common/config.ts';
import { AVRO_DIR } from '../schemas/index.ts';
import { GENERATED_FILE, generateTypes, listSchemaFiles } from '../schemas/generate.ts';
import { EVENT_NAMES } from '../schemas/events.ts';
import { EventCodec, subjectOf } from '../streams/codec.ts';
import { TOPIC_OF_EVENT } from '../streams/topics.ts';

const config = loadConfig();

describe('event contracts', () => {
  it('the committed TypeScript types are generated from the current schemas', () => {
    // Fails when a schema changed without `npm run schemas:generate`: the types follow the schemas.
    expect(fs.readFileSync(GENERATED_FILE, 'utf8')).toBe(generateTypes());
  });

  it('every event carries eventId, clientId and occurredAt (millis) and belongs to a topic', () => {
    expect(listSchemaFiles().length).toBe(EVENT_NAMES.length);
    for (const file of listSchemaFiles()) {
      const schema = JSON.parse(fs.readFileSync(path.join(AVRO_DIR, file), 'utf8'));
      const fields = Object.fromEntries(schema.fields.map((f: { name: string; type: unknown }) => [f.name, f.type]));
      expect(schema.namespace, file).toBe('eddy.events');
      expect(fields.eventId, file).toBe('string');
      expect(fields.clientId, file).toBe('string');
      expect(fields.occurredAt, file).toEqual({ type: 'long', logicalType: 'timestamp-millis' });
      expect(TOPIC_OF_EVENT[schema.name as keyof typeof TOPIC_OF_EVENT], file).toBeDefined();
    }
  });
});

describe('schema registry (real Apicurio, Confluent API)', () => {
  it('registers every subject with BACKWARD compatibility, idempotently', async () => {
    const a = await EventCodec.connect({ url: config.schemaRegistryUrl });
    const b = await EventCodec.connect({ url: config.schemaRegistryUrl });
    for (const name of EVENT_NAMES) expect(b.schemaId(name)).toBe(a.schemaId(name));
    const res = await fetch(`${config.schemaRegistryUrl}/config/${subjectOf('LabeledExample')}`);
    expect(await res.json()).toMatchObject({ compatibilityLevel: 'BACKWARD' });
  });

  it('accepts a compatible evolution and refuses an incompatible one with a clear error', async () => {
    const registry = new SchemaRegistry({ host: config.schemaRegistryUrl, retry: { retries: 0 } });
    const subject = `eddy.test.Evolution${randomBytes(4).toString('hex')}`;
    const v1 = { type: 'record', name: 'Evolution', namespace: 'eddy.test', fields: [{ name: 'clientId', type: 'string' }] };
    const v2 = { ...v1, fields: [...v1.fields, { name: 'note', type: 'string', default: '' }] };
    const bad = { ...v1, fields: [...v1.fields, { name: 'required', type: 'int' }] };
    const opts = { subject };
    const first = await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(v1) }, opts);
    const second = await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(v2) }, opts);
    expect(second.id).not.toBe(first.id);
    const refused = registry.register({ type: 'AVRO' as never, schema: JSON.stringify(bad) }, opts);
    await expect(refused).rejects.toThrow(/Incompatible|incompatib/i);
    await expect(refused).rejects.toThrow(/required/);
    await fetch(`${config.schemaRegistryUrl}/subjects/${subject}`, { method: 'DELETE' });
  });

  it('reads an event written with the previous schema: the fields added since then take their defaults', async () => {
    const codec = await EventCodec.connect({ url: config.schemaRegistryUrl });
    const registry = new SchemaRegistry({ host: config.schemaRegistryUrl, retry: { retries: 0 } });
    const current = JSON.parse(fs.readFileSync(path.join(AVRO_DIR, 'LabeledExample.avsc'), 'utf8'));
    // The schema as it was before `metadata` and `predictionId` were added (both with defaults).
    const previous = { ...current, fields: current.fields.filter((f: { name: string }) => f.name !== 'metadata' && f.name !== 'predictionId') };
    const subject = `eddy.test.Previous${randomBytes(4).toString('hex')}`;
    try {
      const { id } = await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(previous) }, { subject });
      expect(id).not.toBe(codec.schemaId('LabeledExample'));
      const old = { eventId: 'e1', clientId: 'acme', occurredAt: 1_700_000_000_000, exampleId: 'x1', text: 'printer on floor 3 is jammed', label: 'it', source: 'ASSIGNMENT' };
      const body = avro.Type.forSchema(previous).toBuffer(old);
      const header = Buffer.alloc(5);
      header.writeInt32BE(id, 1);
      const decoded = await codec.decode(Buffer.concat([header, body]));
      expect(decoded).toEqual({ name: 'LabeledExample', value: { ...old, metadata: {}, predictionId: null } });
    } finally {
      await fetch(`${config.schemaRegistryUrl}/subjects/${subject}`, { method: 'DELETE' });
    }
  });

  it('encodes in the Confluent wire format (magic byte, schema id, the Avro body), events far larger than its reused buffer too, each in a buffer of its own', async () => {
    const codec = await EventCodec.connect({ url: config.schemaRegistryUrl });
    const type = avro.Type.forSchema(JSON.parse(fs.readFileSync(path.join(AVRO_DIR, 'LabeledExample.avsc'), 'utf8')));
    const event = (text: string) => ({ eventId: randomBytes(8).toString('hex'), clientId: 'acme', occurredAt: 1_700_000_000_000, exampleId: 'x', text, label: 'it', source: 'ASSIGNMENT' as const, metadata: { requester: 'ann' }, predictionId: null });
    const header = Buffer.alloc(5);
    header.writeInt32BE(codec.schemaId('LabeledExample'), 1);
    const events = [event('short'), event('ü€'.repeat(150_000)), event('after the large one'), event('x'.repeat(1_000_000))];
    const encoded = events.map((e) => codec.encode('LabeledExample', e));
    for (const [i, e] of events.entries()) {
      expect(encoded[i]!.equals(Buffer.concat([header, type.toBuffer(e)])), `event ${i}`).toBe(true);
      expect(await codec.decode(encoded[i]!)).toEqual({ name: 'LabeledExample', value: e });
    }
  });

  it('refuses to start with SCHEMA_REGISTRATION_FAILED when the registry refuses a schema of this build', async () => {
    const registry = new SchemaRegistry({ host: config.schemaRegistryUrl, retry: { retries: 0 } });
    // A private subject namespace, so the shared subjects are never touched.
    const prefix = `eddy.test.refuse${randomBytes(4).toString('hex')}.`;
    const current = JSON.parse(fs.readFileSync(path.join(AVRO_DIR, 'LabeledExample.avsc'), 'utf8'));
    // Data written as int cannot be read as this build's string: BACKWARD refuses this build's schema.
    const earlier = { ...current, fields: current.fields.map((f: { name: string }) => (f.name === 'text' ? { ...f, type: 'int' } : f)) };
    try {
      await registry.register({ type: 'AVRO' as never, schema: JSON.stringify(earlier) }, { subject: `${prefix}LabeledExample`, compatibility: COMPATIBILITY.BACKWARD });
      const error = await EventCodec.connect({ url: config.schemaRegistryUrl, subjectPrefix: prefix, connectAttempts: 2, retryDelayMs: 50 }).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: 'SCHEMA_REGISTRATION_FAILED' });
      expect((error as { retriable?: boolean }).retriable).not.toBe(true);
      expect((error as Error).message).toMatch(/refused a schema/);
    } finally {
      const subjects = (await (await fetch(`${config.schemaRegistryUrl}/subjects`)).json()) as string[];
      for (const s of subjects.filter((x) => x.startsWith(prefix))) await fetch(`${config.schemaRegistryUrl}/subjects/${s}`, { method: 'DELETE' });
    }
  });

  it('fails clearly after bounded retries when the registry is down at start', async () => {
    const url = 'http://127.0.0.1:1/apis/ccompat/v7';
    const started = Date.now();
    const error = await EventCodec.connect({ url, connectAttempts: 3, retryDelayMs: 50 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'SCHEMA_REGISTRY_UNAVAILABLE', retriable: true });
    expect((error as Error).message).toMatch(/schema registry at http:\/\/127\.0\.0\.1:1\/apis\/ccompat\/v7 is not reachable after 3 attempts/);
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});
