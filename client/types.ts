/**
 * The HTTP API's answers, as the client returns them (docs/server.md has the full contract).
 * They mirror the server's response schemas; the client does not import the server.
 */

export interface PredictInput {
  text: string;
  metadata?: Record<string, string>;
  /** Chosen by the client when absent, before the first attempt, so a retried request is one request. */
  requestId?: string;
}

export interface PredictOptions {
  /** Scores to return (default: the server's EDDY_SERVER_TOP_K). */
  topK?: number;
  /** Also answer the terms behind each returned label (predict answers `explanation`). */
  explain?: boolean;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface TermContribution {
  /** The input as the user wrote it (distinct spellings joined by " / "), or `key=value` for metadata. */
  term: string;
  features: string[];
  kind: 'word' | 'char' | 'metadata' | 'realtime';
  /** [start, end) of each occurrence in the request text. */
  spans: Array<[number, number]>;
  contribution: number;
}

export interface Explanation {
  method: 'occlusion' | 'keyword-overlap';
  /** True when the contributions add up to the logit (linear models, the baseline). */
  exact: boolean;
  labels: Array<{ label: string; logit: number; prior: number; terms: TermContribution[] }>;
}

export interface Prediction {
  requestId: string;
  clientId: string;
  label: string;
  scores: Array<{ label: string; score: number }>;
  /** null for the baseline (no model yet). */
  modelVersion: string | null;
  variant: 'LIVE' | 'CANARY' | 'BASELINE';
  featuresDefaulted: boolean;
  /** The calibrated top score is below the model version's threshold: route to a person. null without calibration (baseline, older versions). */
  unsure?: boolean | null;
  latencyMs: number;
  explanation?: Explanation;
}

export type ExplainedPrediction = Prediction & { explanation: Explanation };

export interface ReviewItem {
  itemId: string;
  priority: number;
  text: string;
  metadata: Record<string, string>;
  predicted: { label: string; score: number; version: string | null; variant: string };
  scores: Array<{ label: string; score: number }>;
  reasons: Array<{ reason: 'CONFIDENTLY_WRONG' | 'DISAGREEMENT' | 'UNSURE'; score: number }>;
  shadow: { label: string; version: string; score: number } | null;
  feedback: { outcome: string; correctLabel: string | null } | null;
  occurrences: number;
  requestId: string;
  firstSeenAt: number;
  lastSeenAt: number;
}

export interface ReviewQueue {
  clientId: string;
  total: number;
  items: ReviewItem[];
  /** The labels a reviewer may choose. */
  labels: string[];
}
