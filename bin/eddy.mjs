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
  process.setSourceMapsEnabled(true); // stack traces name the TypeScript sources, as under tsx
  // Worker threads start from the same build (common/threads.ts passes this to each thread).
  globalThis[Symbol.for('eddy.build')] = build.files;
  await import(build.files[new URL('../cli/main.ts', import.meta.url).href]);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
