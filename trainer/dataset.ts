import { createHash } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { clickhouseError, identifier, quoteString } from '../processors/analytics/clickhouse.ts';
import { hashString } from '../featurizer/text.ts';

/**
 * A client's training set, rebuilt from the analytics log (contract 1 tables `examples` and
 * `label_changes`): the log is the truth, the training set is a projection of it.
 */
export interface TrainingExample {
  exampleId: string;
  text: string;
  label: string;
  source: string;
  metadata: Record<string, string>;
  /** Real-time features as the feature processor recorded them with the example (no train/serve skew). */
  features: Record<string, number>;
  occurredAtMs: number;
}

export interface LabelDefinition {
  label: string;
  description: string;
  keywords: string[];
}

export interface ExampleRow {
  event_id: string;
  example_id: string;
  text: string;
  label: string;
  source: string;
  metadata: string;
  features: string;
  occurred_at_ms: number | string;
}

export interface LabelChangeRow {
  event_id: string;
  change: string;
  label: string;
  previous_label: string;
  description: string;
  keywords: string[];
  occurred_at_ms: number | string;
}

export interface TrainingSet {
  clientId: string;
  /** Final label set, sorted (the model's output order). */
  labels: string[];
  /** One per example id (latest wins), labels resolved through renames, removed labels dropped. */
  examples: TrainingExample[];
  /** Label definitions (name + description + keywords) as extra training examples. */
  definitions: LabelDefinition[];
  /** sha256 over the canonical training set: same data, same hash (recorded in the artifact). */
  sha256: string;
}

export type Split = 'train' | 'validation' | 'test';

/**
 * Deterministic split by a hash of the example id: 80% train, 10% validation, 10% test. An
 * example stays in its split across retrains (a test example never leaks into a later training),
 * and the live model and the candidate are scored on exactly the same test examples.
 */
export function splitOf(exampleId: string): Split {
  const bucket = hashString(`eddy-split:${exampleId}`) % 100;
  return bucket < 80 ? 'train' : bucket < 90 ? 'validation' : 'test';
}

function parseJsonObject<T>(s: string): Record<string, T> {
  if (!s) return {};
  try {
    const v = JSON.parse(s) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, T>) : {};
  } catch {
    return {};
  }
}

/**
 * Folds the log into a training set (pure; unit-tested without ClickHouse):
 * - duplicates of one event_id (at-least-once delivery) count once;
 * - per example_id the latest event wins (a correction replaces an assignment);
 * - label changes are applied in order: ADDED/UPDATED (re)define a label, RENAMED moves the
 *   definition and every example of the old name to the new one, REMOVED drops the label and its
 *   examples (a later ADDED brings the name back, with the examples labelled after that);
 * - a label never mentioned by a change but used by examples joins the set (assignments may
 *   precede the team's definition event).
 */
export function buildTrainingSet(clientId: string, exampleRows: ExampleRow[], changeRows: LabelChangeRow[]): TrainingSet {
  const byTime = <R extends { occurred_at_ms: number | string; event_id: string }>(rows: R[]): R[] => {
    const seen = new Set<string>();
    return rows
      .filter((r) => (seen.has(r.event_id) ? false : (seen.add(r.event_id), true)))
      .sort((a, b) => Number(a.occurred_at_ms) - Number(b.occurred_at_ms) || (a.event_id < b.event_id ? -1 : a.event_id > b.event_id ? 1 : 0));
  };
  const changes = byTime(changeRows);
  const definitions = new Map<string, LabelDefinition>();
  const removedAt = new Map<string, number>();
  // old name -> [new name, time of the rename]
  const renames: Array<{ from: string; to: string; at: number }> = [];
  for (const c of changes) {
    const at = Number(c.occurred_at_ms);
    const def = { label: c.label, description: c.description, keywords: c.keywords ?? [] };
    switch (c.change) {
      case 'ADDED':
      case 'UPDATED':
        definitions.set(c.label, def);
        removedAt.delete(c.label);
        break;
      case 'RENAMED':
        if (c.previous_label) {
          const previous = definitions.get(c.previous_label);
          definitions.delete(c.previous_label);
          removedAt.set(c.previous_label, at);
          renames.push({ from: c.previous_label, to: c.label, at });
          definitions.set(c.label, { ...def, description: def.description || previous?.description || '', keywords: def.keywords.length ? def.keywords : previous?.keywords ?? [] });
        } else {
          definitions.set(c.label, def);
        }
        removedAt.delete(c.label);
        break;
      case 'REMOVED':
        definitions.delete(c.label);
        removedAt.set(c.label, at);
        break;
      default:
        break;
    }
  }
  /** The name an example labelled `label` at time `at` carries now, or undefined if that label was removed. */
  const resolve = (label: string, at: number): string | undefined => {
    let name = label;
    let t = at;
    for (const r of renames) {
      if (r.from === name && r.at >= t) {
        name = r.to;
        t = r.at;
      }
    }
    const removed = removedAt.get(name);
    if (removed !== undefined && removed >= t) return undefined;
    return name;
  };
  const latest = new Map<string, ExampleRow>();
  for (const row of byTime(exampleRows)) latest.set(row.example_id, row);
  const examples: TrainingExample[] = [];
  for (const row of latest.values()) {
    const at = Number(row.occurred_at_ms);
    const label = resolve(row.label, at);
    if (label === undefined) continue;
    examples.push({
      exampleId: row.example_id, text: row.text, label, source: row.source, occurredAtMs: at,
      metadata: parseJsonObject<string>(row.metadata), features: parseJsonObject<number>(row.features),
    });
  }
  examples.sort((a, b) => (a.exampleId < b.exampleId ? -1 : a.exampleId > b.exampleId ? 1 : 0));
  const labelSet = new Set<string>(definitions.keys());
  for (const e of examples) labelSet.add(e.label);
  const labels = [...labelSet].sort();
  const defs = labels.flatMap((l) => {
    const d = definitions.get(l);
    return d ? [d] : [];
  });
  const hash = createHash('sha256');
  hash.update(JSON.stringify(labels));
  for (const d of defs) hash.update(JSON.stringify([d.label, d.description, d.keywords]));
  for (const e of examples) hash.update(JSON.stringify([e.exampleId, e.text, e.label, e.metadata, e.features]));
  return { clientId, labels, examples, definitions: defs, sha256: hash.digest('hex') };
}

/** Reads a client's rows from ClickHouse (values never spliced unescaped; identifiers validated). */
export async function loadTrainingSet(client: ClickHouseClient, database: string, clientId: string): Promise<TrainingSet> {
  const db = identifier(database);
  const id = quoteString(clientId);
  try {
    const [examples, changes] = await Promise.all([
      client.query({
        query: `SELECT event_id, example_id, text, label, source, metadata, features, occurred_at_ms FROM ${db}.examples WHERE client_id = ${id}`,
        format: 'JSONEachRow',
      }).then((r) => r.json<ExampleRow>()),
      client.query({
        query: `SELECT event_id, change, label, previous_label, description, keywords, occurred_at_ms FROM ${db}.label_changes WHERE client_id = ${id}`,
        format: 'JSONEachRow',
      }).then((r) => r.json<LabelChangeRow>()),
    ]);
    return buildTrainingSet(clientId, examples, changes);
  } catch (err) {
    throw clickhouseError(err, `reading the training set of ${clientId}`);
  }
}

/** The text a label definition trains as: its name, description and keywords. */
export function definitionText(d: LabelDefinition): string {
  return [d.label.replace(/[-_]+/g, ' '), d.description, d.keywords.join(' ')].filter(Boolean).join('. ');
}
