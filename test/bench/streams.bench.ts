/**
 * `npm run bench:streams`: Avro-through-registry produce and consume throughput against the local
 * broker, with plain JSON of the same events in the same process as the reference, run in a child
 * process (BENCH_ROUNDS of them, default 1, one after the other), with the CPU each costs per event.
 * Prints a markdown table; --write replaces the latest run's section of docs/benchmarks/streams.md
 * (the rest of that file, the client A/B and its analysis, stays).
 * The three-way Kafka client A/B that chose the client ran this file at commit 7eff294
 * (BENCH_KAFKA_CLIENTS=kafkajs,confluent,platformatic); its results are in docs/benchmarks/streams.md.
 */
import fs from 'node:fs';
import os from 'node:os';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { LabeledExample } from '../../schemas/events.ts';
import { loadConfig } from '../../common/config.ts';
import { connectStreams, deleteTopics, type AnyEvent } from '../../streams/index.ts';

const N = Number(process.env.BENCH_EVENTS ?? 200_000);
const BATCH = 2_000;
const IN_FLIGHT = 4;
const MAX_RECORDS_PER_CALL = 5000;
const ROUNDS = Array.from({ length: Number(process.env.BENCH_ROUNDS ?? 1) }, (_, i) => `round ${i + 1}`);

type Row = { what: string; count: number; ms: number; note: string; cpuMs?: number };

