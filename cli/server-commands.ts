import type { Command } from 'commander';
import { untilShutdownSignal } from '../common/shutdown.ts';
import type { EddyConfig } from '../common/config.ts';
import { EddyError, UsageError } from '../common/errors.ts';
import type { ModelAdmin, ModelRegistry } from '../models/lifecycle.ts';

const out = (line: string) => process.stdout.write(line + '\n');

/**
 * `eddy serve` runs a prediction server; `eddy promote | rollback | pin | model` change or show
 * a client's rollout by writing events to the models topic (the same events the admin API
 * writes), after rebuilding the registry from that topic so that a wrong version is refused
 * before anything is published. Every server replica follows the decision from the log.
 */
export function registerServerCommands(program: Command, config: () => EddyConfig): void {
  program
    .command('serve')
    .description('run the prediction server (HTTP + Kafka predict) until SIGINT/SIGTERM')
    .option('--port <port>', 'override EDDY_SERVER_PORT')
    .option('--host <host>', 'override EDDY_SERVER_HOST')
    .option('--no-kafka-predict', 'do not consume PredictionRequested (HTTP only)')
    .action(async (opts: { port?: string; host?: string; kafkaPredict: boolean }) => {
      const base = config();
      const port = opts.port === undefined ? base.server.port : Number(opts.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`--port must be 0..65535, got '${opts.port}'`);
      const { startServer } = await import('../server/index.ts');
      const server = await startServer({ ...base, server: { ...base.server, port, host: opts.host ?? base.server.host } }, { kafkaPredict: opts.kafkaPredict });
      out(`eddy server listening on ${server.url} (replica ${base.server.replicaId}); ready once the registry caught up (GET /readyz)`);
      await untilShutdownSignal();
      out('shutting down: finishing requests, flushing predictions');
      await server.close();
    });

  program
    .command('promote')
    .description('make a published version LIVE, a CANARY for a share of requesters, or a SHADOW')
    .argument('<client>', 'client id')
    .argument('<version>', 'model version, e.g. v7')
    .option('--canary <share>', 'roll out as a canary to this share of requesters (0..1; 0 ends the canary)')
    .option('--shadow [share]', 'score this share of requests in shadow (default 1; 0 ends the shadow)')
    .option('--pin', 'as LIVE: pin it, so newer published versions do not replace it')
    .option('--reason <text>', 'why (kept in the event)', '')
    .action(async (client: string, version: string, opts: { canary?: string; shadow?: string | true; pin?: boolean; reason: string }) => {
      if (opts.canary !== undefined && opts.shadow !== undefined) throw new UsageError('choose --canary or --shadow, not both');
      const variant = opts.canary !== undefined ? 'CANARY' : opts.shadow !== undefined ? 'SHADOW' : 'LIVE';
      const share = opts.canary !== undefined ? parseShare(opts.canary) : opts.shadow !== undefined && opts.shadow !== true ? parseShare(opts.shadow) : 1;
      await withAdmin(config(), async (admin, registry, applied) => {
        const e = await admin.promote(client, { version, variant, share, pinned: opts.pin ?? false, reason: opts.reason, actor: cliActor() });
        await applied(e.eventId);
        out(`${client}: ${describe(registry, client)}`);
      });
    });

  program
    .command('rollback')
    .description('make an earlier version live again (default: the previous live version)')
    .argument('<client>', 'client id')
    .option('--to <version>', 'the version to return to')
    .option('--reason <text>', 'why (kept in the event)', '')
    .action(async (client: string, opts: { to?: string; reason: string }) => {
      await withAdmin(config(), async (admin, registry, applied) => {
        const e = await admin.rollback(client, { to: opts.to, reason: opts.reason, actor: cliActor() });
        await applied(e.eventId);
        out(`${client}: rolled back ${e.fromVersion ?? '(none)'} -> ${e.toVersion}; ${describe(registry, client)}`);
      });
    });

  program
    .command('pin')
    .description('pin the live version (or a given one) so newer published versions wait; --unpin to release')
    .argument('<client>', 'client id')
    .argument('[version]', 'version to pin as live (default: the current live version)')
    .option('--unpin', 'release the pin: the next published version goes live again')
    .option('--reason <text>', 'why (kept in the event)', '')
    .action(async (client: string, version: string | undefined, opts: { unpin?: boolean; reason: string }) => {
      await withAdmin(config(), async (admin, registry, applied) => {
        const e = await admin.pin(client, { version, pinned: !opts.unpin, reason: opts.reason, actor: cliActor() });
        await applied(e.eventId);
        out(`${client}: ${describe(registry, client)}`);
      });
    });

  program
    .command('model')
    .description("show a client's rollout as the models topic says it (live, canary, shadow, versions)")
    .argument('<client>', 'client id')
    .option('--json', 'machine-readable output')
    .action(async (client: string, opts: { json?: boolean }) => {
      await withAdmin(config(), async (_admin, registry) => {
        const c = registry.get(client);
        if (!c) throw new EddyError('CLIENT_UNKNOWN', `client '${client}' has no model events`);
        if (opts.json) {
          out(JSON.stringify({ ...c, versions: [...c.versions.values()] }, null, 2));
          return;
        }
        out(`${client}: ${describe(registry, client)}`);
        for (const v of c.versions.values()) out(`  ${v.version.padEnd(6)} ${new Date(v.publishedAt).toISOString()}  ${JSON.stringify(v.metrics)}`);
      });
    });
}

