import type { ClickHouseClient } from '@clickhouse/client';
import { histogram } from '../../common/metrics.ts';
import { clickhouseError, identifier } from '../../common/clickhouse.ts';
import type { AnalyticsTable } from './schema.ts';

export type Row = Record<string, unknown>;
export type RowsByTable = Partial<Record<AnalyticsTable, Row[]>>;

const insertRows = () => histogram({
  name: 'eddy_analytics_insert_rows', help: 'Rows per ClickHouse insert', labelNames: ['table'],
  buckets: [1, 10, 100, 500, 1000, 5000, 10000, 50000],
});

interface Waiter { resolve(): void; reject(err: unknown): void }

/**
 * Batches rows from concurrent handler calls into few ClickHouse inserts (ClickHouse wants
 * thousands of rows per insert, not one). A call opens a ticket, later submits its rows and
 * waits until the insert that carries them is acknowledged; only then does the handler return
 * and the runner commit the offsets. A batch is flushed when it holds `maxRows`, when every open
 * ticket has submitted (no more rows are on the way) and it holds at least `minRows`, or `maxMs`
 * after its first row, whichever comes first. `minRows` is what keeps a trickle of
 * events from becoming a trickle of inserts: each insert is a part on disk that ClickHouse merges
 * later, and at 400 events/s one insert per consumer batch (50–120 inserts/s of 3–8 rows) cost
 * ClickHouse about a core (BENCHMARKS.md, "Analytics inserts"). `maxMs` bounds what that costs in
 * freshness: the feature processor's next batch and the trainer's wait for its examples both
 * follow the insert (docs/analytics.md). A failed insert fails every waiter
 * (retriable when ClickHouse is away): they retry, and the duplicates a partial success may leave
 * collapse in the ReplacingMergeTree.
 */
export class BatchInserter {
  private pending = new Map<AnalyticsTable, Row[]>();
  private pendingRows = 0;
  private waiters: Waiter[] = [];
  private openTickets = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Inserts done and rows written, for benchmarks and logs. */
  readonly stats = { inserts: 0, rows: 0 };

  constructor(
    private readonly client: ClickHouseClient,
    private readonly database: string,
    private readonly opts: { maxRows: number; maxMs: number; minRows?: number },
  ) {
    identifier(database);
  }

  /** Announces that a call will submit rows soon, so a flush waits for it (up to maxMs). */
  open(): { submit(rows: RowsByTable): Promise<void>; cancel(): void } {
    this.openTickets++;
    let done = false;
    const close = () => {
      if (done) return false;
      done = true;
      this.openTickets--;
      return true;
    };
    return {
      submit: (rows) => {
        close();
        return this.add(rows);
      },
      cancel: () => {
        if (close()) this.maybeFlush();
      },
    };
  }

  /** Adds rows and resolves once ClickHouse acknowledged the insert that carries them. */
  add(rows: RowsByTable): Promise<void> {
    let count = 0;
    for (const [table, list] of Object.entries(rows) as Array<[AnalyticsTable, Row[]]>) {
      if (list.length === 0) continue;
      let bucket = this.pending.get(table);
      if (!bucket) this.pending.set(table, (bucket = []));
      for (const r of list) bucket.push(r);
      count += list.length;
    }
    if (count === 0) {
      this.maybeFlush();
      return Promise.resolve();
    }
    this.pendingRows += count;
    const done = new Promise<void>((resolve, reject) => this.waiters.push({ resolve, reject }));
    this.timer ??= setTimeout(() => void this.flush(), this.opts.maxMs);
    this.maybeFlush();
    return done;
  }

  private maybeFlush(): void {
    if (this.pendingRows === 0) return;
    if (this.pendingRows >= this.opts.maxRows || (this.openTickets === 0 && this.pendingRows >= (this.opts.minRows ?? 1))) void this.flush();
  }

  private async flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const batch = this.pending;
    const waiters = this.waiters;
    this.pending = new Map();
    this.pendingRows = 0;
    this.waiters = [];
    if (waiters.length === 0) return;
    try {
      await Promise.all([...batch].map(async ([table, values]) => {
        try {
          await this.client.insert({ table: `${this.database}.${table}`, values, format: 'JSONEachRow' });
        } catch (err) {
          throw clickhouseError(err, `inserting ${values.length} rows into ${this.database}.${table}`);
        }
        this.stats.inserts++;
        this.stats.rows += values.length;
        insertRows().observe({ table }, values.length);
      }));
      for (const w of waiters) w.resolve();
    } catch (err) {
      for (const w of waiters) w.reject(err);
    }
  }
}
