import os from 'node:os';
import type { Command } from 'commander';
import { untilShutdownSignal } from '../common/shutdown.ts';
import type { EddyConfig } from '../common/config.ts';
import type { Logger } from '../common/log.ts';
import { EddyError, UsageError, errorMessage } from '../common/errors.ts';
import type { ModelVersionRef } from '../models/store.ts';
import type { Evaluation, TrainStage } from '../trainer/index.ts';

/**
 * What the actions need, loaded when one runs: the trainer, Kafka, ClickHouse and their libraries
 * cost a second of start-up that `eddy serve` or `eddy processors run` should not pay.
 */
const load = async () => {
  const [{ default: cliProgress }, { createLogger }, { FsModelStore }, { createClickHouse }, { connectStreams }, { ModelLifecycle, retainedVersions }, trainer, { serveProcessMetrics }] = await Promise.all([
    import('cli-progress'), import('../common/log.ts'), import('../models/store.ts'), import('../common/clickhouse.ts'), import('../streams/index.ts'),
    import('../models/lifecycle.ts'), import('../trainer/index.ts'), import('../common/metrics.ts'),
  ]);
  return { cliProgress, createLogger, FsModelStore, createClickHouse, connectStreams, ModelLifecycle, retainedVersions, serveProcessMetrics, ...trainer };
};

const out = (line: string) => process.stdout.write(line + '\n');

/**
 * Training yields the CPU when asked to (EDDY_TRAINER_NICE): on a host shared with processors and
 * servers it takes every core they leave, so a process restarting there (or a burst of requests)
 * waits for it; at nice 10 they come first and training still gets every idle cycle. Taken after
 * the ready line, so a restarted trainer starts at full speed. Linux nice values are per thread
 * (pid 0: the calling one): this is the main thread, where training runs; threads started later
 * inherit it.
 */
function lowerPriority(nice: number, logger: Logger): void {
  if (nice === 0) return;
  try {
    os.setPriority(0, nice);
    logger.info({ nice }, 'training at a lower CPU priority');
  } catch (err) {
    logger.warn({ nice, err: errorMessage(err) }, 'cannot lower the CPU priority; training at the normal one');
  }
}

const STAGES: TrainStage[] = ['load', 'validate', 'search', 'featurize', 'train', 'evaluate', 'gate', 'publish'];

function printEvaluation(title: string, e: Evaluation): void {
  out(`${title}: accuracy ${e.accuracy.toFixed(4)}  macro-F1 ${e.macroF1.toFixed(4)}  (${e.support} test examples)`);
  out(`  ${'label'.padEnd(32)}${'precision'.padStart(10)}${'recall'.padStart(10)}${'f1'.padStart(10)}${'support'.padStart(9)}`);
  for (const [label, m] of Object.entries(e.perLabel)) {
    out(`  ${label.slice(0, 31).padEnd(32)}${m.precision.toFixed(3).padStart(10)}${m.recall.toFixed(3).padStart(10)}${m.f1.toFixed(3).padStart(10)}${String(m.support).padStart(9)}`);
  }
}

