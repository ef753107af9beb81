import type { EventHandler, EventRecord } from '../../streams/consumer.ts';
import type { TopicName } from '../../streams/topics.ts';
import type { ClickHouseClient } from '../../common/clickhouse.ts';
import type { BatchInserter, RowsByTable } from './inserter.ts';
import { analyticsRow } from './rows.ts';
import { migrateAnalytics } from './schema.ts';

/** Every topic but `examples`, whose rows the feature processor writes together with their features. */
export const ANALYTICS_TOPICS: readonly TopicName[] = [
  'labels', 'prediction-requests', 'predictions', 'feedback', 'retrain-requests', 'models', 'alerts', 'dead-letters',
];

/**
 * Writes every event into its ClickHouse table. Migrations run at start; rows of concurrent
 * partitions share inserts (BatchInserter); a call returns, and its offsets are committed, only
 * after ClickHouse acknowledged its rows. Redelivered events are inserted again and collapse by
 * (client_id, event_id) in the ReplacingMergeTree.
 */
export class AnalyticsProcessor implements EventHandler {
  constructor(
    private readonly client: ClickHouseClient,
    private readonly database: string,
    private readonly inserter: BatchInserter,
  ) {}

  async init(): Promise<void> {
    await migrateAnalytics(this.client, this.database);
  }

  async handle(records: EventRecord[]): Promise<void> {
    const ticket = this.inserter.open();
    const rows: RowsByTable = {};
    try {
      for (const r of records) {
        const out = analyticsRow(r);
        if (!out) continue;
        (rows[out.table] ??= []).push(out.row);
      }
    } catch (err) {
      ticket.cancel();
      throw err;
    }
    await ticket.submit(rows);
  }
}
