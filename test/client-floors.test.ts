import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';

/**
 * The client's place in the floors (.dependency-cruiser.cjs): client/ uses the contracts
 * (schemas/), Kafka (streams/) and common/ only, and nothing but tests imports client/. Planted
 * wrong imports in a scratch tree with the project's own rules must fail, naming both files.
 */
const root = process.cwd();
const depcruise = path.join(root, 'node_modules', '.bin', 'depcruise');
const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-client-floors-'));

afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

function cruise(name: string, files: Record<string, string>): { status: number | null; out: string } {
  const dir = path.join(scratch, name);
  for (const [file, source] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), source);
  }
  fs.copyFileSync(path.join(root, 'tsconfig.json'), path.join(dir, 'tsconfig.json'));
  fs.copyFileSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  const folders = [...new Set(Object.keys(files).map((f) => f.split('/')[0]!))];
  const r = spawnSync(depcruise, ['--config', path.join(root, '.dependency-cruiser.cjs'), ...folders], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

const module = (name: string) => `export const ${name} = 1;\n`;

describe('the client in the floors (dependency-cruiser)', () => {
  const planted: Array<{ rule: string; from: string; to: string; files: Record<string, string> }> = [
    { rule: 'client-uses-contracts-only', from: 'client/index.ts', to: 'server/app.ts', files: { 'client/index.ts': "import { x } from '../server/app.ts';\nexport const y = x;\n", 'server/app.ts': module('x') } },
    { rule: 'client-uses-contracts-only', from: 'client/index.ts', to: 'models/explain.ts', files: { 'client/index.ts': "import { x } from '../models/explain.ts';\nexport const y = x;\n", 'models/explain.ts': module('x') } },
    { rule: 'nothing-imports-the-client', from: 'server/main.ts', to: 'client/index.ts', files: { 'server/main.ts': "import { x } from '../client/index.ts';\nexport const y = x;\n", 'client/index.ts': module('x') } },
  ];
  for (const [i, p] of planted.entries()) {
    it(`fails on a planted ${p.from} -> ${p.to} (${p.rule})`, () => {
      const r = cruise(`case${i}`, p.files);
      expect(r.status, r.out).not.toBe(0);
      expect(r.out).toContain(`error ${p.rule}:`);
      expect(r.out).toContain(p.from);
      expect(r.out).toContain(p.to);
    });
  }

  it('allows what the client is for: schemas, streams, common; and tests importing it', () => {
    const r = cruise('allowed', {
      'client/index.ts': "import { a } from '../schemas/a.ts';\nimport { b } from '../streams/b.ts';\nimport { c } from '../common/c.ts';\nexport const y = a + b + c;\n",
      'schemas/a.ts': module('a'), 'streams/b.ts': module('b'), 'common/c.ts': module('c'),
      'test/t.ts': "import { y } from '../client/index.ts';\nexport const z = y;\n",
    });
    expect(r.status, r.out).toBe(0);
  });
});
