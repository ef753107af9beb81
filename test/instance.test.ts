import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterEach, describe, expect, it } from 'vitest';
import { claimInstanceId } from '../streams/instance.ts';

/** The static-membership identity (streams/instance.ts): stable across a crash, unique among live processes. */
describe('consumer instance ids', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-instance-test-'));
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('uses EDDY_INSTANCE_ID as it is', () => {
    expect(claimInstanceId('pod-3', 'g', dir).id).toBe('pod-3');
  });

  it('gives two live members of one group different ids, and a freed or dead slot back to the next', () => {
    const a = claimInstanceId('', 'g', dir);
    const b = claimInstanceId('', 'g', dir);
    expect(a.id).not.toBe(b.id);
    expect(claimInstanceId('', 'other-group', dir).id).toBe(a.id);
    a.release();
    const c = claimInstanceId('', 'g', dir);
    expect(c.id).toBe(a.id);
    // A process that died without releasing (kill -9): its slot is taken over by the next one.
    const dead = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    c.release();
    b.release();
    fs.mkdirSync(path.join(dir, 'g'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'g', '0'), dead);
    expect(claimInstanceId('', 'g', dir).id).toBe(a.id);
  });
});
