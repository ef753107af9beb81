import { featurizerFor, type SparseVector, type TextFeaturizer } from '../featurizer/text.ts';
import { featureId, metadataFeatureName, realtimeFeatureName, textFeatureOccurrences, type TextFeatureOccurrence } from '../featurizer/spans.ts';
import type { Predictor, RealtimeFeatures } from './predictor.ts';

/**
 * Why a model answered what it answered: for each label asked about, the input terms that pushed
 * its logit up most, with their contribution, computed from the model that answered through its
 * own scorer (`Predictor.logits`), whatever its kind, by occlusion:
 *
 *   contribution(feature i, label c) = logits(v)[c] - logits(v with feature i set to 0)[c]
 *
 * For a linear model (logits = bias + W·v) this is exactly value_i * W[i][c], and the
 * contributions add up: logits(v) = logits(empty) + Σ_i contribution_i. That identity is checked
 * on every explanation and reported as `exact`, so no kind is named here and a kind that is
 * linear gets exact explanations without saying so. For a non-linear (neural) kind occlusion is
 * an approximation: each contribution is the feature's effect given all the others (interactions
 * are counted with every feature that takes part in them, so the sum need not match), `exact` is
 * false, and the ranking is what to read, not the sum.
 *
 * Cost: one scorer call per distinct feature plus two (the full input, the empty input); a
 * ten-word request has ~20 features (docs/server.md, "Explanations", has the measured cost).
 *
 * Terms are reported as the user typed them (featurizer/spans.ts maps each feature back to its
 * span of the original text); metadata (`channel=email`) and real-time features are terms too.
 */

export type TermKind = 'word' | 'char' | 'metadata' | 'realtime';

export interface TermContribution {
  /** The input as the user wrote it: the text span(s) (distinct spellings joined by " / "), or `key=value` for metadata. */
  term: string;
  /** The feature name(s) the featurizer hashed (several when two names share one hashed id). */
  features: string[];
  kind: TermKind;
  /** [start, end) of every occurrence in the request text (empty for metadata and real-time features, or when unknown). */
  spans: Array<[number, number]>;
  /** How much this term raised (positive) or lowered the label's logit. */
  contribution: number;
}

export interface LabelExplanation {
  label: string;
  /** The label's logit for this input (softmax of the logits gives the scores). */
  logit: number;
  /** The label's logit for an empty input (the model's prior). */
  prior: number;
  /** The terms that raised this label's logit most, largest first (at most `maxTerms`). */
  terms: TermContribution[];
}

export interface Explanation {
  /** `occlusion` for models; `keyword-overlap` for the no-model baseline. */
  method: 'occlusion' | 'keyword-overlap';
  /** True when the contributions add up to logit - prior for every label (linear models). */
  exact: boolean;
  labels: LabelExplanation[];
}

export const DEFAULT_EXPLAIN_TERMS = 5;

interface FeatureSource {
  names: Set<string>;
  kind: TermKind;
  spans: Array<[number, number]>;
  display: string[];
}

/** Which input each feature id of the vector came from (text spans, metadata, real-time). */
function featureSources(featurizer: TextFeaturizer, text: string, metadata: Record<string, string>, realtime: RealtimeFeatures): Map<number, FeatureSource> {
  const sources = new Map<number, FeatureSource>();
  const add = (id: number, name: string, kind: TermKind, display: string, span: [number, number] | null) => {
    let s = sources.get(id);
    if (!s) sources.set(id, (s = { names: new Set(), kind, spans: [], display: [] }));
    s.names.add(name);
    if (span) s.spans.push(span);
    if (!s.display.includes(display)) s.display.push(display);
  };
  const occurrences: TextFeatureOccurrence[] = textFeatureOccurrences(featurizer, text);
  for (const o of occurrences) add(o.id, o.name, o.kind, o.span ? text.slice(o.span[0], o.span[1]) : o.name.slice(o.name.indexOf(':') + 1), o.span);
  const keys = new Set(featurizer.config.metadataKeys);
  for (const key of Object.keys(metadata)) {
    if (!keys.has(key)) continue;
    const name = metadataFeatureName(key, metadata[key] ?? '');
    add(featureId(featurizer.config, name), name, 'metadata', `${key}=${metadata[key]}`, null);
  }
  for (const name of Object.keys(realtime)) {
    const v = realtime[name];
    if (v === undefined || !Number.isFinite(v) || v === 0) continue;
    const feature = realtimeFeatureName(name);
    add(featureId(featurizer.config, feature), feature, 'realtime', name, null);
  }
  return sources;
}

/**
 * Explains a prediction of `predictor` for the given labels (e.g. the top-k it returned).
 * `realtime` must be the features the prediction used, so the explanation is of that prediction.
 */
export function explainPrediction(
  predictor: Predictor,
  input: { text: string; metadata: Record<string, string>; realtime: RealtimeFeatures },
  labels: readonly string[],
  maxTerms = DEFAULT_EXPLAIN_TERMS,
): Explanation {
  const featurizer = featurizerFor(predictor.manifest.featurizer);
  // loadPredictor refuses models whose featurizer this build lacks, so this cannot happen for a loaded model.
  if (!featurizer) throw new Error(`featurizer ${predictor.manifest.featurizer.id} is not implemented by this build`);
  const vector = featurizer.featurize(input.text, input.metadata, input.realtime);
  const full = predictor.logits(vector);
  const prior = predictor.logits({ ids: new Uint32Array(0), values: new Float32Array(0) });
  const nLabels = full.length;
  const n = vector.ids.length;
  // delta[i * nLabels + c]: what feature i adds to label c's logit.
  const delta = new Float64Array(n * nLabels);
  const occluded: SparseVector = { ids: vector.ids, values: Float32Array.from(vector.values) };
  for (let i = 0; i < n; i++) {
    const kept = occluded.values[i]!;
    occluded.values[i] = 0;
    const z = predictor.logits(occluded);
    occluded.values[i] = kept;
    for (let c = 0; c < nLabels; c++) delta[i * nLabels + c] = full[c]! - z[c]!;
  }
  let exact = true;
  for (let c = 0; c < nLabels && exact; c++) {
    let sum = prior[c]!;
    let scale = Math.abs(full[c]!) + Math.abs(prior[c]!);
    for (let i = 0; i < n; i++) {
      sum += delta[i * nLabels + c]!;
      scale += Math.abs(delta[i * nLabels + c]!);
    }
    if (Math.abs(sum - full[c]!) > 1e-6 * (1 + scale)) exact = false;
  }
  const sources = featureSources(featurizer, input.text, input.metadata, input.realtime);
  const index = new Map(predictor.manifest.labels.map((l, c) => [l, c]));
  return {
    method: 'occlusion',
    exact,
    labels: labels.flatMap((label) => {
      const c = index.get(label);
      if (c === undefined) return [];
      const ranked: TermContribution[] = [];
      for (let i = 0; i < n; i++) {
        const contribution = delta[i * nLabels + c]!;
        if (!(contribution > 0)) continue;
        const s = sources.get(vector.ids[i]!);
        ranked.push({
          term: s ? s.display.join(' / ') : `#${vector.ids[i]}`,
          features: s ? [...s.names] : [],
          kind: s?.kind ?? 'word',
          spans: s ? [...s.spans].sort((a, b) => a[0] - b[0] || a[1] - b[1]) : [],
          contribution,
        });
      }
      ranked.sort((a, b) => b.contribution - a.contribution || (a.term < b.term ? -1 : a.term > b.term ? 1 : 0));
      return [{ label, logit: full[c]!, prior: prior[c]!, terms: ranked.slice(0, maxTerms) }];
    }),
  };
}
