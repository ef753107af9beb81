import type { Explanation, TermContribution } from '../models/explain.ts';
import { baselineTokens } from './baseline.ts';
import type { LabelDefinition } from './labels.ts';

/**
 * Explanations of the baseline's answers (clients without a model): the baseline scores a label
 * by its keywords found in the text (2 points each) and the words of its name and description
 * found in it (1 point each), so the terms ARE the score: exact, method `keyword-overlap`.
 * Contributions are those points; the spans are the words as the user typed them.
 */
export function explainBaseline(text: string, definitions: readonly LabelDefinition[], labels: readonly string[], maxTerms: number): Explanation {
  // Every word of the text with where it is, in the baseline's own normal form.
  const positions = new Map<string, Array<[number, number]>>();
  for (const m of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    const [word] = baselineTokens(m[0]);
    if (!word) continue;
    let list = positions.get(word);
    if (!list) positions.set(word, (list = []));
    list.push([m.index!, m.index! + m[0].length]);
  }
  const surface = (spans: Array<[number, number]>) => [...new Set(spans.map(([s, e]) => text.slice(s, e)))].join(' / ');
  const byLabel = new Map(definitions.map((d) => [d.label, d]));
  return {
    method: 'keyword-overlap',
    exact: true,
    labels: labels.map((label) => {
      const def = byLabel.get(label);
      const terms: TermContribution[] = [];
      if (def) {
        for (const k of def.keywords) {
          const kt = baselineTokens(k);
          if (kt.length === 0 || !kt.every((t) => positions.has(t))) continue;
          const spans = kt.flatMap((t) => positions.get(t)!).sort((a, b) => a[0] - b[0]);
          terms.push({ term: surface(spans), features: [`keyword:${k}`], kind: 'word', spans, contribution: 2 });
        }
        for (const t of new Set(baselineTokens(`${def.label} ${def.description}`))) {
          const spans = positions.get(t);
          if (spans) terms.push({ term: surface(spans), features: [`description:${t}`], kind: 'word', spans: [...spans], contribution: 1 });
        }
      }
      terms.sort((a, b) => b.contribution - a.contribution || (a.term < b.term ? -1 : a.term > b.term ? 1 : 0));
      const logit = terms.reduce((s, t) => s + t.contribution, 0);
      return { label, logit, prior: 0, terms: terms.slice(0, maxTerms) };
    }),
  };
}
