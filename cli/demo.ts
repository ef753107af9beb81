import type { Command } from 'commander';
import type { EddyConfig } from '../common/config.ts';
import { EddyError, UsageError } from '../common/errors.ts';
import { createLogger } from '../common/log.ts';
import type { Session } from '../simulator/session.ts';
import type { SimulatorSnapshot } from '../simulator/simulator.ts';
import { stackUp } from './stack.ts';

/**
 * `eddy demo` (`npm run demo`): the stack, the platform (processors, trainer, a server — child
 * processes running the real CLI commands, see simulator/platform.ts for why) and the simulated
 * upstream services, in a fresh namespace of their own; a live summary every few seconds;
 * Ctrl-C (or --duration) stops the simulator, then each component gracefully, then deletes the
 * run's topics, keys, database and models (unless --keep).
 */

const out = (line: string) => process.stdout.write(line + '\n');

interface DemoOptions {
  duration?: string;
  rate: string;
  keep?: boolean;
  servers: string;
}

export function registerDemoCommand(program: Command, config: () => EddyConfig): void {
  program
    .command('demo')
    .description('start the stack and the platform, run simulated clients against it, print a live summary (Ctrl-C stops)')
    .option('-d, --duration <seconds>', 'stop after this many seconds (default: run until Ctrl-C)')
    .option('-r, --rate <requests/s>', 'simulated prediction requests per second, all clients', '15')
    .option('--servers <n>', 'prediction server processes', '1')
    .option('--keep', 'keep the run\'s topics, Redis keys, ClickHouse database and models after it stops')
    .action(async (opts: DemoOptions) => {
      const duration = opts.duration === undefined ? undefined : positive('--duration', opts.duration);
      const rate = positive('--rate', opts.rate);
      const servers = positive('--servers', opts.servers);
      const c = config();
      out('Eddy demo: starting the local stack (the first run downloads Kafka and the registry)…');
      await stackUp(c.home, (line) => out(`  ${line}`));
      out('starting the platform (processors, trainer, server as child processes) …');
      let stopRequested = false;
      let wake: () => void = () => undefined;
      const onSignal = () => {
        if (stopRequested) {
          // A second Ctrl-C: no more waiting; the platform's exit hook SIGKILLs every component.
          out('second signal: killing the components and exiting');
          process.exit(130);
        }
        stopRequested = true;
        out('\nstopping: simulator, then server, trainer, processors (graceful) …');
        wake();
      };
      process.on('SIGINT', onSignal);
      process.on('SIGTERM', onSignal);
      let session: Session | undefined;
      try {
        // Loaded here: the simulator brings Kafka's client and the platform's modules, which the other commands do not need.
        const { startSession } = await import('../simulator/session.ts');
        session = await startSession({
          keep: opts.keep, servers,
          logger: createLogger('simulator', 'warn'),
          simulator: { requestsPerSecond: rate },
        });
        if (stopRequested) return;
        out(`run ${session.id}: component logs in ${session.platform.logDir}`);
        out(`admin key: ${session.apiKey} (sign in to the dashboard with it; the API and the servers' /metrics take it as Authorization: Bearer <key>)`);
        out(`dashboard: ${session.serverUrls[0]}/dashboard   predict API: ${session.serverUrls.join(', ')}`);
        out(`metrics: ${session.serverUrls.map((u) => `${u}/metrics`).join(', ')} (with the key), ${session.metricsUrls.processors}, ${session.metricsUrls.trainer}`);
        const endAt = duration === undefined ? Infinity : Date.now() + duration * 1000;
        const tty = process.stdout.isTTY;
        let lastPrint = 0;
        while (!stopRequested && Date.now() < endAt) {
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 1000);
          });
          const crashed = session.platform.crashed();
          if (crashed.length) {
            throw new EddyError('PLATFORM_CRASHED', `${crashed.map((x) => `${x.spec.name} exited (${x.exited?.code ?? x.exited?.signal})`).join(', ')}; see ${session.platform.logDir}`);
          }
          // A terminal gets a redrawn screen every 2 s; a log file a summary every 15 s.
          if (Date.now() - lastPrint >= (tty ? 2000 : 15_000)) {
            lastPrint = Date.now();
            const text = renderSummary(session.simulator!.snapshot(), session);
            if (tty) process.stdout.write('\x1b[H\x1b[2J');
            out(text);
          }
        }
      } finally {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
        if (session) {
          const final = session.simulator?.snapshot();
          await session.stop();
          if (final) out(`\nfinal summary\n${renderSummary(final, session)}`);
          out(opts.keep ? `kept run ${session.id} (EDDY_TOPIC_PREFIX=${session.id}.)` : `run ${session.id} cleaned up; the stack keeps running ('eddy stack down' stops it)`);
        }
      }
    });
}

function positive(flag: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${flag} must be a positive number, got '${value}'`);
  return n;
}

const pct = (x: number | null) => (x === null ? '   -' : `${(100 * x).toFixed(0).padStart(3)}%`);
const age = (at: number | null) => (at === null ? '-' : `${Math.round((Date.now() - at) / 1000)} s ago`);

export function renderSummary(s: SimulatorSnapshot, session: Pick<Session, 'serverUrls' | 'id'>): string {
  const lines: string[] = [];
  const up = Math.round((Date.now() - s.startedAt) / 1000);
  lines.push(`Eddy demo ${session.id} — ${up} s — dashboard ${session.serverUrls[0]}/dashboard — Ctrl-C stops`);
  lines.push('');
  lines.push(`${'CLIENT'.padEnd(10)}${'TEAMS'.padStart(6)}${'LIVE'.padStart(6)}${'MODELS'.padStart(8)}  ${'LAST MODEL'.padEnd(12)}${'ACCURACY'.padStart(9)}${'ANSWERED'.padStart(10)}${'BASELINE'.padStart(10)}${'FEEDBACK'.padStart(10)}${'RETRAINS'.padStart(10)}${'REJECTED'.padStart(10)}${'ALERTS'.padStart(8)}`);
  for (const c of s.clients) {
    lines.push(`${c.clientId.padEnd(10)}${String(c.teams).padStart(6)}${(c.liveVersion ?? '-').padStart(6)}${String(c.versions).padStart(8)}  ${age(c.lastModelAt).padEnd(12)}${pct(c.accuracy).padStart(9)}${String(c.answered).padStart(10)}${String(c.baselineAnswers).padStart(10)}${String(c.feedback).padStart(10)}${String(c.retrains).padStart(10)}${String(c.rejected).padStart(10)}${String(c.alerts).padStart(8)}${c.lastRejection ? `  last rejection: ${c.lastRejection}` : ''}`);
  }
  lines.push('');
  if (s.freshness.length) {
    lines.push('freshness (labelled change produced -> first prediction by a model trained on it):');
    for (const f of s.freshness) lines.push(`  ${f.clientId}: ${f.what}: ${(f.ms / 1000).toFixed(1)} s`);
  } else {
    lines.push('freshness: waiting for the first labelled change to be served');
  }
  lines.push(`requests: ${s.requests.http} HTTP, ${s.requests.kafka} Kafka (${s.requests.pendingKafka} awaiting an answer), ${s.requests.failed} failed`);
  lines.push('');
  lines.push('story:');
  for (const st of s.story) lines.push(`  +${Math.round((st.at - s.startedAt) / 1000).toString().padStart(4)} s  ${st.step.padEnd(20)} ${st.clientId}: ${st.detail}`);
  if (s.lastError) lines.push(`\nlast error: ${s.lastError}`);
  return lines.join('\n');
}
