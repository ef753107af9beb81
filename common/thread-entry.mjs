// Entry of Eddy's worker threads (common/threads.ts): runs the named export of the named module
// with the thread's data. When the main thread runs from the start-up build (bin/build.mjs), the
// module comes from the same build; otherwise (tests, tsx scripts, a module the build does not
// list) the thread registers tsx itself, since it does not inherit the main thread's module hooks.
import { workerData } from 'node:worker_threads';

const { module, entry, data, build } = workerData;
let url = build?.[module];
if (!url) {
  const { register } = await import('tsx/esm/api');
  register();
  url = module;
}
const loaded = await import(url);
await loaded[entry](data);
