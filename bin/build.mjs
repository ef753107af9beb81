// Eddy's start-up build: the CLI and its worker threads bundled by esbuild, so that a process
// starts from a few plain JavaScript files instead of compiling and resolving ~100 TypeScript
// modules through tsx's loader hooks (which run every import, node_modules included, through a
// hooks thread of their own: ~1 s of a 2-core machine's start-up, more under load). There is still
// no build step to remember: each launch checks the build against the sources' contents (~10 ms)
// and rebuilds when anything changed (~1 s); when no build can be made (a read-only install), the
// caller falls back to tsx. Plain Node, no TypeScript: it runs before anything is compiled.
//
// Built files keep the meaning of `import.meta.url` in the sources (each module's own source
// URL, substituted at build time), so paths relative to a source file (schemas/avro, the dashboard's
// static files, package.json, a thread's module) resolve as they do under tsx.
//
// Dependencies are bundled too (all but EXTERNAL): Node's loader spends most of a process's
// start-up on them otherwise — ~400 small ESM and CommonJS files for the Kafka library, the
// schema registry client, ioredis, Fastify and the rest, each resolved, stat'ed, read, checked for
// its format and compiled apart. Bundled, the processors start on ~25 % less CPU and the server on
// ~20 % less (BENCHMARKS.md, "Start-up with the dependencies bundled"). The build is then also a
// function of the installed dependencies: the stamp includes npm's record of what is installed.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/**
 * The build's entry points, relative to the checkout: the CLI, and every module a worker thread
 * starts from (common/threads.ts `startThread`). A thread module missing here still works: its
 * thread falls back to tsx (slower to start); test/build.test.ts keeps this list complete.
 */
export const ENTRY_POINTS = ['cli/main.ts', 'server/publisher.ts', 'server/artifact-loader.ts'];

/**
 * Dependencies left to Node, each for a reason: TensorFlow.js (large, only the trainer loads it,
 * its backends find their .wasm binaries beside their own files and register on one tfjs-core
 * instance), @platformatic/wasm-utils (reads its .wasm beside its own file), webgpu (an optional
 * native addon), esbuild and tsx (the build and its fallback, never part of a running process).
 */
export const EXTERNAL = ['@tensorflow/*', '@platformatic/wasm-utils', 'webgpu', 'esbuild', 'tsx'];

/** Bump when the build's options change, so that older builds are not reused. */
const FORMAT = 2;

/**
 * A bundled CommonJS dependency that calls `require` at run time (a Node built-in, an optional
 * package) finds it through this, as it would in node_modules. (`__dirname` stays undefined: the
 * two bundled packages that use it, ioredis for its own version and pino for transports, which
 * Eddy does not use, catch the error or never get there.)
 */
const BANNER = "import { createRequire as __eddyCreateRequire } from 'node:module'; const require = __eddyCreateRequire(import.meta.url);";
/** Builds kept besides the current one (a long-running process may still start threads from one). */
const KEEP = 3;

/**
 * The current build of `root` (built now if missing or stale): `{ dir, files }`, `files` mapping
 * each entry's source URL to its built file's URL. Throws an error with code EDDY_BUILD_FAILED when
 * esbuild cannot build the sources (the message holds esbuild's errors).
 * @param {{ root?: string, entryPoints?: string[], cacheDir?: string }} [opts]
 * @returns {Promise<{ dir: string, files: Record<string, string>, built: boolean }>}
 */
