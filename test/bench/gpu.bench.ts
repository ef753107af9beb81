/**
 * `npm run bench:gpu`: the trainer's TensorFlow.js steps on every backend this machine has, side by
 * side in one run: webgpu (a GPU through Dawn/Vulkan, when an adapter is found), wasm and cpu.
 *
 * Self-contained on purpose: it imports TensorFlow.js and the backends only (no Kafka, Redis,
 * ClickHouse or Eddy modules), so it runs on a GPU machine that reaches no package registry when
 * node, this file and node_modules travel with it (shared/GPU.md describes such a bundle). Each
 * backend runs in its own child process (a TensorFlow.js process has one active backend).
 *
 * Steps, each timed after warm-up, median of BENCH_GPU_REPS (default 5):
 * - embedding-bag step (the sparse kinds' forward + backward: gather rows, scale, segment-sum, and
 *   the scatter-add gradient) at batch 512, 40 features per example, a 20000×20 table;
 * - dense MLP 4096→512→20 forward + backward at batch 1024 (a neural kind's hidden layer);
 * - matmul 2048×2048.
 * Prints a markdown table; BENCH_GPU_BACKENDS=webgpu,wasm,cpu picks backends (default webgpu,wasm:
 * cpu is the last-resort fallback and takes minutes for the MLP step).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';

interface StepResult { step: string; ms: number; perSecond: string }

const REPS = Number(process.env.BENCH_GPU_REPS ?? 5);

async function useBackend(name: string): Promise<string | null> {
  if (name === 'webgpu') {
    let dawn: { create(flags: string[]): { requestAdapter(): Promise<unknown> }; globals: Record<string, unknown> };
    try {
      dawn = (await import('webgpu' as string)) as typeof dawn;
    } catch {
      return "package 'webgpu' not installed";
    }
    process.env.XDG_RUNTIME_DIR ??= os.tmpdir();
    Object.assign(globalThis, dawn.globals);
    const gpu = dawn.create([]);
    if (!(await gpu.requestAdapter())) return 'no WebGPU adapter';
    (globalThis as unknown as { navigator: unknown }).navigator = { gpu };
    await import('@tensorflow/tfjs-backend-webgpu' as string);
  } else if (name === 'wasm') {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const require = createRequire(import.meta.url);
    wasm.setWasmPaths(path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + path.sep);
  } else {
    await import('@tensorflow/tfjs-backend-cpu');
  }
  await tf.setBackend(name);
  await tf.ready();
  return tf.getBackend() === name ? null : `${name} did not initialise`;
}

/** Median wall time of `fn` (which must return tensors to read back, so queued GPU work is included). */
async function timeIt(fn: () => tf.Tensor[]): Promise<number> {
  const once = async () => {
    const t0 = performance.now();
    const out = fn();
    await Promise.all(out.map((t) => t.data()));
    tf.dispose(out);
    return performance.now() - t0;
  };
  await once(); // warm-up: shader / kernel compilation
  const times: number[] = [];
  for (let i = 0; i < REPS; i++) times.push(await once());
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)]!;
}

