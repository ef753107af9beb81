import fs from 'node:fs';
import { spawn } from 'node:child_process';
import { Command, CommanderError, Option } from 'commander';
import { configurationMarkdown, describeConfig, loadConfig, shownValue, type EddyConfig } from '../common/config.ts';
import { EddyError, errorMessage, UsageError } from '../common/errors.ts';
import { stackDown, stackLogFile, stackStatus, stackUp } from './stack.ts';
import { registerStreamsCommands } from './streams-commands.ts';
import { registerDemoCommand } from './demo.ts';
import { registerServerCommands } from './server-commands.ts';
import { registerProcessorsCommands } from './processors-commands.ts';
import { registerTrainerCommands } from './trainer-commands.ts';
import { registerMonitorCommands } from './monitor-commands.ts';

/**
 * `eddy` — one entry point for operators and developers. Subcommands live next to what they
 * drive; each later component registers its own here. Errors print one line (no stack trace)
 * and exit 1; bad usage (commander's own errors, a UsageError) exits 2.
 */
export const program = new Command('eddy')
  .description('Continuous training and serving of per-tenant classifiers on Kafka')
  .version(JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')).version as string)
  .showHelpAfterError('(run with --help for usage)')
  // Usage errors exit 2 (the POSIX convention), runtime errors 1; see the catch at the end.
  .exitOverride()
  .addHelpText('after', `
Environment: EDDY_* variables configure every command (see 'eddy config').
Quick start:  eddy stack up   then   npm run demo`);

let cachedConfig: EddyConfig | undefined;
export function config(): EddyConfig {
  cachedConfig ??= loadConfig();
  return cachedConfig;
}

const out = (line: string) => process.stdout.write(line + '\n');
const err = (line: string) => process.stderr.write(line + '\n');

program
  .command('config')
  .description('print the configuration variables, their values and defaults')
  .option('--markdown', 'print the reference table of docs/configuration.md instead')
  .action((opts: { markdown?: boolean }) => {
    if (opts.markdown) {
      out(configurationMarkdown().trimEnd());
      return;
    }
    const env = process.env;
    for (const v of describeConfig()) {
      const value = env[v.name];
      out(`${v.name}=${value ? shownValue(v.name, value) : ''}`.padEnd(50) + `# ${v.description} (default: ${v.default || 'see description'})`);
    }
    config(); // validate, so a bad value is reported here too
  });

const stack = program.command('stack').description('run the local stack: Kafka, schema registry, Redis, ClickHouse');
stack
  .command('up')
  .description('download (first time) and start every service, then wait until healthy; idempotent')
  .option('-q, --quiet', 'print only errors')
  .option('--only <services>', 'comma-separated subset: redis,clickhouse,kafka,registry')
  .action(async (opts: { quiet?: boolean; only?: string }) => {
    const say = opts.quiet ? () => undefined : out;
    const { ms, started } = await stackUp(config().home, say, opts.only?.split(','));
    if (!opts.quiet) out(`stack ready in ${(ms / 1000).toFixed(1)} s${started.length ? ` (started: ${started.join(', ')})` : ' (all already running)'}`);
  });
stack
  .command('down')
  .description('stop the services that `eddy stack up` started (never a service it found running)')
  .action(async () => {
    const stopped = await stackDown(config().home, out);
    out(stopped.length ? `stopped: ${stopped.join(', ')}` : 'nothing to stop');
  });
stack
  .command('status')
  .description('show each service with its version, endpoint and who manages it')
  .option('--json', 'machine-readable output')
  .action(async (opts: { json?: boolean }) => {
    const rows = await stackStatus(config().home);
    if (opts.json) {
      out(JSON.stringify(rows, null, 2));
      return;
    }
    out(`${'SERVICE'.padEnd(11)}${'STATE'.padEnd(7)}${'VERSION'.padEnd(44)}${'ENDPOINT'.padEnd(42)}MANAGED BY`);
    for (const r of rows) {
      out(`${r.name.padEnd(11)}${(r.up ? 'up' : 'down').padEnd(7)}${r.version.padEnd(44)}${r.endpoint.padEnd(42)}${r.managedBy}${r.pid ? ` (pid ${r.pid})` : ''}`);
    }
    if (rows.some((r) => !r.up)) process.exitCode = 1;
  });
stack
  .command('logs')
  .description("print a service's log (from the cache directory)")
  .argument('<service>', 'redis, clickhouse, kafka or registry')
  .option('-n, --lines <n>', 'lines from the end', '50')
  .option('-f, --follow', 'keep printing as the log grows')
  .action((service: string, opts: { lines: string; follow?: boolean }) => {
    const file = stackLogFile(config().home, service);
    if (!fs.existsSync(file)) throw new EddyError('NO_LOG', `no log for ${service} yet (${file}); eddy writes logs only for services it started`);
    const args = ['-n', opts.lines, ...(opts.follow ? ['-F'] : []), file];
    spawn('tail', args, { stdio: 'inherit' });
  });

registerStreamsCommands(program, config);
registerDemoCommand(program, config);
registerServerCommands(program, config);
registerProcessorsCommands(program, config);
registerTrainerCommands(program, config);
registerMonitorCommands(program, config);

program.addOption(new Option('--no-color', 'disable colours').hideHelp());

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    // commander already printed the message (or the help/version text).
    process.exitCode = e.exitCode === 0 ? 0 : 2;
  } else if (e instanceof EddyError) {
    err(`eddy: ${e.message}`);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  } else {
    err(`eddy: unexpected error: ${errorMessage(e)}`);
    if (process.env.EDDY_LOG_LEVEL === 'debug') err((e as Error).stack ?? '');
    process.exitCode = 1;
  }
}
