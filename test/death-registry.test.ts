import { randomUUID } from 'node:crypto';
import avro from 'avsc';
import { SchemaRegistry, COMPATIBILITY } from '@kafkajs/confluent-schema-registry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import { FEATURE_TOPICS } from '../processors/features/processor.ts';
import { featureKeys } from '../common/keyspace.ts';
import { loadSchema, subjectOf } from '../streams/codec.ts';
import { privateRegistry } from './chaos-support.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { caughtUp, cleanupProcessorsTest, committedOffsets, counterValue } from './processors-support.ts';

/**
 * The schema registry taken down (kill -9 of a private one) while events written with a schema
 * the processors have not seen yet arrive: they wait (retried, uncommitted), none is dead-lettered,
 * and all are processed once the registry is back.
 */
let registry: Awaited<ReturnType<typeof privateRegistry>>;
let config: ReturnType<typeof testConfig>;
let streams: Awaited<ReturnType<typeof testStreams>> | undefined;
let procs: RunningProcessors | undefined;
const CLIENT = 'acme';

beforeAll(async () => {
  registry = await privateRegistry('127.0.0.1:9092');
  await registry.start();
  config = testConfig({ EDDY_SCHEMA_REGISTRY_URL: registry.endpoint });
  streams = await testStreams(config);
}, 180_000);

afterAll(async () => {
  await procs?.stop();
  await streams?.withAdmin((admin) => admin.deleteTopics([registry.journalTopic])).catch(() => undefined);
  if (config) await cleanupProcessorsTest(config, streams).catch(() => undefined);
  await registry?.cleanup();
}, 60_000);

describe('the schema registry down mid-stream', () => {
  it('makes events wait, dead-letters none, and processes them after it returns', async () => {
    procs = await startProcessors(config, { only: ['features'], waitForAssignment: true });
    // A compatible newer LabeledExample (one more field, with a default), as an upgraded upstream
    // writes it: its schema id is new to the processors, so decoding needs the registry.
    const base = loadSchema('LabeledExample') as { fields: unknown[] };
    const evolved = { ...base, fields: [...base.fields, { name: 'upstreamTag', type: 'string', default: '' }] };
    const client = new SchemaRegistry({ host: registry.endpoint });
    const { id } = await client.register({ type: 'AVRO' as never, schema: JSON.stringify(evolved) }, { subject: subjectOf('LabeledExample'), compatibility: COMPATIBILITY.BACKWARD });
    const type = avro.Type.forSchema(evolved as avro.Schema);
    const N = 40;
    const messages = Array.from({ length: N }, (_, i) => {
      const body = type.toBuffer({
        eventId: randomUUID(), clientId: CLIENT, occurredAt: Date.now(), exampleId: `r${i}`, text: 'printer jammed', label: 'Hardware',
        source: 'ASSIGNMENT', metadata: {}, predictionId: null, upstreamTag: 'v2',
      });
      const header = Buffer.alloc(5);
      header.writeInt32BE(id, 1);
      return { key: CLIENT, value: Buffer.concat([header, body]) };
    });

    await registry.kill();
    const group = streams!.topics.group('processors.features');
    const retriesBefore = await counterValue('eddy_consumer_retries_total', { group, code: 'SCHEMA_REGISTRY_UNAVAILABLE' });
    const committedBefore = await committedOffsets(streams!, 'processors.features', 'examples');
    await streams!.producer.sendMessages([{ topic: streams!.topics.physical('examples'), messages }]);
    await waitFor('the processor retrying while the registry is away', async () =>
      (await counterValue('eddy_consumer_retries_total', { group, code: 'SCHEMA_REGISTRY_UNAVAILABLE' })) >= retriesBefore + 3, 30_000, 100);
    expect(await committedOffsets(streams!, 'processors.features', 'examples')).toEqual(committedBefore);
    expect(await counterValue('eddy_consumer_dead_lettered_total', { group })).toBe(0);

    await registry.start();
    await waitFor('the events processed after the registry returned', () => caughtUp(streams!, 'processors.features', FEATURE_TOPICS), 60_000, 200);
    expect(Number(await procs.redis.hget(featureKeys.counts(config.redisPrefix, CLIENT), 'examples'))).toBe(N);
    expect(await counterValue('eddy_consumer_dead_lettered_total', { group })).toBe(0);
    const dead = await streams!.withAdmin((admin) => admin.fetchTopicOffsets(streams!.topics.physical('dead-letters')));
    expect(dead.reduce((n, p) => n + Number(p.high) - Number(p.low), 0)).toBe(0);
  }, 300_000);
});
