import type { Command } from 'commander';
import { untilShutdownSignal } from '../common/shutdown.ts';
import type { EddyConfig } from '../common/config.ts';

/**
 * The processors' names as `--only` takes them, written here so that the CLI does not load every
 * processor to print its help (test/cli.test.ts checks them against processors/registry.ts).
 */
export const PROCESSOR_NAMES_HELP = 'features,analytics,triggers,monitor,review,feedback';

const err = (line: string) => process.stderr.write(line + '\n');

/** `eddy processors run` and `eddy replay` (see docs/processors.md). */
export function registerProcessorsCommands(program: Command, config: () => EddyConfig): void {
  const processors = program.command('processors').description('stateful consumers: features (Redis), analytics (ClickHouse), triggers, feedback');
  processors
    .command('run')
    .description('run processors until SIGINT/SIGTERM, then stop gracefully (finish, commit, leave the groups)')
    .option('--only <names>', `comma-separated subset of ${PROCESSOR_NAMES_HELP}`)
    .action(async (opts: { only?: string }) => {
      // Loaded here: the processors and their stores are a second of start-up other commands skip.
      const [{ parseProcessorNames, startProcessors }, { LagCollector }, { createLogger }, { serveProcessMetrics }] = await Promise.all([
        import('../processors/index.ts'), import('../streams/index.ts'), import('../common/log.ts'), import('../common/metrics.ts'),
      ]);
      const only = parseProcessorNames(opts.only);
      const c = config();
      const procs = await startProcessors(c, { only });
      // This process also samples consumer lag of every group of the prefix for /metrics.
      const lag = new LagCollector(procs.streams, c.monitor.lagIntervalMs, createLogger('lag', c.logLevel));
      const metrics = await serveProcessMetrics(c, 'processors', lag);
      err(`processors running: ${only.join(', ')} (Ctrl-C stops them gracefully)`);
      await untilShutdownSignal();
      err('stopping processors…');
      await metrics?.close();
      await procs.stop();
    });

  program
    .command('replay')
    .description('rebuild Redis feature state and ClickHouse analytics from the Kafka log (stop live processors first)')
    .option('--keep', 'do not clear the projections first (merge into them instead of rebuilding)')
    .action(async (opts: { keep?: boolean }) => {
      const c = config();
      const [{ replay }, { default: cliProgress }] = await Promise.all([import('../processors/index.ts'), import('cli-progress')]);
      err(`replaying into Redis prefix '${c.redisPrefix}' and ClickHouse database '${c.clickhouseDatabase}'${opts.keep ? '' : ' (cleared first)'}`);
      const bar = new cliProgress.SingleBar({
        stream: process.stderr,
        format: 'replay [{bar}] {percentage}% | {value}/{total} events | {rate} ev/s | eta {eta}s',
        hideCursor: true,
      }, cliProgress.Presets.shades_classic);
      let started = false;
      const t0 = Date.now();
      const result = await replay(c, {
        clear: !opts.keep,
        onProgress: ({ done, total }) => {
          const rate = Math.round(done / Math.max(0.001, (Date.now() - t0) / 1000));
          if (!started) {
            bar.start(Math.max(total, 1), done, { rate });
            started = true;
          } else bar.update(done, { rate });
        },
      });
      if (started) bar.stop();
      err(`replayed ${result.done} events in ${(result.ms / 1000).toFixed(1)} s`);
    });
}
