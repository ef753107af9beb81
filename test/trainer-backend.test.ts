import fs from 'node:fs';
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { metricsRegistry } from '../common/metrics.ts';
import { selectBackend, tf } from '../trainer/backend.ts';

/**
 * Backend selection: webgpu when a GPU adapter is found, else wasm, else cpu; the reason a faster
 * backend was passed over is reported, and the choice is a metric. Tests never need a GPU: on a
 * machine without one (CI) the choice must be wasm, and webgpu must say why it was skipped.
 */
const gpuDevice = ['/dev/nvidia0', '/dev/dxg', '/dev/dri/renderD128'].some((p) => fs.existsSync(p));

describe('TensorFlow.js backend selection', () => {
  it('falls back to wasm with the reason webgpu was skipped when no GPU is present, and exports the choice', async () => {
    const choice = await selectBackend();
    expect(tf.getBackend()).toBe(choice.backend);
    if (!gpuDevice) {
      expect(choice.backend).toBe('wasm');
      expect(choice.skipped).toEqual([{ backend: 'webgpu', reason: expect.stringMatching(/no GPU device/) }]);
    } else {
      expect(['webgpu', 'wasm']).toContain(choice.backend);
    }
    const info = await metricsRegistry.getSingleMetric('eddy_trainer_backend_info')!.get();
    const value = (b: string) => info.values.find((v) => v.labels.backend === b)?.value;
    expect(value(choice.backend)).toBe(1);
    for (const other of ['webgpu', 'wasm', 'cpu'].filter((b) => b !== choice.backend)) expect(value(other)).toBe(0);
  });

  it('refuses an unknown backend name', async () => {
    await expect(selectBackend(undefined, 'tensorflow-gpu')).rejects.toThrow(/unknown TensorFlow.js backend 'tensorflow-gpu' \(one of webgpu, wasm, cpu\)/);
  });

  it.skipIf(gpuDevice)('forcing webgpu without an adapter fails with the reason instead of training on another backend', () => {
    const script = "import('./trainer/backend.ts').then((b) => b.selectBackend(undefined, 'webgpu')).then((c) => console.log('chose', c.backend), (e) => console.log('refused:', e.message))";
    const out = execFileSync(process.execPath, ['--import', 'tsx', '-e', script], { cwd: `${import.meta.dirname}/..`, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(out).toMatch(/^refused: no TensorFlow.js backend available: webgpu: no WebGPU adapter/);
  });
});
