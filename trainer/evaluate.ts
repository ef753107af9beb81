/**
 * Classification metrics on a held-out set: accuracy, macro-F1 and per-label precision, recall
 * and F1. Macro averages over the labels present in the truth or the predictions (as sklearn's
 * f1_score(average='macro') does), so a model is not rewarded for labels nobody asked about.
 * Metric keys are flat (`f1:<label>`) because ModelPublished.metrics is a map of doubles.
 */
export interface Evaluation {
  accuracy: number;
  macroF1: number;
  support: number;
  perLabel: Record<string, { precision: number; recall: number; f1: number; support: number }>;
}

export function evaluate(truth: readonly string[], predicted: readonly string[]): Evaluation {
  const tp = new Map<string, number>();
  const fp = new Map<string, number>();
  const fn = new Map<string, number>();
  const inc = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);
  let correct = 0;
  for (let i = 0; i < truth.length; i++) {
    const t = truth[i]!;
    const p = predicted[i]!;
    if (t === p) {
      correct++;
      inc(tp, t);
    } else {
      inc(fp, p);
      inc(fn, t);
    }
  }
  const labels = [...new Set([...truth, ...predicted])].sort();
  const perLabel: Evaluation['perLabel'] = {};
  let f1Sum = 0;
  for (const l of labels) {
    const a = tp.get(l) ?? 0;
    const precision = a + (fp.get(l) ?? 0) > 0 ? a / (a + (fp.get(l) ?? 0)) : 0;
    const recall = a + (fn.get(l) ?? 0) > 0 ? a / (a + (fn.get(l) ?? 0)) : 0;
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0;
    perLabel[l] = { precision, recall, f1, support: a + (fn.get(l) ?? 0) };
    f1Sum += f1;
  }
  return {
    accuracy: truth.length ? correct / truth.length : 0,
    macroF1: labels.length ? f1Sum / labels.length : 0,
    support: truth.length,
    perLabel,
  };
}

/** Flat metric map for events and manifests: accuracy, macroF1, testExamples, precision:/recall:/f1:<label>. */
export function metricsMap(e: Evaluation): Record<string, number> {
  const out: Record<string, number> = { accuracy: e.accuracy, macroF1: e.macroF1, testExamples: e.support };
  for (const [l, m] of Object.entries(e.perLabel)) {
    out[`precision:${l}`] = m.precision;
    out[`recall:${l}`] = m.recall;
    out[`f1:${l}`] = m.f1;
  }
  return out;
}
