import type { KindTrainer } from './kind.ts';
import { embeddingBagTrainer } from './embedding-bag/fit.ts';
import { sparseLinearTrainer } from './sparse-linear/fit.ts';

/**
 * The training halves of the model kinds (TensorFlow.js), by kind name. Only the trainer imports
 * this module: servers load the serving halves (models/kinds/index.ts) and never TensorFlow.
 */
const TRAINERS: ReadonlyMap<string, KindTrainer> = new Map<string, KindTrainer>(
  [sparseLinearTrainer as KindTrainer, embeddingBagTrainer as KindTrainer].map((t) => [t.kind.name, t]),
);

export function kindTrainer(name: string): KindTrainer | undefined {
  return TRAINERS.get(name);
}
