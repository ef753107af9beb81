import type { ClickHouseClient } from '@clickhouse/client';
import { clickhouseError, identifier, quoteString } from '../../common/clickhouse.ts';
import { errorMessage } from '../../common/errors.ts';

/**
 * The analytics log: one table per event type, plus views for analysts. Column names are a
 * contract (the trainer reads `examples` and `label_changes`); change them only additively.
 *
 * Why this shape:
 * - ReplacingMergeTree ordered by (client_id, event_id): a redelivered event is inserted again
 *   (at-least-once) but collapses with its twin at merge time; readers that need exact counts
 *   dedupe with FINAL or GROUP BY event_id (the views do).
 * - PARTITION BY toYYYYMM(occurred_at): monthly parts, cheap retention by DROP PARTITION.
 * - No Nullable, Map, DateTime64, LowCardinality or JSON types: ClickHouse 18.16 (Debian) lacks
 *   some and current releases keep all of these; absent values are '' or 0, maps are JSON strings.
 * - occurred_at (DateTime, seconds) for time functions, occurred_at_ms (UInt64) for exact order.
 * - kafka_partition/kafka_offset: where the row came from in the log (provenance, replay checks).
 */
const COMMON = `
  event_id String,
  client_id String,
  occurred_at DateTime,
  occurred_at_ms UInt64`;

const PROVENANCE = `
  kafka_partition UInt32,
  kafka_offset UInt64`;

const ENGINE = `ENGINE = ReplacingMergeTree PARTITION BY toYYYYMM(occurred_at) ORDER BY (client_id, event_id)`;

export const ANALYTICS_TABLES = {
  examples: `${COMMON},
  example_id String,
  text String,
  label String,
  source String,
  metadata String,
  prediction_id String,
  features String,${PROVENANCE}`,
  label_changes: `${COMMON},
  change String,
  label String,
  previous_label String,
  description String,
  keywords Array(String),${PROVENANCE}`,
  predictions: `${COMMON},
  request_id String,
  text String,
  metadata String,
  label String,
  score Float64,
  scores String,
  model_version String,
  variant String,
  latency_ms Float64,
  channel String,
  features_defaulted UInt8,${PROVENANCE}`,
  prediction_requests: `${COMMON},
  request_id String,
  text String,
  metadata String,${PROVENANCE}`,
  feedback: `${COMMON},
  request_id String,
  outcome String,
  correct_label String,
  actor String,${PROVENANCE}`,
  retrain_requests: `${COMMON},
  reason String,
  detail String,
  requested_by String,${PROVENANCE}`,
  model_events: `${COMMON},
  event_type String,
  model_version String,
  previous_version String,
  variant String,
  share Float64,
  pinned UInt8,
  stage String,
  reasons Array(String),
  detail String,
  actor String,
  artifact_uri String,
  artifact_sha256 String,
  featurizer String,
  labels Array(String),
  metrics String,
  training_examples UInt64,
  retrain_event_id String,${PROVENANCE}`,
  alerts: `${COMMON},
  kind String,
  metric String,
  label String,
  model_version String,
  current_value Float64,
  previous_value Float64,
  drop_percent Float64,
  support UInt64,
  alert_window String,
  segment String,${PROVENANCE}`,
  dead_letters: `${COMMON},
  source_topic String,
  source_partition UInt32,
  source_offset UInt64,
  consumer_group String,
  error_code String,
  reason String,
  message_key String,
  message_value_base64 String,${PROVENANCE}`,
} as const;

export type AnalyticsTable = keyof typeof ANALYTICS_TABLES;
export const ANALYTICS_TABLE_NAMES = Object.keys(ANALYTICS_TABLES) as AnalyticsTable[];

/**
 * Views for analysts. Each reads deduplicated rows (FINAL), so redelivered events never show up
 * twice. Written in the SQL subset ClickHouse 18.16 and current releases share: one UNION ALL
 * subquery instead of multi-way JOINs, `if` around divisions.
 */