/** `eddy train --client X`, `eddy models list --client X` and `eddy trainer run`. */
export function registerTrainerCommands(program: Command, config: () => EddyConfig): void {
  program
    .command('trainer')
    .description('the retrain consumer')
    .command('run')
    .description("run the retrain consumer (group 'trainer' on retrain-requests) until SIGTERM/SIGINT")
    .action(async () => {
      const c = config();
      const { createLogger, connectStreams, startTrainer, serveProcessMetrics } = await load();
      const logger = createLogger('trainer', c.logLevel);
      const streams = await connectStreams(c, 'eddy-trainer');
      const trainer = await startTrainer(streams, c);
      const metrics = await serveProcessMetrics(c, 'trainer');
      logger.info({ modelStore: c.modelStoreDir }, 'retrain consumer running');
      process.stderr.write('trainer running (Ctrl-C stops it gracefully: a training in flight finishes and publishes first)\n');
      lowerPriority(c.trainer.nice, logger);
      await untilShutdownSignal();
      // A request whose training is cut short by a hard kill is not committed: it is delivered again.
      await metrics?.close();
      await trainer.stop();
      await streams.close();
    });

  program
    .command('train')
    .description('train, evaluate and gate a new model version of one client now, and announce it on the models topic')
    .requiredOption('--client <clientId>', 'the client to train')
    .option('--epochs <n>', 'override EDDY_TRAINER_EPOCHS')
    .option('--no-progress', 'no progress bar (logs and CI)')
    .action(async (opts: { client: string; epochs?: string; progress: boolean }) => {
      const c = config();
      const epochs = opts.epochs === undefined ? c.trainer.epochs : Number(opts.epochs);
      if (!Number.isInteger(epochs) || epochs < 1) throw new UsageError(`--epochs must be a positive integer, got '${opts.epochs}'`);
      const { cliProgress, createLogger, createClickHouse, connectStreams, ModelLifecycle, retainedVersions, FsModelStore, trainClient, loadTrainingSet, trainerSettings } = await load();
      // One answer, the searched one: the quick first model (EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES)
      // is how the retrain consumer serves an import sooner, not what an operator asking now wants.
      const settings = { ...trainerSettings(c.trainer, { epochs }), quickFirstModelExamples: 0 };
      const logger = createLogger('trainer', c.logLevel === 'info' ? 'warn' : c.logLevel);
      const clickhouse = createClickHouse(c);
      const streams = await connectStreams(c, 'eddy-cli-train');
      // The gate compares against the version the servers serve (after a rollback or pin, not the
      // newest): rebuild it from the models topic, as the retrain consumer does.
      const live = new ModelLifecycle(streams, `cli-train-${process.pid}`, logger);
      const bar = opts.progress && process.stderr.isTTY
        ? new cliProgress.SingleBar({ format: '{stage} [{bar}] {percentage}% | epoch {epoch}/{epochs} | loss {loss}', stream: process.stderr }, cliProgress.Presets.shades_classic)
        : null;
      // Stages weigh 1 each; training weighs its epochs (it is where the time goes).
      const total = STAGES.length - 1 + epochs;
      try {
        await live.start();
        const retained = retainedVersions(live.registry.get(opts.client));
        const current = { liveVersion: retained.live, keepVersions: retained.keep };
        bar?.start(total, 0, { stage: 'load', epoch: 0, epochs, loss: '-' });
        const outcome = await trainClient(
          { store: new FsModelStore(c.modelStoreDir), loadSet: (id) => loadTrainingSet(clickhouse, c.clickhouseDatabase, id), settings, logger },
          opts.client,
          {
            retrainEventId: null,
            ...current,
            onProgress: (p) => {
              const before = STAGES.indexOf(p.stage);
              // A solver's iterations (sparse-linear) may outnumber the epochs: the bar stays within the train stage.
              const value = p.stage === 'train' ? before + Math.min(p.epoch ?? 0, epochs - 1) : before + (STAGES.indexOf(p.stage) > STAGES.indexOf('train') ? epochs - 1 : 0);
              bar?.update(value, { stage: p.stage, ...(p.epoch !== undefined ? { epoch: p.epoch } : {}), ...(p.loss !== undefined ? { loss: p.loss.toFixed(4) } : {}) });
            },
          },
        );
        bar?.update(total, { stage: 'done' });
        bar?.stop();
        if (outcome.candidate) printEvaluation('candidate', outcome.candidate);
        if (outcome.live) printEvaluation(`live ${outcome.kind === 'published' ? outcome.event.previousVersion : outcome.event.liveVersion}`, outcome.live);
        if (outcome.kind === 'published') {
          await streams.producer.send('ModelPublished', outcome.event);
          const e = outcome.event;
          out(`gate: PUBLISHED ${e.clientId} ${e.modelVersion}${e.previousVersion ? ` (replaces ${e.previousVersion})` : ' (first version)'} in ${e.trainingMs} ms on ${e.backend}`);
          out(`artifact: ${e.artifactUri} (${outcome.ref.sizeBytes} bytes)`);
        } else {
          await streams.producer.send('ModelRejected', outcome.event);
          const e = outcome.event;
          out(`gate: REJECTED at ${e.stage}: ${e.reasons.join(', ')}${e.detail ? ` (${e.detail})` : ''}`);
          process.exitCode = 3;
        }
      } finally {
        bar?.stop();
        await live.stop();
        await streams.close();
        await clickhouse.close();
      }
    });

  const models = program.command('models').description('model versions in the model store');
  models
    .command('list')
    .description("list a client's model versions (oldest first) with their metrics")
    .requiredOption('--client <clientId>', 'the client')
    .option('--json', 'machine-readable output')
    .action(async (opts: { client: string; json?: boolean }) => {
      const { FsModelStore } = await import('../models/store.ts');
      const refs = await new FsModelStore(config().modelStoreDir).list(opts.client);
      if (opts.json) {
        out(JSON.stringify(refs, null, 2));
        return;
      }
      if (refs.length === 0) {
        out(`no models for ${opts.client} in ${config().modelStoreDir}`);
        return;
      }
      out(`${'VERSION'.padEnd(9)}${'CREATED'.padEnd(26)}${'LABELS'.padStart(7)}${'EXAMPLES'.padStart(10)}${'MACRO-F1'.padStart(10)}${'ACCURACY'.padStart(10)}${'BYTES'.padStart(10)}  PARENT  SHA256        ${'CV-F1'.padStart(6)}  ${'ECE'.padStart(11)}  CONFIGURATION`);
      for (const r of refs) {
        out(`${r.modelVersion.padEnd(9)}${r.createdAt.padEnd(26)}${String(r.labels.length).padStart(7)}${String(r.trainingExamples).padStart(10)}${(r.metrics.macroF1 ?? NaN).toFixed(4).padStart(10)}${(r.metrics.accuracy ?? NaN).toFixed(4).padStart(10)}${String(r.sizeBytes).padStart(10)}  ${(r.parentVersion ?? '-').padEnd(6)}  ${r.sha256.slice(0, 12)}  ${configColumns(r)}`);
      }
    });
}

/**
 * The model builder's columns of `eddy models list`: cross-validated macro-F1 of the chosen
 * configuration, expected calibration error before->after temperature scaling, and the
 * configuration (kind, hyperparameters, character n-grams; "(searched)" on the version that ran the
 * search, "(reused)" on the ones that kept it).
 */
function configColumns(r: ModelVersionRef): string {
  const s = r.selection;
  const cv = s?.cvMacroF1 != null ? s.cvMacroF1.toFixed(4) : '-';
  const ece = r.metrics.eceBefore !== undefined && r.metrics.eceAfter !== undefined ? `${r.metrics.eceBefore.toFixed(3)}->${r.metrics.eceAfter.toFixed(3)}` : '-';
  const config = s
    ? `${s.config.kind} ${Object.entries(s.config.params).map(([k, v]) => `${k}=${String(v)}`).join(' ')}${s.config.charNgrams.length ? ` chars=${s.config.charNgrams.join(',')}` : ''} (${s.searched ? 'searched' : 'reused'})`
    : '-';
  return `${cv.padStart(6)}  ${ece.padStart(11)}  ${config}`;
}
