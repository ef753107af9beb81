// Entry of the PredictionMade publisher thread (see server/publisher.ts). A worker thread starts
// without the main thread's module hooks, so it registers tsx itself, as bin/eddy.mjs does.
import { register } from 'tsx/esm/api';

register();
const { runPublisherThread } = await import('./publisher.ts');
await runPublisherThread();