function views(db: string): Record<string, string> {
  return {
    // Per client and day: examples, predictions, feedback, and accuracy (accepted / judged).
    client_daily_volume: `
SELECT client_id, day,
  sum(is_example) AS examples,
  sum(is_prediction) AS predictions,
  sum(is_feedback) AS feedback,
  sum(is_accepted) AS accepted,
  if(sum(is_feedback) = 0, 0, sum(is_accepted) / sum(is_feedback)) AS accuracy
FROM (
  SELECT client_id, toDate(occurred_at) AS day, toUInt64(1) AS is_example, toUInt64(0) AS is_prediction, toUInt64(0) AS is_feedback, toUInt64(0) AS is_accepted FROM ${db}.examples FINAL
  UNION ALL
  SELECT client_id, toDate(occurred_at) AS day, toUInt64(0) AS is_example, toUInt64(1) AS is_prediction, toUInt64(0) AS is_feedback, toUInt64(0) AS is_accepted FROM ${db}.predictions FINAL
  UNION ALL
  SELECT client_id, toDate(occurred_at) AS day, toUInt64(0) AS is_example, toUInt64(0) AS is_prediction, toUInt64(1) AS is_feedback, toUInt64(outcome = 'ACCEPTED') AS is_accepted FROM ${db}.feedback FINAL
)
GROUP BY client_id, day`,
    // Label distribution over time: examples per client, day and label (all sources).
    label_distribution_daily: `
SELECT client_id, toDate(occurred_at) AS day, label, count() AS examples
FROM ${db}.examples FINAL
GROUP BY client_id, day, label`,
    // The model lifecycle per client, one row per event, in order.
    model_version_history: `
SELECT client_id, occurred_at, occurred_at_ms, event_type, model_version, previous_version, variant, share,
  stage, reasons, detail, metrics, training_examples, retrain_event_id
FROM ${db}.model_events FINAL`,
  };
}

export const ANALYTICS_VIEW_NAMES = ['client_daily_volume', 'label_distribution_daily', 'model_version_history'] as const;

/**
 * Columns added to a table after it was first created, oldest first. `CREATE TABLE` above has
 * them already; a table made by an older build gets each missing one through ALTER (ClickHouse
 * 18.16 has no ADD COLUMN IF NOT EXISTS, so migrateAnalytics looks in system.columns first).
 */
export const ADDED_COLUMNS: ReadonlyArray<{ table: AnalyticsTable; column: string; type: string }> = [
  { table: 'alerts', column: 'segment', type: "String DEFAULT ''" },
];

/** The DDL `migrateAnalytics` runs, in order (exposed for docs and tests). */
export function analyticsDdl(database: string): string[] {
  const db = identifier(database);
  const statements = [`CREATE DATABASE IF NOT EXISTS ${db}`];
  for (const name of ANALYTICS_TABLE_NAMES) {
    statements.push(`CREATE TABLE IF NOT EXISTS ${db}.${name} (${ANALYTICS_TABLES[name]}\n) ${ENGINE}`);
  }
  for (const [name, select] of Object.entries(views(db))) {
    statements.push(`CREATE VIEW IF NOT EXISTS ${db}.${name} AS ${select}`);
  }
  return statements;
}

/**
 * Creates the database and every table and view if missing, then adds the columns of
 * ADDED_COLUMNS that a table made by an older build lacks. Idempotent and safe to run from several
 * processes at start: every CREATE is IF NOT EXISTS, and a column another process added between
 * our look and our ALTER counts as added.
 */
export async function migrateAnalytics(client: ClickHouseClient, database: string): Promise<void> {
  for (const query of analyticsDdl(database)) {
    try {
      await client.command({ query });
    } catch (err) {
      throw clickhouseError(err, `migrating ClickHouse database ${database}`);
    }
  }
  const db = identifier(database);
  for (const { table, column, type } of ADDED_COLUMNS) {
    try {
      const present = await client.query({
        query: `SELECT count() AS n FROM system.columns WHERE database = ${quoteString(database)} AND table = ${quoteString(table)} AND name = ${quoteString(column)}`,
        format: 'JSONEachRow',
      }).then((r) => r.json<{ n: number | string }>());
      if (Number(present[0]?.n ?? 0) > 0) continue;
      await client.command({ query: `ALTER TABLE ${db}.${identifier(table)} ADD COLUMN ${identifier(column)} ${type}` });
    } catch (err) {
      // 15 DUPLICATE_COLUMN / 44 ILLEGAL_COLUMN: a concurrent migration added it first.
      if (/\bCode: (15|44)\b|already exists/i.test(errorMessage(err))) continue;
      throw clickhouseError(err, `adding column ${table}.${column} in ClickHouse database ${database}`);
    }
  }
}