export async function currentBuild(opts = {}) {
  const root = opts.root ?? ROOT;
  const entryPoints = opts.entryPoints ?? ENTRY_POINTS;
  // One cache per checkout: worktrees that share a node_modules (a symlink) keep their builds apart.
  const cacheDir = opts.cacheDir ?? path.join(root, 'node_modules', '.cache', 'eddy-build', createHash('sha256').update(root).digest('hex').slice(0, 12));
  // esbuild's version from its package.json: importing esbuild itself costs ~60 ms, needed only to build.
  const esbuildVersion = createRequire(import.meta.url)('esbuild/package.json').version;
  const salt = JSON.stringify({ FORMAT, esbuild: esbuildVersion, node: process.versions.node, root, entryPoints, installed: installedDependencies(root) });

  // The current build first, then the others kept (a branch switched back and forth).
  for (const existing of keptBuilds(cacheDir)) {
    if (stampOf(salt, root, existing.inputs) !== existing.stamp) continue;
    if (!existing.current) setCurrent(cacheDir, existing.stamp);
    return { dir: existing.dir, files: existing.files, built: false };
  }

  const esbuild = await import('esbuild');
  fs.mkdirSync(cacheDir, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(cacheDir, 'tmp-'));
  try {
    const contents = new Map(); // relative path → the exact text that went into the build
    const result = await esbuild.build({
      absWorkingDir: root,
      entryPoints,
      outdir: tmp,
      outbase: root,
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: `node${process.versions.node.split('.')[0]}`,
      external: EXTERNAL,
      // Dependencies resolve from the checkout's node_modules, also for sources outside it (tests).
      nodePaths: [path.join(ROOT, 'node_modules')],
      banner: { js: BANNER },
      outExtension: { '.js': '.mjs' },
      chunkNames: 'chunks/[name]-[hash]',
      sourcemap: 'linked',
      sourcesContent: false,
      metafile: true,
      logLevel: 'silent',
      plugins: [ownSources(root, contents)],
    });
    const files = {};
    for (const [out, meta] of Object.entries(result.metafile.outputs)) {
      if (meta.entryPoint) files[pathToFileURL(path.join(root, meta.entryPoint)).href] = path.relative(tmp, path.join(root, out));
    }
    const inputs = [...contents.keys()].sort();
    const stamp = hashOf(salt, inputs.map((rel) => [rel, contents.get(rel)]));
    const dir = path.join(cacheDir, stamp);
    fs.writeFileSync(path.join(tmp, 'build.json'), JSON.stringify({ stamp, inputs, files }));
    try {
      fs.renameSync(tmp, dir);
    } catch (err) {
      // Another process made the same build meanwhile (tests start many at once): use theirs.
      if (!fs.existsSync(path.join(dir, 'build.json'))) throw err;
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    setCurrent(cacheDir, stamp);
    prune(cacheDir, stamp);
    return { dir, files: absolute(dir, files), built: true };
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    if (err && Array.isArray(err.errors) && err.errors.length) {
      const shown = err.errors.slice(0, 5).map((e) => `${e.location ? `${e.location.file}:${e.location.line}:${e.location.column}: ` : ''}${e.text}`);
      throw Object.assign(new Error(`the sources do not build:\n  ${shown.join('\n  ')}`), { code: 'EDDY_BUILD_FAILED' });
    }
    throw err;
  }
}

/**
 * The builds in the cache, the one named by `current` first; incomplete ones are skipped. Read one
 * at a time: a launch whose current build is up to date reads only that one.
 */
function* keptBuilds(cacheDir) {
  let current;
  try {
    current = fs.readFileSync(path.join(cacheDir, 'current'), 'utf8').trim();
  } catch { /* none yet */ }
  const read = (name) => {
    try {
      const dir = path.join(cacheDir, name);
      const build = JSON.parse(fs.readFileSync(path.join(dir, 'build.json'), 'utf8'));
      return { dir, stamp: build.stamp, inputs: build.inputs, files: absolute(dir, build.files), current: name === current };
    } catch {
      return undefined; // being written or removed
    }
  };
  const first = current && read(current);
  if (first) yield first;
  let names;
  try {
    names = fs.readdirSync(cacheDir).filter((n) => n !== current && n !== 'current' && !n.startsWith('tmp-') && !n.startsWith('current-'));
  } catch {
    return;
  }
  for (const name of names) {
    const build = read(name);
    if (build) yield build;
  }
}

function setCurrent(cacheDir, stamp) {
  const tmp = path.join(cacheDir, `current-${process.pid}`);
  fs.writeFileSync(tmp, stamp);
  fs.renameSync(tmp, path.join(cacheDir, 'current'));
}

function absolute(dir, files) {
  return Object.fromEntries(Object.entries(files).map(([src, rel]) => [src, pathToFileURL(path.join(dir, rel)).href]));
}

/**
 * What is installed in node_modules, as npm records it (its hidden lockfile, rewritten by every
 * install; the package lock where there is none), and the patches applied to it (patches/, by
 * patch-package after each install): a build made before an install of other versions, or
 * before a patch changed, is not reused. An edit by hand inside node_modules is not noticed;
 * delete node_modules/.cache/eddy-build after one.
 */
function installedDependencies(root) {
  const h = createHash('sha256');
  for (const file of [path.join(root, 'node_modules', '.package-lock.json'), path.join(root, 'package-lock.json')]) {
    try {
      h.update(fs.readFileSync(file));
      break;
    } catch { /* not there */ }
  }
  const patches = path.join(root, 'patches');
  let names = [];
  try {
    names = fs.readdirSync(patches).sort();
  } catch { /* none */ }
  for (const name of names) h.update(name).update(fs.readFileSync(path.join(patches, name)));
  return h.digest('hex').slice(0, 20);
}

/** The stamp the inputs have now (a missing input gives a stamp no build has). */
function stampOf(salt, root, inputs) {
  try {
    return hashOf(salt, inputs.map((rel) => [rel, fs.readFileSync(path.join(root, rel), 'utf8')]));
  } catch {
    return '';
  }
}

function hashOf(salt, entries) {
  const h = createHash('sha256').update(salt);
  for (const [rel, text] of entries) h.update(`\0${rel}\0${text.length}\0`).update(text);
  return h.digest('hex').slice(0, 20);
}

/**
 * Removes older builds, keeping the newest few (a running process may still start a thread from
 * one), and what a build that died half-way left behind. Best effort: another process may be
 * pruning at the same moment.
 */
function prune(cacheDir, keep) {
  const builds = [];
  for (const d of fs.readdirSync(cacheDir, { withFileTypes: true })) {
    if (!d.isDirectory() || d.name === keep) continue;
    try {
      const mtime = fs.statSync(path.join(cacheDir, d.name)).mtimeMs;
      if (d.name.startsWith('tmp-')) {
        if (Date.now() - mtime > 3600_000) fs.rmSync(path.join(cacheDir, d.name), { recursive: true, force: true });
      } else {
        builds.push({ name: d.name, mtime });
      }
    } catch { /* removed meanwhile */ }
  }
  builds.sort((a, b) => b.mtime - a.mtime);
  for (const old of builds.slice(KEEP)) fs.rmSync(path.join(cacheDir, old.name), { recursive: true, force: true });
}

/**
 * esbuild plugin: loads every file of the checkout (not node_modules) itself, to record the exact
 * text built (the stamp) and to replace `import.meta.url` with the file's own URL.
 */
function ownSources(root, contents) {
  const loaders = { '.ts': 'ts', '.mts': 'ts', '.js': 'js', '.mjs': 'js', '.json': 'json' };
  return {
    name: 'eddy-own-sources',
    setup(build) {
      // A module that a command imports only when it runs may be absent from an install (the
      // Docker images leave out simulator/, which only `eddy demo` imports): left to Node, as under
      // tsx, it fails when that command runs instead of failing every build.
      build.onResolve({ filter: /^\.\.?\// }, (args) => {
        if (args.kind !== 'dynamic-import') return undefined;
        const file = path.resolve(args.resolveDir, args.path);
        return fs.existsSync(file) ? undefined : { path: pathToFileURL(file).href, external: true };
      });
      build.onLoad({ filter: /\.(ts|mts|js|mjs|json)$/ }, (args) => {
        if (args.path.includes(`${path.sep}node_modules${path.sep}`)) return undefined;
        const text = fs.readFileSync(args.path, 'utf8');
        contents.set(path.relative(root, args.path), text);
        const loader = loaders[path.extname(args.path)];
        const url = JSON.stringify(pathToFileURL(args.path).href);
        return { contents: loader === 'json' ? text : text.replaceAll('import.meta.url', url), loader };
      });
    },
  };
}
