/**
 * `npm run bench:streams`: Avro-through-registry produce and consume throughput against the local
 * broker, with plain JSON of the same events in the same process as the reference.
 * Prints a markdown table (and writes it to docs/benchmarks/streams.md with --write).
 */
import fs from 'node:fs';
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import type { LabeledExample } from '../../schemas/events.ts';
import { loadConfig } from '../../common/config.ts';
import { connectStreams, deleteTopics, type AnyEvent } from '../../streams/index.ts';

const N = Number(process.env.BENCH_EVENTS ?? 200_000);
const BATCH = 2_000;
const IN_FLIGHT = 4;
const prefix = `bench${Date.now().toString(36)}.`;
const config = loadConfig({ ...process.env, EDDY_TOPIC_PREFIX: prefix, EDDY_PARTITIONS: '6', EDDY_LOG_LEVEL: 'warn' });

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

const streams = await connectStreams(config, 'bench-streams');
const events = Array.from({ length: N }, (_, i) => makeEvent(i));
const rows: Array<[string, number, number, string]> = [];
const record = (what: string, count: number, ms: number, note = '') => {
  rows.push([what, count, ms, note]);
  process.stderr.write(`${what}: ${Math.round(count / (ms / 1000)).toLocaleString('en-US')} events/s\n`);
};

// Serde alone (CPU cost per event, no broker).
{
  const t = performance.now();
  const bufs = events.map((e) => streams.codec.encode('LabeledExample', e));
  record('Avro validate+encode (no broker)', N, performance.now() - t);
  const t2 = performance.now();
  for (const b of bufs) await streams.codec.decode(b);
  record('Avro decode (no broker)', N, performance.now() - t2);
  const t3 = performance.now();
  const json = events.map((e) => Buffer.from(JSON.stringify(e)));
  record('JSON stringify (no broker)', N, performance.now() - t3);
  const t4 = performance.now();
  for (const b of json) JSON.parse(b.toString());
  record('JSON parse (no broker)', N, performance.now() - t4);
  process.stderr.write(`bytes/event: avro ${bufs[0]!.length}, json ${json[0]!.length}\n`);
  rows.push([`size per event: Avro ${bufs[0]!.length} B, JSON ${json[0]!.length} B`, 0, 0, '']);
}

// Produce: Avro through the typed producer (validate, encode, key, send) vs JSON raw.
{
  const t = performance.now();
  await inBatches(N, (a, b) => streams.producer.sendAll(events.slice(a, b).map((value) => ({ name: 'LabeledExample', value }) as AnyEvent)));
  record('produce Avro (EventProducer.sendAll)', N, performance.now() - t, `batches of ${BATCH}, ${IN_FLIGHT} in flight, acks=all`);
}
const jsonTopic = `${prefix}json-reference`;
await streams.withAdmin((admin) => admin.createTopics({ topics: [{ topic: jsonTopic, numPartitions: 6 }], waitForLeaders: true }));
{
  const t = performance.now();
  await inBatches(N, (a, b) => streams.producer.sendMessages([{ topic: jsonTopic, messages: events.slice(a, b).map((e) => ({ key: e.clientId, value: JSON.stringify(e) })) }]));
  record('produce JSON (same producer, raw messages)', N, performance.now() - t, `batches of ${BATCH}, ${IN_FLIGHT} in flight, acks=all`);
}

// Consume: Avro through the ConsumerRunner (decode via registry, ordered handler, commit per slice).
{
  let seen = 0;
  let t = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const runner = streams.consumer({
    group: 'bench-avro', topics: ['examples'], partitionsConsumedConcurrently: 3, maxRecordsPerCall: 5000,
    handler: { async handle(records) { if (seen === 0) t = performance.now(); seen += records.length; if (seen >= N) done(); } },
  });
  const t0 = performance.now();
  await runner.start();
  await finished;
  const end = performance.now();
  record('consume Avro (ConsumerRunner: decode, handler, commit)', N, end - t0, `first record after ${Math.round(t - t0)} ms (group join included)`);
  await runner.stop();
}
{
  const consumer = streams.kafka.consumer({ groupId: `${prefix}bench-json`, maxWaitTimeInMs: 100 });
  await consumer.connect();
  await consumer.subscribe({ topic: jsonTopic, fromBeginning: true });
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const t0 = performance.now();
  await consumer.run({
    autoCommit: false, eachBatchAutoResolve: false, partitionsConsumedConcurrently: 3,
    eachBatch: async ({ batch, commitOffsetsIfNecessary, resolveOffset }) => {
      for (const m of batch.messages) JSON.parse(m.value!.toString());
      seen += batch.messages.length;
      const last = batch.messages[batch.messages.length - 1]!.offset;
      await commitOffsetsIfNecessary({ topics: [{ topic: batch.topic, partitions: [{ partition: batch.partition, offset: (BigInt(last) + 1n).toString() }] }] });
      resolveOffset(last);
      if (seen >= N) done();
    },
  });
  await finished;
  record('consume JSON (raw kafkajs eachBatch: parse, commit)', N, performance.now() - t0, 'group join included');
  await consumer.disconnect();
}

await streams.close();
await streams.withAdmin(async (admin) => {
  await deleteTopics(admin, streams.topics);
  await admin.deleteTopics({ topics: [jsonTopic] });
  await admin.deleteGroups([`${prefix}bench-avro`, `${prefix}bench-json`]).catch(() => undefined);
});

const machine = `${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
const table = [
  `Command: \`npm run bench:streams\` (BENCH_EVENTS=${N}) · ${new Date().toISOString().slice(0, 10)} · ${machine}`,
  `Broker: Apache Kafka 4.1.1 (KRaft, single node, same machine) · registry: Apicurio 3.0.9 · kafkajs 2.2.4`,
  '',
  '| measurement | events | seconds | events/s | notes |',
  '|---|---:|---:|---:|---|',
  ...rows.map(([what, n, ms, note]) => n === 0
    ? `| ${what} | | | | |`
    : `| ${what} | ${n.toLocaleString('en-US')} | ${(ms / 1000).toFixed(2)} | ${Math.round(n / (ms / 1000)).toLocaleString('en-US')} | ${note} |`),
];
console.log(table.join('\n'));
if (process.argv.includes('--write')) {
  fs.mkdirSync('docs/benchmarks', { recursive: true });
  fs.writeFileSync('docs/benchmarks/streams.md', `## Streams (Avro through the registry vs JSON)\n\n${table.join('\n')}\n`);
}
process.exit(0);
