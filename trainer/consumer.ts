import type { EddyConfig } from '../common/config.ts';
import { EddyError, errorMessage } from '../common/errors.ts';
import { createLogger, type Logger } from '../common/log.ts';
import { counter, histogram } from '../common/metrics.ts';
import { FsModelStore, type ModelVersionRef } from '../models/store.ts';
import { createClickHouse, type ClickHouseClient } from '../common/clickhouse.ts';
import type { RetrainRequested } from '../schemas/events.ts';
import type { BatchContext, EventHandler, EventRecord, Streams } from '../streams/index.ts';
// The consumer module alone: importing the trainer does not load the Kafka client.
import { FETCH_EACH_EVENT } from '../streams/consumer.ts';
import { initBackend } from './backend.ts';
import { latestWatermark, loadTrainingSet } from './dataset.ts';
import { ModelLifecycle, retainedVersions } from '../models/lifecycle.ts';
import { republishedEvent, trainClient, trainerSettings, type TrainerDeps, type TrainerSettings, type TrainOutcome } from './pipeline.ts';

/**
 * The retrain consumer: group 'trainer' on 'retrain-requests'. Kafka partitions by clientId, so
 * one client is trained by one worker at a time and its requests arrive in order. Several
 * requests of one client in one batch are coalesced into one training (the newest data serves
 * them all). The handler returns only after ModelPublished/ModelRejected was produced, so the
 * runner commits the request's offset only then: a crash mid-training loses nothing, the
 * request is delivered again. Idempotent on eventId: a request whose model is already in the
 * store (crash after store, before commit) re-announces that version instead of training again.
 */
const outcomes = () => counter({
  name: 'eddy_trainer_outcomes_total', help: 'Retrains by outcome (published, rejected by stage)', labelNames: ['outcome'],
});
const durations = () => histogram({
  name: 'eddy_trainer_training_seconds', help: 'Wall time of one client retrain (load, validate, fit, evaluate, publish)',
  buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120],
});

/** What a retrain uses of the runner's BatchContext (tests drive the handler with their own, some without isAssigned). */
type TrainContext = Pick<BatchContext, 'heartbeat' | 'isRunning'> & Partial<Pick<BatchContext, 'isAssigned'>>;

export class RetrainHandler implements EventHandler {
  private logger: Logger;

  /** A ModelPublished this process sent, per client: the next training waits until it is back from the log. */
  private readonly announced = new Map<string, string>();

  /**
   * What this process already answered in the batch in hand (its newest request id per client →
   * the version announced, or 'rejected'): when a later client of the batch waits on a dependency,
   * the whole batch is retried (nothing of it is committed), and the clients answered before are
   * not answered again at every retry (bench:chaos: 24 ModelPublished for 18 versions during a
   * ClickHouse outage). Cleared when a batch is done; a restarted process re-announces once.
   */
  private readonly answeredInBatch = new Map<string, string>();

  /**
   * `lifecycle`: the live version per client from the models topic (the gate compares against
   * exactly the version the servers answer with, e.g. the older one after a rollback); without
   * it the newest stored version stands in.
   */
  constructor(private readonly streams: Streams, private readonly deps: TrainerDeps, private readonly lifecycle?: ModelLifecycle) {
    this.logger = deps.logger;
  }

  /** The client's live version and the versions retention must keep, as the models topic says. */
  private async liveOf(clientId: string): Promise<{ liveVersion: string | null; keepVersions: string[] } | undefined> {
    if (!this.lifecycle) return undefined;
    const own = this.announced.get(clientId);
    if (own !== undefined) {
      // Our own publish is applied in log order (a rollback written before it stays before it),
      // so we wait for the follower rather than applying it locally.
      await this.lifecycle.applied(own);
      this.announced.delete(clientId);
    }
    const { live, keep } = retainedVersions(this.lifecycle.registry.get(clientId));
    return { liveVersion: live, keepVersions: keep };
  }

  async init(ctx: { logger: Logger }): Promise<void> {
    this.logger = ctx.logger;
    await initBackend(this.logger, this.deps.settings.backend || undefined);
  }

  async handle(records: EventRecord[], ctx?: TrainContext): Promise<void> {
    // Coalesce: the last request per client carries the batch (older ones are answered by it).
    const byClient = new Map<string, RetrainRequested[]>();
    for (const r of records) {
      if (r.event.name !== 'RetrainRequested') continue;
      const e = r.event.value;
      byClient.set(e.clientId, [...(byClient.get(e.clientId) ?? []), e]);
    }
    for (const [clientId, requests] of byClient) await this.answer(clientId, requests, ctx);
    this.answeredInBatch.clear();
  }

