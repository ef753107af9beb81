import { counter, gauge, histogram } from '../../common/metrics.ts';

/**
 * What the monitor exports (shared registry). Per-client series carry `client_id`: a few series per
 * client is fine for thousands of clients; per-label series would not be, so labels stay in Redis,
 * ClickHouse and the dashboard.
 */
export const monitorMetrics = {
  quality: () => gauge({
    name: 'eddy_monitor_quality', help: 'Rolling 7-day live quality per client from feedback (macro precision, recall, f1; accuracy)', labelNames: ['client_id', 'metric'],
  }),
  bias: () => gauge({
    name: 'eddy_monitor_prediction_bias', help: 'Jensen-Shannon divergence (bits) of predicted vs observed labels over 7 days', labelNames: ['client_id'],
  }),
  judged: () => counter({
    name: 'eddy_monitor_judged_total', help: 'Feedback events joined with their prediction and counted into quality',
  }),
  waiting: () => counter({
    name: 'eddy_monitor_feedback_waiting_total', help: 'Feedback that arrived before its prediction (parked in Redis, joined when the prediction arrives)',
  }),
  rejudged: () => counter({
    name: 'eddy_monitor_feedback_rejudged_total', help: 'Feedback on a prediction already judged (ignored: the first judgement counts)',
  }),
  alerts: () => counter({
    name: 'eddy_monitor_alerts_total', help: 'QualityAlert events emitted by the monitor', labelNames: ['kind'],
  }),
  rollbacks: () => counter({
    name: 'eddy_monitor_rollbacks_total', help: 'Automatic rollbacks of a freshly published version worse than its predecessor on live feedback',
  }),
  retrains: () => counter({
    name: 'eddy_retrains_total', help: 'Retrain requests and outcomes seen on the log (requested, published, rejected)', labelNames: ['outcome', 'reason'],
  }),
  retrainSeconds: () => histogram({
    name: 'eddy_retrain_duration_seconds', help: 'Training time of published versions (trainingMs) and request-to-rejection time of rejected ones', labelNames: ['outcome'],
    buckets: [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800],
  }),
  liveVersion: () => gauge({
    name: 'eddy_model_live_version', help: 'Number N of the live version v<N> per client, as the monitor follows the models topic', labelNames: ['client_id'],
  }),
  modelEvents: () => counter({
    name: 'eddy_model_events_total', help: 'Model lifecycle events (ModelPublished, ModelRejected, ModelPromoted, ModelRolledBack)', labelNames: ['event'],
  }),
};
