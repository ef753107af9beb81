import path from 'node:path';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs-core';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';

export { tf };

/**
 * Picks the fastest TensorFlow.js backend this process can use, in the order
 * tfjs-node-gpu (a usable GPU) > tfjs-node > wasm > cpu. The native packages are optional
 * dependencies (the trainer's production image installs tfjs-node-gpu; they cannot install on a
 * machine without network access to their prebuilt libtensorflow), so they are imported
 * dynamically and their absence is normal. The choice is logged and travels in ModelPublished.
 */
let selected: Promise<string> | undefined;

async function tryImport(name: string): Promise<boolean> {
  try {
    // A variable specifier keeps bundlers and tsc from resolving the optional package.
    const specifier = name;
    await import(specifier);
    return true;
  } catch {
    return false;
  }
}

async function trySet(backend: string): Promise<boolean> {
  try {
    if (!(await tf.setBackend(backend))) return false;
    await tf.ready();
    return tf.getBackend() === backend;
  } catch {
    return false;
  }
}

async function choose(preferred: string | undefined, logger?: Logger): Promise<string> {
  const tried: string[] = [];
  const candidates = preferred ? [preferred] : ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'];
  for (const candidate of candidates) {
    tried.push(candidate);
    if (candidate === 'tensorflow-gpu') {
      // tfjs-node-gpu registers the 'tensorflow' backend; it is only worth it when CUDA sees a GPU.
      if (!(await tryImport('@tensorflow/tfjs-node-gpu'))) continue;
      if (await trySet('tensorflow')) {
        const gpu = await gpuUsable();
        if (gpu) return 'tensorflow-gpu';
        logger?.info('tfjs-node-gpu is installed but no GPU is usable; using it on the CPU');
        return 'tensorflow';
      }
      continue;
    }
    if (candidate === 'tensorflow') {
      if ((await tryImport('@tensorflow/tfjs-node')) && (await trySet('tensorflow'))) return 'tensorflow';
      continue;
    }
    if (candidate === 'wasm') {
      try {
        const wasm = await import('@tensorflow/tfjs-backend-wasm');
        // Under Node the backend must be told where its .wasm files are (it would look next to the page).
        const require = createRequire(import.meta.url);
        wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep);
        if (await trySet('wasm')) return 'wasm';
      } catch (err) {
        logger?.warn({ err: errorMessage(err) }, 'wasm backend unavailable');
      }
      continue;
    }
    if (candidate === 'cpu') {
      await import('@tensorflow/tfjs-backend-cpu');
      if (await trySet('cpu')) return 'cpu';
    }
  }
  throw new Error(`no TensorFlow.js backend available (tried ${tried.join(', ')})`);
}

/**
 * tfjs-node-gpu falls back to the CPU silently when CUDA finds no device, so "installed" is not
 * "usable": we look for an NVIDIA device node (and respect CUDA_VISIBLE_DEVICES=-1 / empty).
 */
async function gpuUsable(): Promise<boolean> {
  const visible = process.env.CUDA_VISIBLE_DEVICES;
  if (visible === '' || visible === '-1') return false;
  const fs = await import('node:fs');
  return fs.existsSync('/dev/nvidia0') || fs.existsSync('/dev/dxg');
}

/** Initialises the backend once per process; `preferred` (EDDY_TRAINER_BACKEND) forces one. */
export function initBackend(logger?: Logger, preferred?: string): Promise<string> {
  selected ??= choose(preferred, logger).then((backend) => {
    logger?.info({ backend }, 'TensorFlow.js backend selected');
    return backend;
  });
  return selected;
}
