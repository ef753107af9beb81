import { Worker } from 'node:worker_threads';

/**
 * Starts `entry(data)`, an export of the module at `moduleUrl`, in a worker thread. `data` is
 * copied (structured clone: plain data only). The thread gets no execArgv of ours (flags meant
 * for the main program, e.g. --cpu-prof, stay there) and does not keep the process alive by
 * itself: its owner closes it.
 */
export function startThread(moduleUrl: string | URL, entry: string, data: unknown, name: string): Worker {
  const worker = new Worker(new URL('./thread-entry.mjs', import.meta.url), {
    // The start-up build's files, when the process runs from it (bin/eddy.mjs sets them).
    workerData: { module: String(moduleUrl), entry, data, build: (globalThis as Record<symbol, unknown>)[Symbol.for('eddy.build')] },
    execArgv: [],
    name,
  });
  worker.unref();
  return worker;
}