const words = 'printer laptop vpn password reset invoice payroll expense badge wifi outlook meeting room access license'.split(' ');
function makeEvent(i: number): LabeledExample {
  const text = Array.from({ length: 12 }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(' ');
  return {
    eventId: randomUUID(), clientId: `client-${i % 100}`, occurredAt: Date.now(), exampleId: `ex-${i}`, text,
    label: `team-${i % 8}`, source: 'ASSIGNMENT', metadata: { requester: `user-${i % 500}`, channel: 'email' }, predictionId: null,
  };
}

async function inBatches(total: number, send: (from: number, to: number) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < total) {
      const from = next;
      next = Math.min(total, next + BATCH);
      await send(from, next);
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
}

/** Child: one round, prints its rows as one JSON line. */
async function measure(): Promise<void> {
  const round = process.env.BENCH_ROUND ?? 'round 1';
  const prefix = `bench${Date.now().toString(36)}.`;
  const config = loadConfig({ ...process.env, EDDY_TOPIC_PREFIX: prefix, EDDY_PARTITIONS: '6', EDDY_LOG_LEVEL: 'warn' });
  const streams = await connectStreams(config, 'bench-streams');
  const events = Array.from({ length: N }, (_, i) => makeEvent(i));
  const rows: Row[] = [];
  const timed = async (what: string, note: string, fn: () => Promise<string | void>) => {
    const cpu = process.cpuUsage();
    const t = performance.now();
    const extra = await fn();
    const ms = performance.now() - t;
    const used = process.cpuUsage(cpu);
    rows.push({ what, count: N, ms, note: extra ? `${note}; ${extra}` : note, cpuMs: (used.user + used.system) / 1000 });
    process.stderr.write(`[${round}] ${what}: ${Math.round(N / (ms / 1000)).toLocaleString('en-US')} events/s\n`);
  };

  if (round === ROUNDS[0]) {
    // Serde alone (CPU cost per event, no broker): measured in the first round only.
    const serde = (what: string, fn: () => unknown) => {
      const t = performance.now();
      fn();
      rows.push({ what, count: N, ms: performance.now() - t, note: '' });
    };
    let bufs: Buffer[] = [];
    serde('Avro validate+encode (no broker)', () => { bufs = events.map((e) => streams.codec.encode('LabeledExample', e)); });
    const t = performance.now();
    for (const b of bufs) await streams.codec.decode(b);
    rows.push({ what: 'Avro decode (no broker)', count: N, ms: performance.now() - t, note: '' });
    let json: Buffer[] = [];
    serde('JSON stringify (no broker)', () => { json = events.map((e) => Buffer.from(JSON.stringify(e))); });
    serde('JSON parse (no broker)', () => { for (const b of json) JSON.parse(b.toString()); });
    rows.push({ what: `size per event: Avro ${bufs[0]!.length} B, JSON ${json[0]!.length} B`, count: 0, ms: 0, note: '' });
  }

  const sendNote = `batches of ${BATCH}, ${IN_FLIGHT} in flight, acks=all, idempotent`;
  await timed('produce Avro (EventProducer.sendAll)', sendNote, () =>
    inBatches(N, (a, b) => streams.producer.sendAll(events.slice(a, b).map((value) => ({ name: 'LabeledExample', value }) as AnyEvent))));
  const jsonTopic = `${prefix}json-reference`;
  await streams.withAdmin((admin) => admin.createTopics([{ topic: jsonTopic, numPartitions: 6, replicationFactor: 1 }]));
  await timed('produce JSON (same producer, raw messages)', sendNote, () =>
    inBatches(N, (a, b) => streams.producer.sendMessages([{ topic: jsonTopic, messages: events.slice(a, b).map((e) => ({ key: e.clientId, value: JSON.stringify(e) })) }])));

  // Consume: Avro through the ConsumerRunner (decode via registry, ordered handler, commit per call).
  await timed('consume Avro (ConsumerRunner: decode, handler, commit)', 'group join included', async () => {
    let seen = 0;
    let calls = 0;
    let largest = 0;
    let first = 0;
    const t0 = performance.now();
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const runner = streams.consumer({
      group: 'bench-avro', topics: ['examples'], partitionsConsumedConcurrently: 3, maxRecordsPerCall: MAX_RECORDS_PER_CALL,
      handler: {
        async handle(records) {
          if (seen === 0) first = performance.now();
          seen += records.length;
          calls++;
          largest = Math.max(largest, records.length);
          if (seen >= N) done();
        },
      },
    });
    await runner.start();
    await finished;
    await runner.stop();
    return `first record after ${Math.round(first - t0)} ms; ${Math.round(N / calls)} records per handler call on average, ${largest} at most (asked for up to ${MAX_RECORDS_PER_CALL})`;
  });
  // Consume JSON through the client seam directly: fetch, parse, commit per batch (no registry, no runner).
  await timed('consume JSON (raw client batches: parse, commit)', 'group join included', async () => {
    let seen = 0;
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    const consumer = streams.kafka.consumer({
      groupId: `${prefix}bench-json`, topics: [jsonTopic], fromBeginning: true, partitionsConsumedConcurrently: 3,
      maxBatchSize: MAX_RECORDS_PER_CALL, sessionTimeoutMs: 30_000, heartbeatIntervalMs: 3_000,
      fetchMinBytes: streams.config.kafka.fetchMinBytes, fetchMaxWaitMs: streams.config.kafka.fetchMaxWaitMs,
    });
    await consumer.start(async (batch) => {
      for (const m of batch.messages) JSON.parse(m.value!.toString());
      seen += batch.messages.length;
      await batch.commit((BigInt(batch.messages[batch.messages.length - 1]!.offset) + 1n).toString());
      if (seen >= N) done();
    });
    await finished;
    await consumer.stop();
  });

  await streams.close();
  await streams.withAdmin(async (admin) => {
    await deleteTopics(admin, streams.topics);
    await admin.deleteTopics([jsonTopic]);
    await admin.deleteGroups([`${prefix}bench-avro`, `${prefix}bench-json`]).catch(() => undefined);
  });
  process.stdout.write(JSON.stringify(rows) + '\n');
  process.exit(0);
}

async function main(): Promise<void> {
  const versions: Record<string, string> = {};
  for (const name of ['@platformatic/kafka']) {
    try {
      versions[name] = (JSON.parse(fs.readFileSync(`node_modules/${name}/package.json`, 'utf8')) as { version: string }).version;
    } catch { /* not installed */ }
  }
  const byRound = new Map<string, Row[]>();
  const loadStart = os.loadavg().map((x) => x.toFixed(1)).join(' ');
  for (const round of ROUNDS) {
    const child = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), 'measure'], {
      env: { ...process.env, BENCH_ROUND: round }, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 600_000,
    });
    const line = child.stdout.trim().split('\n').at(-1) ?? '';
    if (child.status !== 0) throw new Error(`bench:streams ${round} exited ${child.status}`);
    byRound.set(round, JSON.parse(line) as Row[]);
  }
  const rate = (r: Row) => Math.round(r.count / (r.ms / 1000)).toLocaleString('en-US');
  const serde = byRound.get(ROUNDS[0]!)!.filter((r) => !r.cpuMs);
  const kafkaRows = [...new Set([...byRound.values()].flatMap((rows) => rows.filter((r) => r.cpuMs !== undefined).map((r) => r.what)))];
  const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
  const table = [
    `Command: \`npm run bench:streams\` (BENCH_EVENTS=${N}, BENCH_ROUNDS=${ROUNDS.length}) · ${new Date().toISOString()} · ${machine}`,
    `Broker: Apache Kafka 4.1.1 (KRaft, single node, same machine) · registry: Apicurio 3.0.9 · ${Object.entries(versions).map(([n, v]) => `${n} ${v}`).join(' · ')}`,
    `Each round ran in a child process of its own, one after the other, on fresh topics (6 partitions). Load average (1/5/15 min) at start: ${loadStart}; at end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}.`,
    '',
    '| measurement (no broker) | events | seconds | events/s |',
    '|---|---:|---:|---:|',
    ...serde.map((r) => r.count === 0 ? `| ${r.what} | | | |` : `| ${r.what} | ${r.count.toLocaleString('en-US')} | ${(r.ms / 1000).toFixed(2)} | ${rate(r)} |`),
    '',
    `| measurement, ${N.toLocaleString('en-US')} events | ${ROUNDS.map((l) => `${l}: events/s (CPU µs/event)`).join(' | ')} |`,
    `|---|${ROUNDS.map(() => '---:').join('|')}|`,
    ...kafkaRows.map((what) => `| ${what} | ${ROUNDS.map((l) => {
      const r = byRound.get(l)!.find((x) => x.what === what);
      return r ? `${rate(r)} (${((r.cpuMs! * 1000) / r.count).toFixed(1)})` : '—';
    }).join(' | ')} |`),
    '',
    'Notes per round (the same rows):',
    ...ROUNDS.flatMap((l) => byRound.get(l)!.filter((r) => r.cpuMs !== undefined).map((r) => `- ${l}, ${r.what}: ${r.note}`)),
  ];
  console.log(table.join('\n'));
  if (process.argv.includes('--write')) {
    // Only the latest run's section is replaced: the file also holds the Kafka client A/B and
    // its analysis, written by hand.
    const file = 'docs/benchmarks/streams.md';
    const start = '<!-- latest run: replaced by `npm run bench:streams` -->';
    const end = '<!-- end of the latest run -->';
    const section = `${start}\n## The latest run (\`npm run bench:streams\`)\n\n${table.join('\n')}\n${end}`;
    const old = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '# Streams benchmarks\n';
    const a = old.indexOf(start);
    const b = old.indexOf(end);
    fs.mkdirSync('docs/benchmarks', { recursive: true });
    fs.writeFileSync(file, a >= 0 && b > a ? old.slice(0, a) + section + old.slice(b + end.length) : `${old.trimEnd()}\n\n${section}\n`);
  }
}

if (process.argv[2] === 'measure') await measure();
else await main();
