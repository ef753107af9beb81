import type { TrainingExample, TrainingSet } from './dataset.ts';

/** Named reasons a training set is refused (they travel in ModelRejected.reasons, stage VALIDATION). */
export type ValidationReason =
  | 'TOO_FEW_EXAMPLES' | 'SINGLE_LABEL' | 'LABEL_TOO_FEW_EXAMPLES'
  | 'EMPTY_TEXT' | 'OVERSIZED_TEXT' | 'LABEL_DISTRIBUTION_DRIFT';

export interface ValidationLimits {
  minExamples: number;
  minExamplesPerLabel: number;
  maxTextChars: number;
  /** Empty/oversized texts up to this share are dropped (and counted); above it the set is refused. */
  maxInvalidShare: number;
  /** Total variation distance between label distributions (0..1) above which the set is refused. */
  maxDistributionDrift: number;
}

export interface ValidationResult {
  ok: boolean;
  reasons: ValidationReason[];
  detail: string;
  /** The examples to train on (invalid texts removed). */
  examples: TrainingExample[];
  /** Share of each label among the examples (recorded in the artifact: next time's drift baseline). */
  labelDistribution: Record<string, number>;
  dropped: { emptyText: number; oversizedText: number };
}

export function labelDistribution(examples: readonly { label: string }[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const e of examples) counts[e.label] = (counts[e.label] ?? 0) + 1;
  const n = examples.length || 1;
  return Object.fromEntries(Object.entries(counts).sort(([a], [b]) => (a < b ? -1 : 1)).map(([l, c]) => [l, c / n]));
}

/**
 * Total variation distance over the labels both distributions know (renormalised): labels added
 * or removed since are expected changes, not drift; a sharp shift among the labels that stayed
 * is what signals a broken upstream (everything suddenly assigned to one team).
 */
export function distributionDrift(previous: Record<string, number>, current: Record<string, number>): number {
  const common = Object.keys(previous).filter((l) => l in current);
  if (common.length < 2) return 0;
  const p = common.reduce((s, l) => s + previous[l]!, 0);
  const q = common.reduce((s, l) => s + current[l]!, 0);
  if (p === 0 || q === 0) return 0;
  return common.reduce((s, l) => s + Math.abs(previous[l]! / p - current[l]! / q), 0) / 2;
}

export function validateTrainingSet(set: TrainingSet, limits: ValidationLimits, previous?: { labelDistribution?: Record<string, number>; trainingExamples: number }): ValidationResult {
  const reasons: ValidationReason[] = [];
  const details: string[] = [];
  let emptyText = 0;
  let oversizedText = 0;
  const kept: TrainingExample[] = [];
  for (const e of set.examples) {
    if (e.text.trim() === '') emptyText++;
    else if (e.text.length > limits.maxTextChars) oversizedText++;
    else kept.push(e);
  }
  const total = set.examples.length || 1;
  if (emptyText / total > limits.maxInvalidShare) {
    reasons.push('EMPTY_TEXT');
    details.push(`${emptyText} of ${set.examples.length} examples have an empty text (limit ${(limits.maxInvalidShare * 100).toFixed(0)}%)`);
  }
  if (oversizedText / total > limits.maxInvalidShare) {
    reasons.push('OVERSIZED_TEXT');
    details.push(`${oversizedText} of ${set.examples.length} examples are longer than ${limits.maxTextChars} characters (limit ${(limits.maxInvalidShare * 100).toFixed(0)}%)`);
  }
  if (kept.length < limits.minExamples) {
    reasons.push('TOO_FEW_EXAMPLES');
    details.push(`${kept.length} usable examples, at least ${limits.minExamples} needed`);
  }
  const perLabel = new Map<string, number>(set.labels.map((l) => [l, 0]));
  for (const e of kept) perLabel.set(e.label, (perLabel.get(e.label) ?? 0) + 1);
  for (const d of set.definitions) perLabel.set(d.label, (perLabel.get(d.label) ?? 0) + 1);
  const trainable = [...perLabel.values()].filter((c) => c > 0).length;
  if (trainable < 2) {
    reasons.push('SINGLE_LABEL');
    details.push(`${trainable} label(s) with data; a classifier needs at least 2`);
  }
  const thin = [...perLabel].filter(([, c]) => c < limits.minExamplesPerLabel).map(([l, c]) => `${l} (${c})`);
  if (thin.length > 0 && trainable >= 2) {
    reasons.push('LABEL_TOO_FEW_EXAMPLES');
    details.push(`labels with fewer than ${limits.minExamplesPerLabel} examples (definitions count): ${thin.slice(0, 10).join(', ')}${thin.length > 10 ? ', ...' : ''}`);
  }
  const dist = labelDistribution(kept);
  if (previous?.labelDistribution && previous.trainingExamples >= 50 && kept.length >= 50) {
    const drift = distributionDrift(previous.labelDistribution, dist);
    if (drift > limits.maxDistributionDrift) {
      reasons.push('LABEL_DISTRIBUTION_DRIFT');
      details.push(`label distribution moved by ${drift.toFixed(2)} (total variation) since the previous training set (limit ${limits.maxDistributionDrift})`);
    }
  }
  return { ok: reasons.length === 0, reasons, detail: details.join('; '), examples: kept, labelDistribution: dist, dropped: { emptyText, oversizedText } };
}
