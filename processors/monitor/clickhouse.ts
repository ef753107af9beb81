import type { ClickHouseClient } from '@clickhouse/client';
import { clickhouseError, identifier } from '../../common/clickhouse.ts';

/**
 * Live quality in ClickHouse, for analysts: the same join the monitor keeps in Redis (feedback
 * with the prediction it judges), over the analytics tables of processors/analytics/schema.ts.
 * Plain views (computed at query time, nothing to keep in sync), in SQL that ClickHouse 18.16 and
 * current releases both accept: subqueries joined with ANY INNER JOIN ... USING, no window
 * functions, divisions guarded with if().
 *
 *   quality_judgements  one row per judged prediction: client, day, version, predicted, observed
 *                       ('' when REJECTED), outcome; the first feedback on a request counts
 *   quality_daily       per client, day, model version and label: tp, fp, fn, precision, recall, f1
 */
export function qualityViewsDdl(database: string): Array<{ name: string; query: string }> {
  const db = identifier(database);
  return [
    {
      name: 'quality_judgements',
      query: `CREATE VIEW IF NOT EXISTS ${db}.quality_judgements AS
SELECT client_id, request_id, toDate(judged_at) AS day, judged_at, model_version, predicted,
  if(outcome = 'ACCEPTED', predicted, if(outcome = 'REASSIGNED', correct_label, '')) AS observed, outcome
FROM (
  SELECT client_id, request_id, min(occurred_at) AS judged_at, argMin(outcome, occurred_at_ms) AS outcome, argMin(correct_label, occurred_at_ms) AS correct_label
  FROM ${db}.feedback FINAL
  GROUP BY client_id, request_id
)
ANY INNER JOIN (
  SELECT client_id, request_id, any(label) AS predicted, any(if(model_version = '', 'baseline', model_version)) AS model_version
  FROM ${db}.predictions FINAL
  WHERE variant != 'SHADOW'
  GROUP BY client_id, request_id
) USING (client_id, request_id)`,
    },
    {
      name: 'quality_daily',
      query: `CREATE VIEW IF NOT EXISTS ${db}.quality_daily AS
SELECT client_id, day, model_version, label,
  sum(is_tp) AS tp, sum(is_fp) AS fp, sum(is_fn) AS fn,
  if(tp + fp = 0, 0, tp / (tp + fp)) AS precision,
  if(tp + fn = 0, 0, tp / (tp + fn)) AS recall,
  if(precision + recall = 0, 0, 2 * precision * recall / (precision + recall)) AS f1
FROM (
  SELECT client_id, day, model_version, predicted AS label, toUInt64(observed = predicted) AS is_tp, toUInt64(observed != predicted) AS is_fp, toUInt64(0) AS is_fn
  FROM ${db}.quality_judgements
  UNION ALL
  SELECT client_id, day, model_version, observed AS label, toUInt64(0) AS is_tp, toUInt64(0) AS is_fp, toUInt64(1) AS is_fn
  FROM ${db}.quality_judgements
  WHERE observed != '' AND observed != predicted
)
GROUP BY client_id, day, model_version, label`,
    },
  ];
}

/** Creates the quality views (idempotent); needs the analytics tables (migrateAnalytics) first. */
export async function migrateQualityViews(client: ClickHouseClient, database: string): Promise<void> {
  for (const v of qualityViewsDdl(database)) {
    try {
      await client.command({ query: v.query });
    } catch (err) {
      throw clickhouseError(err, `creating ClickHouse view ${database}.${v.name}`);
    }
  }
}
