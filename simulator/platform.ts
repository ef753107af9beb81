import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EddyError } from '../common/errors.ts';

/**
 * Runs the platform's components as child processes of the real CLI (`node bin/eddy.mjs …`),
 * exactly the commands an operator runs, each in its own process and its own process group.
 *
 * Why child processes and not in-process: training is CPU-bound TensorFlow.js work that would
 * stall the prediction server's and the simulator's event loops (and their latencies) if they
 * shared one; each component keeps its own signal handling and graceful shutdown; a crash of one
 * shows as that component's exit instead of taking the demo down; and the demo exercises the same
 * entry points as production. The cost is ~2 s of start-up per process (module loading).
 */

export const EDDY_BIN = fileURLToPath(new URL('../bin/eddy.mjs', import.meta.url));
const PARENT_WATCHDOG = fileURLToPath(new URL('./parent-watchdog.mjs', import.meta.url));

export interface ComponentSpec {
  /** Short name for logs and the summary (e.g. "server-1"). */
  name: string;
  /** Arguments after `eddy`. */
  args: string[];
  /** Extra environment (on top of the launcher's). */
  env?: Record<string, string>;
  /** Resolves when the component is ready to work (default: alive for a moment). */
  ready?: () => Promise<boolean>;
}

export interface RunningComponent {
  spec: ComponentSpec;
  child: ChildProcess;
  logFile: string;
  exited: { code: number | null; signal: NodeJS.Signals | null } | null;
}

/** The standard platform: processors (incl. monitor), the trainer's retrain consumer, servers. */
export function platformComponents(opts: {
  serverPorts: number[];
  serverHost?: string;
  /** True once the named consumer group (logical name) has members: a consumer is really working. */
  groupReady?: (group: string) => Promise<boolean>;
  /** Ports of the /metrics endpoints of processors and trainer (EDDY_METRICS_PORT; 0 disables). */
  metricsPorts?: { processors: number; trainer: number };
}): ComponentSpec[] {
  const host = opts.serverHost ?? '127.0.0.1';
  const joined = (group: string) => (opts.groupReady ? () => opts.groupReady!(group) : undefined);
  // Two components on one host must not share the default metrics port.
  const metrics = (port: number | undefined) => ({ EDDY_METRICS_PORT: String(port ?? 0) });
  return [
    { name: 'processors', args: ['processors', 'run'], ready: joined('processors.triggers'), env: metrics(opts.metricsPorts?.processors) },
    { name: 'trainer', args: ['trainer', 'run'], ready: joined('trainer'), env: metrics(opts.metricsPorts?.trainer) },
    ...opts.serverPorts.map((port, i) => ({
      name: opts.serverPorts.length > 1 ? `server-${i + 1}` : 'server',
      args: ['serve'],
      env: { EDDY_SERVER_PORT: String(port), EDDY_SERVER_HOST: host, EDDY_SERVER_REPLICA_ID: `sim-server-${i + 1}`, ...metrics(0) },
      ready: async () => {
        const res = await fetch(`http://${host}:${port}/readyz`, { signal: AbortSignal.timeout(2000) }).catch(() => undefined);
        return res?.status === 200;
      },
    })),
  ];
}

export class Platform {
  readonly components: RunningComponent[] = [];
  private readonly onExit = () => this.killAll('SIGKILL');

  constructor(private readonly env: Record<string, string>, readonly logDir: string) {
    fs.mkdirSync(logDir, { recursive: true });
    // Against orphans: whatever still runs when this process exits is killed; and if this process
    // is killed outright, each component's parent watchdog stops it.
    process.on('exit', this.onExit);
  }

  /** Starts every component, then waits until each is ready; a component that exits early fails the start. */
  async start(specs: ComponentSpec[], timeoutMs = 120_000): Promise<void> {
    for (const spec of specs) this.spawn(spec);
    const deadline = Date.now() + timeoutMs;
    // Without a readiness probe, a component counts as started once it stayed up this long.
    const minimumAliveMs = 10_000;
    const startedAt = Date.now();
    for (const c of this.components) {
      for (;;) {
        if (c.exited) {
          throw new EddyError('PLATFORM_START_FAILED', `${c.spec.name} (eddy ${c.spec.args.join(' ')}) exited with ${c.exited.code ?? c.exited.signal} during start-up; last log lines:\n${tail(c.logFile, 15)}`);
        }
        const ready = c.spec.ready ? await c.spec.ready().catch(() => false) : Date.now() - startedAt >= minimumAliveMs;
        if (ready) break;
        if (Date.now() > deadline) throw new EddyError('PLATFORM_START_FAILED', `${c.spec.name} was not ready after ${timeoutMs / 1000} s; see ${c.logFile}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    }
  }

  /** Components that exited although nobody asked them to. */
  crashed(): RunningComponent[] {
    return this.components.filter((c) => c.exited !== null);
  }

  /**
   * Graceful stop in reverse start order (servers first, so nothing serves from a half-stopped
   * platform): SIGTERM (each component commits and closes), then SIGKILL after `graceMs`.
   */
  async stop(graceMs = 20_000): Promise<void> {
    for (const c of [...this.components].reverse()) {
      if (c.exited) continue;
      signalGroup(c.child, 'SIGTERM');
      const done = await waitExit(c.child, graceMs);
      if (!done) {
        signalGroup(c.child, 'SIGKILL');
        await waitExit(c.child, 5000);
      }
    }
    process.off('exit', this.onExit);
  }

  private spawn(spec: ComponentSpec): void {
    const logFile = path.join(this.logDir, `${spec.name}.log`);
    const log = fs.openSync(logFile, 'a');
    const child = spawn(process.execPath, ['--import', PARENT_WATCHDOG, EDDY_BIN, ...spec.args], {
      env: { ...process.env, ...this.env, ...spec.env },
      // The IPC channel is how a component notices that we died (simulator/parent-watchdog.mjs).
      stdio: ['ignore', log, log, 'ipc'],
      // Own process group: a terminal Ctrl-C reaches only the demo, which then stops the
      // components in order; and the whole group can be signalled, grandchildren included.
      detached: true,
    });
    fs.closeSync(log);
    const running: RunningComponent = { spec, child, logFile, exited: null };
    child.on('exit', (code, signal) => {
      running.exited = { code, signal };
    });
    this.components.push(running);
  }

  private killAll(signal: NodeJS.Signals): void {
    for (const c of this.components) if (!c.exited) signalGroup(c.child, signal);
  }
}

function signalGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // already gone
  }
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export function tail(file: string, lines: number): string {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
