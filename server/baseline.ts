import type { LabelDefinition } from './labels.ts';

/**
 * The answer for a client that has no servable model yet: score each label by how many of its
 * keywords and description words occur in the text; with no overlap at all, fall back to the
 * majority label (most labelled examples seen on the `examples` topic, then definition order).
 * Deliberately simple and explainable: it only has to be better than nothing until the first
 * model is trained, and it must never fail.
 */

const STOPWORDS = new Set([
  'a', 'an', 'and', 'are', 'as', 'at', 'be', 'by', 'for', 'from', 'has', 'in', 'is', 'it', 'its', 'of', 'on',
  'or', 'that', 'the', 'to', 'was', 'were', 'will', 'with', 'my', 'our', 'we', 'you', 'your', 'i', 'me', 'this',
  'team', 'handles', 'all', 'any', 'not', 'no', 'can', 'do', 'does',
]);

export function baselineTokens(text: string): string[] {
  return text.toLowerCase().normalize('NFKC').split(/[^\p{L}\p{N}]+/u).filter((t) => t.length > 1 && !STOPWORDS.has(t));
}

export interface BaselineResult {
  label: string;
  scores: Array<{ label: string; score: number }>;
}

export function baselinePredict(
  text: string,
  labels: readonly LabelDefinition[],
  exampleCounts: ReadonlyMap<string, number> | undefined,
  topK: number,
): BaselineResult | undefined {
  if (labels.length === 0) return undefined;
  const words = new Set(baselineTokens(text));
  const raw = labels.map((def, order) => {
    let score = 0;
    // A keyword is an explicit routing hint; it counts more than a word of the description.
    for (const k of def.keywords) {
      const kt = baselineTokens(k);
      if (kt.length > 0 && kt.every((t) => words.has(t))) score += 2;
    }
    for (const t of new Set(baselineTokens(`${def.label} ${def.description}`))) if (words.has(t)) score += 1;
    return { label: def.label, score, prior: exampleCounts?.get(def.label) ?? 0, order };
  });
  raw.sort((a, b) => b.score - a.score || b.prior - a.prior || a.order - b.order);
  // Scores are a distribution: overlap counts (plus a small prior so ties keep the majority order).
  const totalPrior = raw.reduce((s, r) => s + r.prior, 0) || 1;
  const weights = raw.map((r) => r.score + 0.5 * (r.prior / totalPrior) + 0.01);
  const sum = weights.reduce((s, w) => s + w, 0);
  const scores = raw.slice(0, topK).map((r, i) => ({ label: r.label, score: weights[i]! / sum }));
  return { label: raw[0]!.label, scores };
}