function parseShare(text: string): number {
  const share = Number(text);
  if (!Number.isFinite(share) || share < 0 || share > 1) throw new UsageError(`share must be a number in [0, 1], got '${text}'`);
  return share;
}

function describe(registry: ModelRegistry, client: string): string {
  const c = registry.get(client);
  if (!c) return 'no model';
  const parts = [`live ${c.live ?? '(none)'}${c.pinned ? ' (pinned)' : ''}`];
  if (c.canary) parts.push(`canary ${c.canary.version} @ ${c.canary.share}`);
  if (c.shadow) parts.push(`shadow ${c.shadow.version} @ ${c.shadow.share}`);
  if (c.liveHistory.length) parts.push(`rollback to ${c.liveHistory.at(-1)}`);
  return parts.join(', ');
}

/** Rebuilds the registry from the models topic, then runs `fn` with an admin bound to it. */
async function withAdmin(
  config: EddyConfig,
  fn: (admin: ModelAdmin, registry: ModelRegistry, applied: (eventId: string) => Promise<void>) => Promise<void>,
): Promise<void> {
  // Consumer start/stop chatter is noise for a one-shot command; warnings and errors still show.
  const quiet = { ...config, logLevel: config.logLevel === 'info' ? 'warn' : config.logLevel };
  // Loaded here, not at the top: Kafka's client is a second of start-up that `eddy stack up` or `eddy config` should not pay.
  const [{ createLogger }, { ModelAdmin, ModelLifecycle }, { connectStreams }] = await Promise.all([
    import('../common/log.ts'), import('../models/lifecycle.ts'), import('../streams/index.ts'),
  ]);
  const logger = createLogger('eddy-cli', quiet.logLevel);
  const streams = await connectStreams(quiet, 'eddy-cli');
  const lifecycle = new ModelLifecycle(streams, `cli-${process.pid}`, logger);
  try {
    await lifecycle.start();
    await fn(new ModelAdmin(lifecycle.registry, streams.producer), lifecycle.registry, (eventId) => lifecycle.applied(eventId, 15_000));
  } finally {
    await lifecycle.stop();
    await streams.close();
  }
}

/** Who an admin event names when it comes from this CLI. */
function cliActor(): string {
  return `cli:${process.env.USER ?? 'operator'}`;
}
