import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomUUID } from 'node:crypto';
import { testConfig, waitFor } from './helpers.ts';
import { createClickHouse, type ClickHouseClient } from '../common/clickhouse.ts';
import { BatchInserter, type Row } from '../processors/analytics/inserter.ts';
import { migrateAnalytics } from '../processors/analytics/schema.ts';
import { count, dropDatabase } from './processors-support.ts';

const config = testConfig();
const db = config.clickhouseDatabase;
let ch: ClickHouseClient;

beforeAll(async () => {
  ch = createClickHouse(config);
  await migrateAnalytics(ch, db);
});

afterAll(async () => {
  await dropDatabase(ch, db);
  await ch.close();
});

function retrain(): Row {
  return { event_id: randomUUID(), client_id: 'c', occurred_at: 0, occurred_at_ms: 0, reason: 'MANUAL', detail: '', requested_by: 'x', kafka_partition: 0, kafka_offset: 0 };
}

describe('BatchInserter', () => {
  it('waits for every open ticket, but not beyond maxRows or maxMs', async () => {
    const inserter = new BatchInserter(ch, db, { maxRows: 5, maxMs: 300 });
    const a = inserter.open();
    const b = inserter.open();
    const aDone = a.submit({ retrain_requests: [retrain(), retrain()] });
    // b is still building its rows, so a's rows wait for them
    await b.submit({ retrain_requests: [retrain()] });
    await aDone;
    expect(inserter.stats).toEqual({ inserts: 1, rows: 3 }); // one insert carried both calls' rows
    expect(await count(ch, db, 'retrain_requests', false)).toBe(3);

    // maxRows: a full batch goes at once even though another ticket is open
    const c = inserter.open();
    const slow = inserter.open();
    await c.submit({ retrain_requests: Array.from({ length: 5 }, retrain) });
    expect(inserter.stats).toEqual({ inserts: 2, rows: 8 });

    // maxMs: rows do not wait forever for a ticket that never submits
    const d = inserter.open();
    await d.submit({ retrain_requests: [retrain()] });
    expect(inserter.stats).toEqual({ inserts: 3, rows: 9 });
    slow.cancel();
    await waitFor('all rows in ClickHouse', async () => (await count(ch, db, 'retrain_requests', false)) === 9);
  });

  it('lets a trickle of rows wait for minRows (or maxMs) instead of inserting each handler\'s few rows', async () => {
    const inserter = new BatchInserter(ch, db, { maxRows: 100, minRows: 10, maxMs: 60_000 });
    // Every ticket has submitted, but 2 rows are fewer than minRows: no insert yet.
    let firstDone = false;
    const first = inserter.open().submit({ retrain_requests: [retrain(), retrain()] }).then(() => { firstDone = true; });
    await new Promise((r) => setTimeout(r, 300));
    expect(inserter.stats.inserts).toBe(0);
    expect(firstDone).toBe(false);
    // The next handler's rows reach minRows: one insert carries both (long before maxMs).
    await inserter.open().submit({ retrain_requests: Array.from({ length: 8 }, retrain) });
    await first;
    expect(inserter.stats).toEqual({ inserts: 1, rows: 10 });
    // maxMs still bounds the wait of rows that never reach minRows.
    const short = new BatchInserter(ch, db, { maxRows: 100, minRows: 10, maxMs: 200 });
    await short.open().submit({ retrain_requests: [retrain()] });
    expect(short.stats).toEqual({ inserts: 1, rows: 1 });
    await waitFor('all rows in ClickHouse', async () => (await count(ch, db, 'retrain_requests', false)) >= 20);
  });

  it('fails every waiter with a retriable error when ClickHouse is unreachable', async () => {
    const dead = createClickHouse({ clickhouseUrl: 'http://127.0.0.1:9' }, { requestTimeoutMs: 2000 });
    const inserter = new BatchInserter(dead, db, { maxRows: 100, maxMs: 10 });
    const err = await inserter.add({ retrain_requests: [retrain()] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CLICKHOUSE_UNAVAILABLE', retriable: true });
    await dead.close();
  });

  it('refuses (not retriable) rows ClickHouse rejects', async () => {
    const inserter = new BatchInserter(ch, db, { maxRows: 100, maxMs: 10 });
    const err = await inserter.add({ retrain_requests: [{ ...retrain(), kafka_offset: 'not a number' }] }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'CLICKHOUSE_REJECTED', retriable: false });
  });
});