async function runBackend(name: string): Promise<{ backend: string; skipped?: string; steps: StepResult[] }> {
  const skipped = await useBackend(name);
  if (skipped) return { backend: name, skipped, steps: [] };
  const steps: StepResult[] = [];
  // Embedding bag: 512 examples × 40 features over a 20000-row table of 20 labels.
  const rows = 20_000, labels = 20, batch = 512, perExample = 40;
  const table = tf.randomNormal([rows, labels], 0, 0.01, 'float32', 1);
  const ids = tf.randomUniform([batch * perExample], 0, rows, 'int32', 2);
  const values = tf.randomUniform([batch * perExample, 1], 0, 1, 'float32', 3);
  const segments = tf.tensor1d(Array.from({ length: batch * perExample }, (_, i) => Math.floor(i / perExample)), 'int32');
  const targets = tf.oneHot(tf.randomUniform([batch], 0, labels, 'int32', 4), labels);
  const bagMs = await timeIt(() => {
    const gathered = tf.mul(tf.gather(table, ids), values);
    const logits = tf.reshape(tf.sum(tf.reshape(gathered, [batch, perExample, labels]), 1), [batch, labels]);
    const grad = tf.sub(tf.softmax(logits), targets);
    // The gradient of the gather: each feature's row receives value × its example's gradient.
    const rowGrad = tf.mul(tf.gather(grad, segments), values);
    const tableGrad = tf.scatterND(tf.expandDims(ids, 1), rowGrad, [rows, labels]);
    return [logits, tableGrad];
  });
  steps.push({ step: `embedding-bag step (batch ${batch}, ${perExample} features, ${rows}×${labels})`, ms: bagMs, perSecond: `${Math.round(batch / (bagMs / 1000)).toLocaleString('en-US')} examples/s` });
  // Dense MLP 4096 -> 512 -> 20, forward and backward by hand (tfjs-core registers no gradients by itself).
  const x = tf.randomNormal([1024, 4096], 0, 1, 'float32', 5);
  const w1 = tf.randomNormal([4096, 512], 0, 0.01, 'float32', 6);
  const w2 = tf.randomNormal([512, 20], 0, 0.01, 'float32', 7);
  const y = tf.oneHot(tf.randomUniform([1024], 0, 20, 'int32', 8), 20);
  const mlpMs = await timeIt(() => {
    const h = tf.relu(tf.matMul(x, w1));
    const out = tf.matMul(h, w2);
    const dOut = tf.sub(tf.softmax(out), y);
    const dW2 = tf.matMul(h, dOut, true, false);
    const dH = tf.mul(tf.matMul(dOut, w2, false, true), tf.step(h));
    const dW1 = tf.matMul(x, dH, true, false);
    return [dW1, dW2];
  });
  steps.push({ step: 'dense MLP 4096→512→20 step (batch 1024)', ms: mlpMs, perSecond: `${Math.round(1024 / (mlpMs / 1000)).toLocaleString('en-US')} examples/s` });
  const a = tf.randomNormal([2048, 2048], 0, 1, 'float32', 9);
  const mmMs = await timeIt(() => [tf.matMul(a, a)]);
  steps.push({ step: 'matmul 2048×2048', ms: mmMs, perSecond: `${((2 * 2048 ** 3) / (mmMs / 1000) / 1e9).toFixed(1)} GFLOP/s` });
  return { backend: name, steps };
}

const child = process.argv.indexOf('--backend');
if (child >= 0) {
  const result = await runBackend(process.argv[child + 1]!);
  fs.writeSync(1, `${JSON.stringify(result)}\n`);
  process.exit(0);
}

const backends = (process.env.BENCH_GPU_BACKENDS ?? 'webgpu,wasm').split(',');
const self = fileURLToPath(import.meta.url);
const results = backends.map((b) => {
  process.stderr.write(`[bench:gpu] ${b}…\n`);
  const out = execFileSync(process.execPath, ['--import', 'tsx', self, '--backend', b], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 600_000 });
  return JSON.parse(out.trim().split('\n').pop()!) as Awaited<ReturnType<typeof runBackend>>;
});
const ran = results.filter((r) => !r.skipped);
const cpuModel = os.cpus()[0]?.model ?? 'unknown CPU';
console.log(`\nbench:gpu — ${new Date().toISOString().slice(0, 10)}, ${cpuModel} (${os.cpus().length} cores), node ${process.version}, median of ${REPS}\n`);
console.log(`| step | ${ran.map((r) => r.backend).join(' | ')} |`);
console.log(`|---|${ran.map(() => '---:').join('|')}|`);
for (let i = 0; i < (ran[0]?.steps.length ?? 0); i++) {
  console.log(`| ${ran[0]!.steps[i]!.step} | ${ran.map((r) => `${r.steps[i]!.ms.toFixed(1)} ms (${r.steps[i]!.perSecond})`).join(' | ')} |`);
}
for (const r of results.filter((x) => x.skipped)) console.log(`\n${r.backend}: not measured (${r.skipped})`);
