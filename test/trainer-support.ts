import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { EddyConfig } from '../common/config.ts';
import { FsModelStore } from '../models/store.ts';
import { createClickHouse, identifier, quoteString, type ClickHouseClient } from '../common/clickhouse.ts';
import { startProcessors, type RunningProcessors } from '../processors/run.ts';
import type { LabeledExample, LabelSetChanged, ModelPublished, ModelRejected } from '../schemas/events.ts';
import type { AnyEvent, ConsumerRunner } from '../streams/index.ts';
import { startTrainer } from '../trainer/consumer.ts';
import type { TrainerSettings } from '../trainer/pipeline.ts';
import { testConfig, testStreams, waitFor } from './helpers.ts';
import { deleteRedisPrefix, dropDatabase } from './processors-support.ts';
import type { generateClient } from './quality/workload.ts';

type Workload = ReturnType<typeof generateClient>;

/**
 * The real stack a trainer test needs, set up and torn down once per file: its own topics,
 * ClickHouse database, Redis prefix and model store; the feature and analytics processors
 * filling ClickHouse; a reader collecting everything on the models topic.
 */
export class TrainerTestStack {
  readonly config: EddyConfig;
  readonly store: FsModelStore;
  /** Everything seen on the models topic, in order. */
  readonly modelEvents: AnyEvent[] = [];
  streams!: Awaited<ReturnType<typeof testStreams>>;
  /** The feature and analytics processors; tests may stop them to make ClickHouse lag. */
  procs: RunningProcessors | undefined;
  clickhouse!: ClickHouseClient;
  private reader: ConsumerRunner | undefined;

  private constructor(private readonly storeDir: string) {
    this.config = testConfig({ EDDY_MODEL_STORE_DIR: storeDir });
    this.store = new FsModelStore(storeDir);
  }

  static async create(name: string): Promise<TrainerTestStack> {
    return new TrainerTestStack(await fs.mkdtemp(path.join(os.tmpdir(), `eddy-${name}-`)));
  }

  startProcessors(): Promise<RunningProcessors> {
    return startProcessors(this.config, { only: ['features', 'analytics'], groupPrefix: 'processors', waitForAssignment: true });
  }

  /** Starts everything, sends a client's workload and waits until ClickHouse holds all of it. */
  async start(workload: Workload, metadataOf: (e: Workload['examples'][number]) => Record<string, string> = (e) => e.metadata): Promise<void> {
    this.streams = await testStreams(this.config);
    this.clickhouse = createClickHouse(this.config);
    this.procs = await this.startProcessors();
    this.reader = this.streams.consumer({
      group: 'test-models-reader', topics: ['models'], fromBeginning: true,
      handler: { handle: async (records) => { this.modelEvents.push(...records.map((r) => r.event)); } },
    });
    await this.reader.start();
    const clientId = workload.clientId;
    await this.streams.producer.sendAll([
      ...workload.labels.map((l) => labelEvent(clientId, l.name, 'ADDED', { description: l.description, keywords: l.keywords })),
      ...workload.examples.map((e) => exampleEvent(clientId, e.exampleId, e.text, e.label, metadataOf(e))),
    ]);
    await waitFor(`${clientId}'s data in ClickHouse`, async () =>
      (await this.rowsIn('examples', clientId)) === workload.examples.length && (await this.rowsIn('label_changes', clientId)) === workload.labels.length, 60_000);
  }

  /** Distinct events of a client in an analytics table. */
  async rowsIn(table: 'examples' | 'label_changes', clientId: string): Promise<number> {
    const rs = await this.clickhouse.query({
      query: `SELECT uniqExact(event_id) AS n FROM ${identifier(this.config.clickhouseDatabase)}.${table} WHERE client_id = ${quoteString(clientId)}`,
      format: 'JSONEachRow',
    });
    return Number((await rs.json<{ n: string }>())[0]?.n ?? 0);
  }

  async withTrainer<T>(settings: TrainerSettings, fn: () => Promise<T>): Promise<T> {
    const trainer = await startTrainer(this.streams, this.config, { settings });
    try {
      return await fn();
    } finally {
      await trainer.stop();
    }
  }

  /** The trainer's ModelPublished / ModelRejected for a retrain request. */
  answerTo(retrainEventId: string, timeoutMs = 45_000): Promise<AnyEvent> {
    return waitFor(`the trainer's answer to ${retrainEventId}`, () =>
      this.modelEvents.find((e) => (e.name === 'ModelPublished' || e.name === 'ModelRejected') && e.value.retrainEventId === retrainEventId), timeoutMs);
  }

  /** Sends a MANUAL retrain request (no watermark) and waits for its answer. */
  async retrain(clientId: string): Promise<ModelPublished | ModelRejected> {
    const eventId = randomUUID();
    await this.streams.producer.send('RetrainRequested', { eventId, clientId, occurredAt: Date.now(), reason: 'MANUAL', detail: 'test', requestedBy: 'test', dataAsOf: null });
    return (await this.answerTo(eventId)).value as ModelPublished | ModelRejected;
  }

  async cleanup(): Promise<void> {
    await this.reader?.stop();
    if (this.clickhouse) {
      // A test may have stopped the processors; their Redis client is what clears the prefix.
      this.procs ??= await this.startProcessors();
      await deleteRedisPrefix(this.procs.redis, this.config.redisPrefix);
      await dropDatabase(this.clickhouse, this.config.clickhouseDatabase);
      await this.procs.stop();
      await this.clickhouse.close();
    }
    await this.streams?.cleanup();
    await fs.rm(this.storeDir, { recursive: true, force: true });
  }
}

export function labelEvent(clientId: string, label: string, change: LabelSetChanged['change'], over: Partial<LabelSetChanged> = {}): AnyEvent {
  return {
    name: 'LabelSetChanged',
    value: { eventId: randomUUID(), clientId, occurredAt: Date.now(), change, label, previousLabel: null, description: `${label} team`, keywords: [], ...over },
  };
}

export function exampleEvent(clientId: string, exampleId: string, text: string, label: string, metadata: Record<string, string> = {}): AnyEvent {
  const value: LabeledExample = { eventId: randomUUID(), clientId, occurredAt: Date.now(), exampleId, text, label, source: 'ASSIGNMENT', metadata, predictionId: null };
  return { name: 'LabeledExample', value };
}
