import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { gauge } from '../common/metrics.ts';

export { tf };

/**
 * Picks the fastest TensorFlow.js backend this process can use: webgpu (a GPU through Dawn and
 * Vulkan) > wasm > cpu. The choice is logged, exported as `eddy_trainer_backend_info{backend}` and
 * recorded in every artifact and ModelPublished.
 *
 * Why WebGPU and not tfjs-node-gpu: tfjs-node-gpu downloads libtensorflow at install time, which
 * machines that reach only the package registries cannot do, and it pins CUDA 11.8. The `webgpu`
 * package (Dawn for Node) ships a prebuilt linux-x64 binary in its npm tarball and needs only a
 * Vulkan driver (shared/GPU.md: measured on an H100, a 4096→512→20 MLP step took 7 ms on webgpu vs
 * 8.8 s on wasm on a 2-core machine). Both packages are optional dependencies and imported
 * dynamically, so a machine where they are missing or where no adapter is found uses wasm.
 */
export const BACKENDS = ['webgpu', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export interface BackendChoice {
  backend: BackendName;
  /** Why each backend tried before the chosen one was passed over (empty when the first worked). */
  skipped: Array<{ backend: BackendName; reason: string }>;
}

let selected: Promise<BackendChoice> | undefined;

async function trySet(backend: string): Promise<boolean> {
  try {
    if (!(await tf.setBackend(backend))) return false;
    await tf.ready();
    // A failed setBackend can leave the previous backend active without an exception: check.
    return tf.getBackend() === backend;
  } catch {
    return false;
  }
}

/** A GPU device node: without one Dawn can only find a software adapter (too weak for tfjs), so it is not even loaded. */
function gpuDevicePresent(): boolean {
  return ['/dev/nvidia0', '/dev/dxg', '/dev/dri/renderD128'].some((p) => fs.existsSync(p));
}

/** WebGPU when a GPU adapter exists; otherwise the reason it does not (so the log says why). */
async function tryWebgpu(forced: boolean): Promise<string | null> {
  if (!forced && !gpuDevicePresent()) return 'no GPU device (/dev/nvidia0, /dev/dri/renderD128, /dev/dxg)';
  let dawn: { create(flags: string[]): unknown; globals: Record<string, unknown> };
  try {
    const specifier = 'webgpu'; // a variable keeps tsc from requiring the optional package's types
    dawn = (await import(specifier)) as typeof dawn;
  } catch (err) {
    return `package 'webgpu' not installed (${errorMessage(err).split('\n')[0]})`;
  }
  // Dawn warns on every start unless XDG_RUNTIME_DIR names a writable directory.
  process.env.XDG_RUNTIME_DIR ??= os.tmpdir();
  const g = globalThis as unknown as { navigator?: { gpu?: unknown } };
  Object.assign(globalThis, dawn.globals);
  const gpu = dawn.create([]) as { requestAdapter(): Promise<unknown | null> };
  let adapter: unknown | null;
  try {
    adapter = await gpu.requestAdapter();
  } catch (err) {
    return `no WebGPU adapter: ${errorMessage(err)}`;
  }
  if (!adapter) return 'no WebGPU adapter (no GPU with a Vulkan driver on this machine)';
  // tfjs-backend-webgpu looks for navigator.gpu, which Node 20 does not have.
  g.navigator = { ...(g.navigator ?? {}), gpu };
  try {
    await import('@tensorflow/tfjs-backend-webgpu' as string);
  } catch (err) {
    return `package '@tensorflow/tfjs-backend-webgpu' not installed (${errorMessage(err).split('\n')[0]})`;
  }
  return (await trySet('webgpu')) ? null : 'the webgpu backend did not initialise on the adapter found';
}

async function tryWasm(): Promise<string | null> {
  try {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    // Under Node the backend must be told where its .wasm files are (it would look next to the page).
    const require = createRequire(import.meta.url);
    wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep);
    return (await trySet('wasm')) ? null : 'the wasm backend did not initialise';
  } catch (err) {
    return `wasm backend unavailable: ${errorMessage(err)}`;
  }
}

async function tryCpu(): Promise<string | null> {
  await import('@tensorflow/tfjs-backend-cpu');
  return (await trySet('cpu')) ? null : 'the cpu backend did not initialise';
}

const ATTEMPTS: Record<BackendName, (forced: boolean) => Promise<string | null>> = { webgpu: tryWebgpu, wasm: tryWasm, cpu: tryCpu };

async function choose(preferred: BackendName | undefined): Promise<BackendChoice> {
  const skipped: BackendChoice['skipped'] = [];
  for (const backend of preferred ? [preferred] : BACKENDS) {
    const reason = await ATTEMPTS[backend](preferred !== undefined);
    if (reason === null) return { backend, skipped };
    skipped.push({ backend, reason });
  }
  throw new Error(`no TensorFlow.js backend available: ${skipped.map((s) => `${s.backend}: ${s.reason}`).join('; ')}`);
}

const backendInfo = () => gauge({
  name: 'eddy_trainer_backend_info', help: 'The TensorFlow.js backend this trainer trains on (1 for the one in use)', labelNames: ['backend'],
});

/**
 * Initialises the backend once per process and says which (and why not a faster one).
 * `preferred` (EDDY_TRAINER_BACKEND) forces one; an unknown name is refused by the config.
 */
export function selectBackend(logger?: Logger, preferred?: string): Promise<BackendChoice> {
  if (preferred && !(BACKENDS as readonly string[]).includes(preferred)) {
    return Promise.reject(new Error(`unknown TensorFlow.js backend '${preferred}' (one of ${BACKENDS.join(', ')})`));
  }
  selected ??= choose(preferred as BackendName | undefined).then((choice) => {
    for (const b of BACKENDS) backendInfo().set({ backend: b }, b === choice.backend ? 1 : 0);
    logger?.info({ backend: choice.backend, skipped: choice.skipped }, 'TensorFlow.js backend selected');
    return choice;
  });
  return selected;
}

/** The backend's name (what artifacts and ModelPublished record). */
export async function initBackend(logger?: Logger, preferred?: string): Promise<string> {
  return (await selectBackend(logger, preferred)).backend;
}
