import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { createRequire } from 'node:module';
import { Producer } from '@platformatic/kafka';
import { afterEach, describe, expect, it } from 'vitest';
import { currentBuild, ENTRY_POINTS, ROOT } from '../bin/build.mjs';
import { startThread } from '../common/threads.ts';
import { lazyLibraryValidators } from '../streams/clients/lazy-validators.ts';

/**
 * What a process does before its first useful work: the start-up build that bin/eddy.mjs runs
 * from, and the Kafka library's validators compiled on first use (docs/reliability.md, "Start-up").
 */

/** A tiny TypeScript project in a temporary directory, with a cache directory of its own. */
function project(files: Record<string, string>): { root: string; cacheDir: string; write(name: string, text: string): void } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-build-'));
  const write = (name: string, text: string) => {
    fs.mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    fs.writeFileSync(path.join(root, name), text);
  };
  for (const [name, text] of Object.entries(files)) write(name, text);
  dirs.push(root);
  return { root, cacheDir: path.join(root, '.cache'), write };
}
const dirs: string[] = [];

/** Every TypeScript and JavaScript module of the production folders, relative to the checkout. */
function productionSources(): string[] {
  return ['bin', 'cli', 'client', 'common', 'featurizer', 'models', 'processors', 'schemas', 'server', 'simulator', 'streams', 'trainer']
    .flatMap((dir) => fs.readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' }).map((f) => path.join(dir, f)))
    .filter((f) => /\.(ts|mts|mjs)$/.test(f));
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const SOURCES = {
  'main.ts': `import { answer } from './lib/answer.ts';\nexport const value: number = answer;\n`,
  'lib/answer.ts': `import fs from 'node:fs';\nexport const answer: number = 41;\nexport const here = import.meta.url;\nexport const data = fs.readFileSync(new URL('./data.txt', import.meta.url), 'utf8');\n`,
  'lib/data.txt': 'beside the source',
  'worker.ts': `import { answer } from './lib/answer.ts';\nexport function run(): number { return answer; }\n`,
};

describe('the start-up build (bin/build.mjs)', () => {
  it('builds the entry points into plain modules that keep each source file\'s import.meta.url', async () => {
    const p = project(SOURCES);
    const build = await currentBuild({ root: p.root, entryPoints: ['main.ts', 'worker.ts', 'lib/answer.ts'], cacheDir: p.cacheDir });
    expect(build.built).toBe(true);
    const src = (name: string) => pathToFileURL(path.join(p.root, name)).href;
    expect(Object.keys(build.files).sort()).toEqual([src('lib/answer.ts'), src('main.ts'), src('worker.ts')]);
    for (const url of Object.values(build.files)) expect(url.startsWith(pathToFileURL(p.cacheDir).href)).toBe(true);
    const main = await import(build.files[src('main.ts')]!) as { value: number };
    expect(main.value).toBe(41);
    const lib = await import(build.files[src('lib/answer.ts')]!) as { here: string; data: string };
    // The built module reads its neighbour in the source tree, as the source does under tsx.
    expect(lib.here).toBe(src('lib/answer.ts'));
    expect(lib.data).toBe('beside the source');
  });

  it('reuses a build while the sources are unchanged and rebuilds when one changes', async () => {
    const p = project(SOURCES);
    const opts = { root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir };
    const first = await currentBuild(opts);
    const again = await currentBuild(opts);
    expect(again).toEqual({ ...first, built: false });

    p.write('lib/answer.ts', SOURCES['lib/answer.ts'].replace('41', '42'));
    const changed = await currentBuild(opts);
    expect(changed.built).toBe(true);
    expect(changed.dir).not.toBe(first.dir);
    const main = await import(Object.values(changed.files)[0]!) as { value: number };
    expect(main.value).toBe(42);
    // Touching a file without changing it does not rebuild (the stamp is the contents).
    fs.utimesSync(path.join(p.root, 'main.ts'), new Date(), new Date(Date.now() + 5000));
    expect((await currentBuild(opts)).built).toBe(false);
    // Back to the first sources (a branch switched back): the build kept from then is used again.
    p.write('lib/answer.ts', SOURCES['lib/answer.ts']);
    expect(await currentBuild(opts)).toEqual({ ...first, built: false });
    expect(await currentBuild(opts)).toEqual({ ...first, built: false });
  });

  it('lets processes that start at once build concurrently and agree on one build', async () => {
    const p = project(SOURCES);
    const opts = { root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir };
    const builds = await Promise.all(Array.from({ length: 4 }, () => currentBuild(opts)));
    expect(new Set(builds.map((b) => b.dir)).size).toBe(1);
    expect(fs.readdirSync(p.cacheDir).filter((n) => n.startsWith('tmp-'))).toEqual([]);
  });

  it('builds without a module that is imported only when a command runs and is absent (as the Docker images leave out simulator/)', async () => {
    const p = project({ ...SOURCES, 'main.ts': `${SOURCES['main.ts']}export const later = () => import('./absent/only-for-a-command.ts');\n` });
    const build = await currentBuild({ root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir });
    const main = await import(Object.values(build.files)[0]!) as { value: number; later(): Promise<unknown> };
    expect(main.value).toBe(41);
    await expect(main.later()).rejects.toThrow(/Cannot find module/);
    // A static import of a missing module is still an error of the build.
    p.write('main.ts', `import { nothing } from './absent/module.ts';\nexport const value = nothing;\n`);
    await expect(currentBuild({ root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir })).rejects.toThrow(/main\.ts:1:\d+: Could not resolve/);
  });

  it('reports a source that does not compile with its file and line', async () => {
    const p = project({ ...SOURCES, 'lib/answer.ts': 'export const answer: number = ;\n' });
    await expect(currentBuild({ root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir }))
      .rejects.toThrow(/^the sources do not build:\n {2}lib\/answer\.ts:1:\d+: /);
    // bin/eddy.mjs tells it from other failures (which fall back to tsx) by its code.
    await expect(currentBuild({ root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir })).rejects.toMatchObject({ code: 'EDDY_BUILD_FAILED' });
  });

  it('bundles the dependencies, and the Kafka library in the bundle still compiles its validators on first use', async () => {
    const lazyValidators = path.join(ROOT, 'streams/clients/lazy-validators.ts');
    const p = project({
      'main.ts': [
        `import { lazyLibraryValidators } from ${JSON.stringify(lazyValidators)};`,
        'lazyLibraryValidators();',
        "const { ajv } = await import('@platformatic/kafka');",
        "export const compiledOnFirstUse = ((): boolean => { try { ajv.compile({ type: 'no such type' }); return true; } catch { return false; } })();",
      ].join('\n'),
    });
    const build = await currentBuild({ root: p.root, entryPoints: ['main.ts'], cacheDir: p.cacheDir });
    const built = fs.readdirSync(build.dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.mjs'));
    const text = built.map((f) => fs.readFileSync(path.join(build.dir, f), 'utf8')).join('\n');
    expect(text).not.toMatch(/from ["']@platformatic\/kafka["']|import\(["']@platformatic\/kafka["']\)/);
    expect(text).toContain('node_modules/@platformatic/kafka/dist/clients/producer/producer.js');
    const main = await import(Object.values(build.files)[0]!) as { compiledOnFirstUse: boolean };
    expect(main.compiledOnFirstUse).toBe(true);
  });

  it('lists every module that a worker thread starts from among its entry points', () => {
    const starters = productionSources().filter((f) => f.endsWith('.ts') && /startThread\(import\.meta\.url/.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
    expect(starters.length).toBeGreaterThan(0);
    expect(ENTRY_POINTS).toEqual(expect.arrayContaining(starters));
  });

  it('starts a worker thread from the build when the process runs from one', async () => {
    const p = project({
      'built.mjs': `import { parentPort } from 'node:worker_threads';\nexport function run(data) { parentPort.postMessage('from the build: ' + data); }\n`,
    });
    const source = pathToFileURL(path.join(p.root, 'not-compiled.ts')).href; // no such file: only the build has it
    const key = Symbol.for('eddy.build');
    const g = globalThis as Record<symbol, unknown>;
    g[key] = { [source]: pathToFileURL(path.join(p.root, 'built.mjs')).href };
    try {
      const worker = startThread(source, 'run', 'hello', 'test-thread');
      const message = await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
      expect(message).toBe('from the build: hello');
      await worker.terminate();
    } finally {
      delete g[key];
    }
  });
});

describe("the Kafka library's option validators, compiled on first use (streams/clients/lazy-validators.ts)", () => {
  const requireFromLibrary = createRequire(createRequire(import.meta.url).resolve('@platformatic/kafka'));
  const { Ajv2020 } = requireFromLibrary('ajv/dist/2020.js') as { Ajv2020: new (opts?: object) => { compile(schema: object): ((data: unknown) => boolean) & { errors?: unknown } } };

  lazyLibraryValidators();

  it('compiles a schema when it first validates, not when the library asks for the validator', () => {
    const ajv = new Ajv2020();
    const validate = ajv.compile({ type: 'no such type' }); // an eager compile throws here
    expect(() => validate({})).toThrow(/type/);
  });

  it('validates as before: same verdict, same errors', () => {
    const ajv = new Ajv2020({ allErrors: true });
    const validate = ajv.compile({ type: 'object', properties: { retries: { type: 'number', minimum: 0 } } });
    expect(validate({ retries: 3 })).toBe(true);
    expect(validate.errors).toBeNull();
    expect(validate({ retries: -3 })).toBe(false);
    expect(validate.errors).toEqual([expect.objectContaining({ instancePath: '/retries', keyword: 'minimum' })]);
    // The library, in its strict mode (the only mode in which it validates options), still refuses bad options.
    expect(() => new Producer({ clientId: 'x', bootstrapBrokers: ['127.0.0.1:1'], retries: -3, strict: true } as never))
      .toThrow('/options/retries must be >= 0, /options/retries must be boolean, /options/retries must match exactly one schema in oneOf.');
  });
});

it('imports the Kafka library in production code only after its validators were made lazy (no static value import)', () => {
  const offenders = productionSources().filter((f) => /^import (?!type )[^;]*from '@platformatic\/kafka'/m.test(fs.readFileSync(path.join(ROOT, f), 'utf8')));
  expect(offenders).toEqual([]);
});
