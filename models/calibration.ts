/**
 * Calibrated confidence (pure functions, shared by the trainer that fits it and the predictor
 * that applies it). A model's softmax is over- or under-confident depending on its
 * regularisation and data; temperature scaling (Guo et al. 2017: logits / T, one parameter fitted
 * on held-out predictions by negative log-likelihood) makes "0.8" mean right about 80% of the time
 * without changing any decision. The per-version `unsureBelow` threshold is read off the same
 * held-out predictions, so it moves with the model instead of going stale as a fixed number.
 */
export interface Calibration {
  /** Logits are divided by this before the softmax (1 = unchanged). */
  temperature: number;
  /** A prediction whose calibrated top score is below this is marked `unsure` (0 = never). */
  unsureBelow: number;
  /** Expected calibration error on the held-out predictions, before and after scaling. */
  eceBefore: number;
  eceAfter: number;
  /** Held-out predictions it was fitted on. */
  examples: number;
  /** The accuracy the threshold is read against (see unsureThreshold). */
  targetAccuracy: number;
}

/** Softmax of logits / temperature, in place. */
export function softmaxInPlace(z: Float64Array, temperature = 1): Float64Array {
  let max = -Infinity;
  for (let c = 0; c < z.length; c++) max = Math.max(max, z[c]! / temperature);
  let sum = 0;
  for (let c = 0; c < z.length; c++) {
    z[c] = Math.exp(z[c]! / temperature - max);
    sum += z[c]!;
  }
  for (let c = 0; c < z.length; c++) z[c]! /= sum;
  return z;
}

/** Mean negative log-likelihood of the true classes at a temperature. */
export function nll(logits: readonly Float64Array[], targets: ArrayLike<number>, temperature: number): number {
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    const z = logits[i]!;
    let max = -Infinity;
    for (let c = 0; c < z.length; c++) max = Math.max(max, z[c]! / temperature);
    let sum = 0;
    for (let c = 0; c < z.length; c++) sum += Math.exp(z[c]! / temperature - max);
    total -= z[targets[i]!]! / temperature - max - Math.log(sum);
  }
  return logits.length ? total / logits.length : 0;
}

/**
 * The temperature minimising held-out NLL: golden-section search on log T in [1/20, 20] (NLL is
 * unimodal in T; a one-dimensional search needs no optimisation library).
 */
export function fitTemperature(logits: readonly Float64Array[], targets: ArrayLike<number>): number {
  if (logits.length === 0) return 1;
  let a = Math.log(1 / 20);
  let b = Math.log(20);
  const phi = (Math.sqrt(5) - 1) / 2;
  let c = b - phi * (b - a);
  let d = a + phi * (b - a);
  let fc = nll(logits, targets, Math.exp(c));
  let fd = nll(logits, targets, Math.exp(d));
  for (let i = 0; i < 60 && b - a > 1e-4; i++) {
    if (fc < fd) {
      b = d; d = c; fd = fc;
      c = b - phi * (b - a);
      fc = nll(logits, targets, Math.exp(c));
    } else {
      a = c; c = d; fc = fd;
      d = a + phi * (b - a);
      fd = nll(logits, targets, Math.exp(d));
    }
  }
  return Math.exp((a + b) / 2);
}

/** Top-1 confidence and correctness of each held-out prediction at a temperature. */
export function confidences(logits: readonly Float64Array[], targets: ArrayLike<number>, temperature: number): Array<{ confidence: number; correct: boolean }> {
  return logits.map((z, i) => {
    const p = softmaxInPlace(Float64Array.from(z), temperature);
    let best = 0;
    for (let c = 1; c < p.length; c++) if (p[c]! > p[best]!) best = c;
    return { confidence: p[best]!, correct: best === targets[i] };
  });
}

/** Expected calibration error: |accuracy - mean confidence| per equal-width confidence bin, weighted by the bin's share. */
export function expectedCalibrationError(preds: ReadonlyArray<{ confidence: number; correct: boolean }>, bins = 10): number {
  if (preds.length === 0) return 0;
  const n = new Float64Array(bins);
  const conf = new Float64Array(bins);
  const acc = new Float64Array(bins);
  for (const p of preds) {
    const b = Math.min(bins - 1, Math.floor(p.confidence * bins));
    n[b]! += 1;
    conf[b]! += p.confidence;
    acc[b]! += p.correct ? 1 : 0;
  }
  let ece = 0;
  for (let b = 0; b < bins; b++) if (n[b]! > 0) ece += Math.abs(acc[b]! - conf[b]!) / preds.length;
  return ece;
}

/**
 * The confidence below which held-out predictions are right less often than `targetAccuracy`:
 * sorted by confidence, the largest low-confidence group whose accuracy is under the target; the
 * threshold sits halfway between its most confident member and the next prediction. 0 when no
 * such group exists (every low-confidence slice is accurate enough).
 */
export function unsureThreshold(preds: ReadonlyArray<{ confidence: number; correct: boolean }>, targetAccuracy: number): number {
  const sorted = [...preds].sort((x, y) => x.confidence - y.confidence);
  let right = 0;
  let cut = -1;
  for (let k = 0; k < sorted.length; k++) {
    if (sorted[k]!.correct) right++;
    if (right / (k + 1) < targetAccuracy) cut = k;
  }
  if (cut < 0) return 0;
  const next = sorted[cut + 1]?.confidence ?? sorted[cut]!.confidence;
  return (sorted[cut]!.confidence + next) / 2;
}

/** Fits the temperature and the threshold on held-out logits and reports ECE before and after. */
export function calibrate(logits: readonly Float64Array[], targets: ArrayLike<number>, targetAccuracy: number): Calibration {
  const temperature = fitTemperature(logits, targets);
  const before = confidences(logits, targets, 1);
  const after = confidences(logits, targets, temperature);
  return {
    temperature, unsureBelow: unsureThreshold(after, targetAccuracy),
    eceBefore: expectedCalibrationError(before), eceAfter: expectedCalibrationError(after),
    examples: logits.length, targetAccuracy,
  };
}
