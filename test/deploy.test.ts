import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
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
    // The trainer reserves a GPU with the graphics capability: WebGPU reaches it through Vulkan.
    const gpu = JSON.stringify(compose.services.trainer);
    expect(gpu).toContain('"capabilities":["gpu","graphics"]');
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

describe('a production install (npm ci --omit=dev)', () => {
  it('runs eddy config and the commands\' help, and loads every runtime, without a devDependency', () => {
    // A scratch copy of what the Docker runtime image holds (its stage's COPY lines: not client/
    // or simulator/, for one), installed as the image installs it.
    const runtimeStage = dockerfile.slice(dockerfile.indexOf(' AS runtime'), dockerfile.indexOf('FROM runtime AS'));
    const copied = [...runtimeStage.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'bin', 'cli', 'server']));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-prod-'));
    try {
      const files = spawnSync('git', ['ls-files', '-z'], { encoding: 'utf8' }).stdout.split('\0').filter(Boolean)
        .filter((f) => f === 'package-lock.json' || copied.some((c) => f === c || f.startsWith(`${c}/`)));
      for (const f of files) {
        if (!fs.existsSync(f)) continue;
        fs.mkdirSync(path.dirname(path.join(dir, f)), { recursive: true });
        fs.copyFileSync(f, path.join(dir, f));
      }
      const install = spawnSync('npm', ['ci', '--omit=dev', '--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: dir, encoding: 'utf8', timeout: 120_000 });
      expect(install.status, install.stderr).toBe(0);
      // What the lockfile marks as needed only for development (the toolchain) is absent.
      const lock = JSON.parse(fs.readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, { dev?: boolean }> };
      const devOnly = Object.entries(lock.packages).filter(([p, v]) => v.dev && p.split('node_modules/').length === 2).map(([p]) => p);
      expect(devOnly).toEqual(expect.arrayContaining(['node_modules/typescript', 'node_modules/vitest', 'node_modules/@ovotech/avro-ts']));
      for (const p of devOnly) expect(fs.existsSync(path.join(dir, p)), `${p} is needed only for development`).toBe(false);
      const eddy = (...args: string[]) => spawnSync(process.execPath, ['bin/eddy.mjs', ...args], { cwd: dir, encoding: 'utf8', timeout: 30_000 });
      const config = eddy('config');
      expect(config.status, config.stderr).toBe(0);
      expect(config.stdout).toContain('EDDY_KAFKA_BROKERS=');
      // It ran from the start-up build (bin/build.mjs), which a production install can make.
      expect(config.stderr).not.toContain('no start-up build');
      const cache = path.join(dir, 'node_modules', '.cache', 'eddy-build');
      expect(fs.readdirSync(cache).map((checkout) => fs.readdirSync(path.join(cache, checkout)))).toEqual([expect.arrayContaining(['current'])]);
      // Commander registers every command at start, so these load the whole CLI.
      for (const args of [['--help'], ['processors', 'run', '--help'], ['serve', '--help'], ['trainer', 'run', '--help'], ['quality', '--help']]) {
        const r = eddy(...args);
        expect(r.status, `eddy ${args.join(' ')}: ${r.stderr}`).toBe(0);
      }
      // Commands load some modules only when they run (the server, the loader and publisher
      // threads): import them all, as `eddy serve` / `trainer run` / `processors run` would.
      const modules = ['server/index.ts', 'trainer/index.ts', 'processors/index.ts', 'server/artifact-loader.ts', 'server/publisher.ts', 'common/thread-entry.mjs'];
      const load = spawnSync(process.execPath, ['--import', 'tsx/esm', '--input-type=module', '-e',
        `for (const m of ${JSON.stringify(modules.filter((m) => !m.endsWith('.mjs')))}) await import('./' + m);`], { cwd: dir, encoding: 'utf8', timeout: 60_000 });
      expect(load.status, load.stderr).toBe(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  it('the Docker image installs production dependencies only', () => {
    const installs = dockerfile.split('\n').filter((l) => /npm (ci|install)/.test(l));
    for (const l of installs.filter((l) => !/^\s*FROM/.test(l))) {
      if (/npm ci\b/.test(l) && !/--omit=dev/.test(l)) {
        // Only the typecheck stage, which is never shipped, installs everything.
        expect(dockerfile.slice(0, dockerfile.indexOf(l))).toMatch(/AS check\s*\nWORKDIR \/app\s*\nCOPY package\.json package-lock\.json \.\/\s*$/);
      } else {
        expect(l).not.toMatch(/--no-save|\btsx\b/);
      }
    }
  });
});
