import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { describeConfig } from '../common/config.ts';

/**
 * docker-compose.yml cannot run here (no Docker engine), so this test keeps it consistent with the
 * code instead: every EDDY_* variable it sets exists, every command its images run is a real `eddy`
 * command, and every file it mounts is in the repository.
 */
interface ComposeService {
  build?: { target?: string; dockerfile?: string };
  environment?: Record<string, unknown>;
  command?: string[];
  volumes?: Array<string>;
}

const compose = parse(fs.readFileSync('docker-compose.yml', 'utf8'), { merge: true }) as {
  services: Record<string, ComposeService>;
  secrets?: Record<string, { file: string }>;
};
const dockerfile = fs.readFileSync('deploy/Dockerfile', 'utf8');

/** The CMD of each Dockerfile stage, e.g. { server: ['serve'] }. */
function stageCommands(): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let stage = '';
  for (const line of dockerfile.split('\n')) {
    const from = /^FROM\s+\S+\s+AS\s+(\S+)/i.exec(line);
    if (from) stage = from[1]!;
    const cmd = /^CMD\s+(\[.*\])/.exec(line);
    if (cmd && stage) out[stage] = JSON.parse(cmd[1]!) as string[];
  }
  return out;
}

describe('docker-compose.yml stays consistent with the code', () => {
  const known = new Set(describeConfig().map((v) => v.name));
  const eddyServices = Object.entries(compose.services).filter(([, s]) => s.build?.dockerfile === 'deploy/Dockerfile');

  it('has the production-shaped services', () => {
    const names = Object.keys(compose.services);
    for (const n of ['kafka', 'registry', 'redis', 'clickhouse', 'processors', 'trainer', 'server-1', 'server-2', 'gateway', 'prometheus', 'grafana']) {
      expect(names, n).toContain(n);
    }
    const gpu = JSON.stringify(compose.services.trainer);
    expect(gpu).toContain('"capabilities":["gpu"]');
  });

  it('sets only EDDY_* variables that the configuration schema defines', () => {
    expect(eddyServices.length).toBeGreaterThan(3);
    for (const [name, service] of eddyServices) {
      for (const key of Object.keys(service.environment ?? {})) {
        if (key.startsWith('EDDY_')) expect(known.has(key), `${name}: ${key}`).toBe(true);
      }
    }
  });

  it('runs real eddy commands in every image', () => {
    const commands = stageCommands();
    const distinct = new Map<string, string>();
    for (const [name, service] of eddyServices) {
      const argv = service.command ?? commands[service.build!.target!];
      expect(argv, `${name} has a command`).toBeDefined();
      distinct.set(argv!.filter((a) => !a.startsWith('-')).join(' '), name);
    }
    for (const [sub, name] of distinct) {
      const r = spawnSync(process.execPath, ['bin/eddy.mjs', ...sub.split(' '), '--help'], { encoding: 'utf8', timeout: 30_000 });
      expect(r.status, `${name}: eddy ${sub} --help\n${r.stderr}`).toBe(0);
    }
  });

  it('mounts only files that exist in the repository', () => {
    for (const [name, service] of Object.entries(compose.services)) {
      for (const v of service.volumes ?? []) {
        const source = v.split(':')[0]!;
        if (source.startsWith('./')) expect(fs.existsSync(source), `${name}: ${source}`).toBe(true);
      }
    }
    for (const [name, secret] of Object.entries(compose.secrets ?? {})) {
      // The real key file is created by the operator from the committed example.
      expect(fs.existsSync(secret.file.replace(/\.txt$/, '.example.txt')), name).toBe(true);
    }
  });
});
