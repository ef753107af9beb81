import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { EventName } from './events.ts';

/**
 * The event contracts at run time: where the Avro schemas are and how to read one. (The
 * TypeScript types in events.ts are generated from them by generate.ts, a development tool.)
 */
export const AVRO_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'avro');

/** The Avro schema of an event type, as the .avsc file says. */
export function loadSchema(name: EventName): object {
  return JSON.parse(fs.readFileSync(path.join(AVRO_DIR, `${name}.avsc`), 'utf8')) as object;
}

export * from './events.ts';
