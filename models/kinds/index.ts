import type { ModelKind } from './kind.ts';
import { embeddingBag } from './embedding-bag/index.ts';
import { sparseLinear } from './sparse-linear/index.ts';

export type { FitData, FitOptions, KindTrainer, ModelKind, Scorer } from './kind.ts';

/** Every model kind this build can serve, by `manifest.model.kind` (the serving halves: pure JS). */
const KINDS: ReadonlyMap<string, ModelKind> = new Map<string, ModelKind>(
  [sparseLinear as ModelKind, embeddingBag as ModelKind].map((k) => [k.name, k]),
);

/** The kind of an artifact, or undefined when this build does not implement it. */
export function modelKind(name: string): ModelKind | undefined {
  return KINDS.get(name);
}

export const MODEL_KIND_NAMES: readonly string[] = [...KINDS.keys()];
