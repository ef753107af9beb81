import { createHash } from 'node:crypto';
import type { ClickHouseClient } from '@clickhouse/client';
import { clickhouseError, identifier, quoteString } from '../common/clickhouse.ts';
import { hashString } from '../featurizer/text.ts';
import { DependencyUnavailableError } from '../common/errors.ts';
import { pollUntil } from '../common/retry.ts';
import type { Logger } from '../common/log.ts';
import type { RetrainRequested } from '../schemas/events.ts';

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
  /**
   * False when the set was read before ClickHouse held everything the request named (the
   * watermark wait timed out); absent means complete. Reported on ModelPublished/ModelRejected.
   */
  dataComplete?: boolean;
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

/** The newest events a retrain request's author had seen (RetrainRequested.dataAsOf). */
export type DataWatermark = NonNullable<RetrainRequested['dataAsOf']>;

/**
 * The watermark of coalesced requests of one client: per table, the newest event id any of them
 * names (requests arrive in log order, so a later non-null id is newer).
 */
export function latestWatermark(requests: ReadonlyArray<Pick<RetrainRequested, 'dataAsOf'>>): DataWatermark | null {
  let examplesEventId: string | null = null;
  let labelChangesEventId: string | null = null;
  for (const r of requests) {
    examplesEventId = r.dataAsOf?.examplesEventId ?? examplesEventId;
    labelChangesEventId = r.dataAsOf?.labelChangesEventId ?? labelChangesEventId;
  }
  return examplesEventId === null && labelChangesEventId === null ? null : { examplesEventId, labelChangesEventId };
}

/** What a caller passes to wait for a request's data: the watermark, and its consumer's liveness hooks. */
export interface DataWait {
  watermark: DataWatermark | null;
  /** Called between polls: a wait longer than the Kafka session must keep the consumer in its group. */
  heartbeat?: () => Promise<void>;
  /** False once the consumer stops: the wait ends with a retriable error (the request is redelivered). */
  isRunning?: () => boolean;
}

export interface WatermarkWait extends Partial<DataWait> {
  /** Longest wait for the watermark (EDDY_TRAINER_DATA_WAIT_MS); then the set is read as it is. */
  waitMs: number;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** First poll delay, doubled per poll up to 2 s. */
  firstDelayMs?: number;
}

/**
 * Waits until the events a watermark names are visible in ClickHouse (`examples`,
 * `label_changes`). The trigger decides on events it has seen; the analytics and feature
 * processors write them to ClickHouse a moment later, in partition order, so once the newest
 * named event is there, everything before it of that client is too. Bounded: a stopped
 * processor delays training by at most `waitMs`, then the set is read as it is (warning logged).
 * Returns whether the watermark was reached.
 */
export async function waitForWatermark(client: ClickHouseClient, database: string, clientId: string, wait: WatermarkWait): Promise<boolean> {
  const w = wait.watermark;
  if (!w) return true;
  const db = identifier(database);
  const id = quoteString(clientId);
  const pending: Array<{ table: string; eventId: string }> = [];
  if (w.examplesEventId) pending.push({ table: 'examples', eventId: w.examplesEventId });
  if (w.labelChangesEventId) pending.push({ table: 'label_changes', eventId: w.labelChangesEventId });
  const started = Date.now();
  let polls = 0;
  const reached = await pollUntil(async () => {
    if (polls++ > 0) {
      if (wait.isRunning && !wait.isRunning()) throw new DependencyUnavailableError('clickhouse', `stopped while waiting for the data of ${clientId}`);
      await wait.heartbeat?.().catch(() => undefined);
    }
    for (let i = pending.length - 1; i >= 0; i--) {
      const p = pending[i]!;
      let rows: Array<{ n: number | string }>;
      try {
        rows = await client.query({
          query: `SELECT count() AS n FROM ${db}.${p.table} WHERE client_id = ${id} AND event_id = ${quoteString(p.eventId)}`,
          format: 'JSONEachRow',
        }).then((r) => r.json<{ n: number | string }>());
      } catch (err) {
        throw clickhouseError(err, `waiting for the data of ${clientId}`);
      }
      if (Number(rows[0]?.n ?? 0) > 0) pending.splice(i, 1);
    }
    return pending.length === 0;
  }, { initialMs: wait.firstDelayMs ?? 100, maxMs: 2000, timeoutMs: wait.waitMs });
  const waitedMs = Date.now() - started;
  if (reached && polls > 1) wait.logger?.info({ clientId, waitedMs }, 'training data caught up with the request');
  if (!reached) {
    wait.logger?.warn({ clientId, waitedMs, missing: pending }, 'training data did not reach the request\'s watermark in time; training on what ClickHouse has (is the analytics/feature processor running?)');
  }
  return reached;
}

/**
 * Reads a client's rows from ClickHouse (values never spliced unescaped; identifiers validated),
 * after waiting (bounded) for the request's watermark when one is given.
 */
export async function loadTrainingSet(client: ClickHouseClient, database: string, clientId: string, wait?: WatermarkWait): Promise<TrainingSet> {
  const complete = wait ? await waitForWatermark(client, database, clientId, wait) : true;
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
    const set = buildTrainingSet(clientId, examples, changes);
    return complete ? set : { ...set, dataComplete: false };
  } catch (err) {
    throw clickhouseError(err, `reading the training set of ${clientId}`);
  }
}

/** The text a label definition trains as: its name, description and keywords. */
export function definitionText(d: LabelDefinition): string {
  return [d.label.replace(/[-_]+/g, ' '), d.description, d.keywords.join(' ')].filter(Boolean).join('. ');
}