  /**
   * Answers one client's requests of the batch (the newest carries them). A rebalance can give the
   * client's partition to another member while this one still trains it (the library rejoins the
   * group without waiting for the batch in hand): both train, and the second to store its version
   * finds the number taken (VERSION_EXISTS; bench:chaos, a retrain request dead-lettered). The
   * store then tells what answers the request: the other member's version is announced again, or,
   * when that version answered another request, this one trains the next version.
   */
  private async answer(clientId: string, requests: RetrainRequested[], ctx: TrainContext | undefined, attempt = 1): Promise<void> {
    try {
      const newest = requests.at(-1)!.eventId;
      const answeredHere = this.answeredInBatch.get(newest);
      if (answeredHere === 'rejected') return;
      const ids = new Set(requests.map((r) => r.eventId));
      const answered = (await this.deps.store.list(clientId)).filter((ref) => ref.retrainEventId !== null && ids.has(ref.retrainEventId));
      const done = answered.sort((a, b) => versionNumber(a.modelVersion) - versionNumber(b.modelVersion)).at(-1);
      if (done) {
        if (answeredHere !== done.modelVersion) {
          this.logger.info({ clientId, version: done.modelVersion }, 'retrain already answered by a stored version (before a restart, or by another trainer); re-announcing');
          const event = republishedEvent(done);
          await this.streams.producer.send('ModelPublished', event);
          this.announced.set(clientId, event.eventId);
          this.answeredInBatch.set(newest, done.modelVersion);
        }
        // A quick first model whose model search had not run when the process stopped: run it now.
        if (!this.searchPending(done)) return;
      } else {
        const outcome = await this.train(clientId, requests, ctx);
        if (outcome.kind !== 'published' || !outcome.searchDeferred) return;
      }
      // The quick first model is served; the search's version answers the same request and has to
      // pass the gate against it (see fitCandidate). Not while stopping: it would hold the shutdown
      // for the search's length, and the client's next retrain searches anyway (no search recorded).
      if (ctx && !ctx.isRunning()) {
        this.logger.info({ clientId }, 'stopping: the model search of the quick first model waits for the next retrain');
        return;
      }
      this.logger.info({ clientId }, 'quick first model published; running the model search for the next version');
      await this.train(clientId, requests, ctx);
    } catch (err) {
      if (err instanceof EddyError && err.code === 'RETRAIN_MOVED') {
        this.logger.info({ clientId }, 'retrain abandoned: a rebalance gave its partition to another trainer, which trains it');
        throw err;
      }
      if (!(err instanceof EddyError && err.code === 'VERSION_EXISTS') || attempt >= 3) throw err;
      this.logger.warn({ clientId, err: errorMessage(err) }, 'another trainer stored this version meanwhile (the client was moved by a rebalance); answering from the store');
      await this.answer(clientId, requests, ctx, attempt + 1);
    }
  }

  /** A version that answered a request as a quick first model, its search still to run. */
  private searchPending(ref: ModelVersionRef): boolean {
    return this.deps.settings.search !== false && (this.deps.settings.quickFirstModelExamples ?? 0) > 0
      && ref.parentVersion === null && (ref.selection?.cvMacroF1 ?? null) === null;
  }

  /** One training for the client's newest request of the batch, its answer produced before returning. */
  private async train(clientId: string, requests: RetrainRequested[], ctx?: TrainContext): Promise<TrainOutcome> {
    const request = requests.at(-1)!;
    const live = await this.liveOf(clientId);
    // The moment a request turns into work: operators follow a retrain by it, and bench:chaos times a
    // trainer's takeover and return by it (a retrain itself takes seconds to minutes).
    this.logger.info({ clientId, request: request.eventId, reason: request.reason, coalesced: requests.length }, 'retrain started');
    const end = durations().startTimer();
    const outcome = await trainClient({ ...this.deps, loadSet: (c) => this.deps.loadSet(c, { watermark: latestWatermark(requests), heartbeat: ctx?.heartbeat, isRunning: ctx?.isRunning }) }, clientId, {
      retrainEventId: request.eventId, qualityAlert: requests.some((r) => r.reason === 'QUALITY_DROP'), ...(live ?? {}),
      // A rebalance that moves the client to another trainer mid-training: that trainer starts
      // over from the uncommitted request, so the fits left here would be CPU spent twice.
      ...(ctx?.isAssigned ? { stillAssigned: () => ctx.isAssigned!() } : {}),
    });
    end();
    if (outcome.kind === 'published') {
      await this.streams.producer.send('ModelPublished', outcome.event);
      this.announced.set(clientId, outcome.event.eventId);
      this.answeredInBatch.set(request.eventId, outcome.event.modelVersion);
      outcomes().inc({ outcome: 'published' });
    } else {
      await this.streams.producer.send('ModelRejected', outcome.event);
      this.answeredInBatch.set(request.eventId, 'rejected');
      outcomes().inc({ outcome: `rejected_${outcome.event.stage.toLowerCase()}` });
    }
    return outcome;
  }
}

const versionNumber = (version: string) => Number(version.slice(1));

export interface Trainer {
  stop(): Promise<void>;
}

/** Starts the retrain consumer on connected streams; `stop` ends it and closes ClickHouse. */
export async function startTrainer(streams: Streams, config: EddyConfig, opts: { settings?: TrainerSettings; clickhouse?: ClickHouseClient } = {}): Promise<Trainer> {
  const logger = createLogger('trainer', config.logLevel);
  const clickhouse = opts.clickhouse ?? createClickHouse(config);
  const deps: TrainerDeps = {
    store: new FsModelStore(config.modelStoreDir),
    loadSet: (clientId, wait) => loadTrainingSet(clickhouse, config.clickhouseDatabase, clientId, { ...wait, waitMs: config.trainer.dataWaitMs, logger }),
    settings: opts.settings ?? trainerSettings(config.trainer),
    logger,
  };
  // The gate compares against the version the servers serve: know it for every client before the
  // first training (caught up with the models topic as it was at start).
  const live = new ModelLifecycle(streams, `trainer-${process.pid}`, logger);
  await live.start();
  const runner = streams.consumer({
    group: 'trainer', topics: ['retrain-requests'], handler: new RetrainHandler(streams, deps, live), fromBeginning: true,
    // A training takes seconds: hand over small slices so each commit follows its own publish.
    maxRecordsPerCall: 20,
    // Retrain requests are few and each is waited for: a fetch is answered as soon as one is there.
    fetch: FETCH_EACH_EVENT,
  });
  try {
    await runner.start();
  } catch (err) {
    await live.stop();
    throw err;
  }
  return {
    async stop() {
      await runner.stop();
      await live.stop();
      if (!opts.clickhouse) await clickhouse.close();
    },
  };
}
