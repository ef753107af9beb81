import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The floors of shared/ARCHITECTURE.md, enforced by dependency-cruiser (.dependency-cruiser.cjs,
 * `npm run lint:deps`, part of `npm test`). These tests plant wrong imports in a scratch tree with
 * the project's own rules and check that each fails with a message naming both files (the real
 * tree is checked by `npm run lint:deps` before the tests run).
 */
const root = process.cwd();
const depcruise = path.join(root, 'node_modules', '.bin', 'depcruise');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-floors-'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function cruise(cwd: string, dirs: string[]): { status: number | null; out: string } {
  const r = spawnSync(depcruise, ['--config', path.join(root, '.dependency-cruiser.cjs'), ...dirs], { cwd, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A tree with `files` (path -> source), the project's tsconfig and package.json, and its node_modules. */
function tree(name: string, files: Record<string, string>): string {
  const dir = path.join(scratch, name);
  for (const [file, source] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), source);
  }
  fs.copyFileSync(path.join(root, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return dir;
}

describe('dependencies point down (dependency-cruiser)', () => {
  const planted: Array<{ rule: string; from: string; to: string; files: Record<string, string> }> = [
    { rule: 'runtimes-are-siblings', from: 'trainer/gate.ts', to: 'server/registry.ts', files: { 'trainer/gate.ts': "import { x } from '../server/registry.ts';\nexport const y = x;\n", 'server/registry.ts': 'export const x = 1;\n' } },
    { rule: 'runtimes-are-siblings', from: 'server/dashboard/data.ts', to: 'processors/monitor/store.ts', files: { 'server/dashboard/data.ts': "import { x } from '../../processors/monitor/store.ts';\nexport const y = x;\n", 'processors/monitor/store.ts': 'export const x = 1;\n' } },
    { rule: 'shared-code-stays-below', from: 'models/lifecycle.ts', to: 'server/log-follower.ts', files: { 'models/lifecycle.ts': "import { x } from '../server/log-follower.ts';\nexport const y = x;\n", 'server/log-follower.ts': 'export const x = 1;\n' } },
    { rule: 'common-is-the-floor', from: 'common/metrics.ts', to: 'streams/lag.ts', files: { 'common/metrics.ts': "import { x } from '../streams/lag.ts';\nexport const y = x;\n", 'streams/lag.ts': 'export const x = 1;\n' } },
    { rule: 'simulator-is-an-upstream-service', from: 'simulator/workload.ts', to: 'trainer/model.ts', files: { 'simulator/workload.ts': "import { x } from '../trainer/model.ts';\nexport const y = x;\n", 'trainer/model.ts': 'export const x = 1;\n' } },
    { rule: 'cli-uses-public-entry-points', from: 'cli/monitor-commands.ts', to: 'server/dashboard/data.ts', files: { 'cli/monitor-commands.ts': "import { x } from '../server/dashboard/data.ts';\nexport const y = x;\n", 'server/dashboard/data.ts': 'export const x = 1;\n' } },
    { rule: 'no-dev-tool-at-run-time', from: 'streams/codec.ts', to: 'schemas/generate.ts', files: { 'streams/codec.ts': "import { x } from '../schemas/generate.ts';\nexport const y = x;\n", 'schemas/generate.ts': 'export const x = 1;\n' } },
    { rule: 'no-dev-dependency-at-run-time', from: 'server/app.ts', to: 'vitest', files: { 'server/app.ts': "import { expect } from 'vitest';\nexport const y = expect;\n" } },
    { rule: 'no-circular', from: 'streams/a.ts', to: 'streams/b.ts', files: { 'streams/a.ts': "import { b } from './b.ts';\nexport const a = () => b;\n", 'streams/b.ts': "import { a } from './a.ts';\nexport const b = () => a;\n" } },
  ];

  for (const [i, p] of planted.entries()) {
    it(`fails on a planted ${p.from} -> ${p.to} (${p.rule})`, () => {
      const dir = tree(`case${i}`, p.files);
      const folders = [...new Set(Object.keys(p.files).map((f) => f.split('/')[0]!))];
      const r = cruise(dir, folders);
      expect(r.status, r.out).not.toBe(0);
      expect(r.out).toContain(`error ${p.rule}:`);
      expect(r.out).toContain(p.from);
      expect(r.out).toContain(p.to);
    });
  }
});
