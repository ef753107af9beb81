#!/usr/bin/env node
// Eddy's command line. The sources are TypeScript; each launch runs them from the start-up build
// (bin/build.mjs: bundled by esbuild, rebuilt whenever a source changed, so there is still no build
// step between editing and running) and falls back to compiling them through tsx when no build can
// be made. `npm run typecheck` keeps them honest.
import { currentBuild } from './build.mjs';

let build;
try {
  build = await currentBuild();
} catch (err) {
  const message = err instanceof Error ? err.message : String(err);
  if (err?.code === 'EDDY_BUILD_FAILED') {
    process.stderr.write(`eddy: ${message}\n`);
    process.exit(1);
  }
  process.stderr.write(`eddy: no start-up build (${message}); compiling the sources on load instead\n`);
}
if (build) {
  // No source maps by default: with them on, Node reads and parses the map of every built file
  // at load and maps each stack formatted, ~0.15-0.2 s of CPU per start (the Kafka library alone
  // formats a stack for every connection it closes). The maps are written beside the build:
  // NODE_OPTIONS=--enable-source-maps makes stack traces name the TypeScript sources again.
  // Worker threads start from the same build (common/threads.ts passes this to each thread).
  globalThis[Symbol.for('eddy.build')] = build.files;
  await import(build.files[new URL('../cli/main.ts', import.meta.url).href]);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
