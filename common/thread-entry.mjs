// Entry of Eddy's worker threads (common/threads.ts). A new thread does not inherit the main
// thread's module hooks, so it registers tsx itself (the sources are TypeScript, as in bin/eddy.mjs),
// then runs the named export of the named module with the thread's data.
import { workerData } from 'node:worker_threads';
import { register } from 'tsx/esm/api';

register();
const { module, entry, data } = workerData;
const loaded = await import(module);
await loaded[entry](data);
