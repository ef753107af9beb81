import { counter, gauge, histogram, HotCounter, HotHistogram } from '../common/metrics.ts';

/**
 * The counters every request touches, as HotCounters (common/metrics.ts): a caller looks up the
 * cell of its label set once and counts with `cell.n++`; /metrics reads the same series.
 */
export const hotMetrics = {
  requests: () => HotCounter.of({ name: 'eddy_server_requests_total', help: 'HTTP requests by route and status code', labelNames: ['route', 'status'] }),
  predictions: () => HotCounter.of({ name: 'eddy_server_predictions_total', help: 'Predictions by channel and variant', labelNames: ['channel', 'variant'] }),
  featuresDefaulted: () => HotCounter.of({
    name: 'eddy_server_features_defaulted_total', help: 'Predictions answered with default real-time features (Redis slow or down)',
  }),
  cacheLookups: () => HotCounter.of({ name: 'eddy_server_model_cache_total', help: 'Model lookups by result: hit (loaded), miss (loaded on demand)', labelNames: ['result'] }),
  featureStates: () => HotCounter.of({
    name: 'eddy_server_feature_states_total',
    help: 'Entity states a prediction needed while the server keeps them (EDDY_SERVER_FEATURE_CACHE_ENTRIES), by result: hit (kept, no Redis read), miss (read from Redis)',
    labelNames: ['result'],
  }),
};

/** Every metric the prediction server exports on /metrics (shared registry, created once). */
export const serverMetrics = {
  requests: () => hotMetrics.requests().counter,
  requestSeconds: () => HotHistogram.of({
    name: 'eddy_server_request_seconds', help: 'HTTP request latency by route', labelNames: ['route'],
    buckets: [0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.5, 1],
  }),
  errors: () => counter({
    name: 'eddy_server_errors_total', help: 'Error responses by stable error code', labelNames: ['code'],
  }),
  predictions: () => hotMetrics.predictions().counter,
  predictSeconds: () => HotHistogram.of({
    name: 'eddy_server_predict_seconds', help: 'Time to answer one prediction inside the server (features + model)', labelNames: ['channel'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1],
  }),
  featuresDefaulted: () => hotMetrics.featuresDefaulted().counter,
  cacheLookups: () => hotMetrics.cacheLookups().counter,
  loads: () => counter({
    name: 'eddy_server_model_loads_total', help: 'Model loads by outcome (ok, failed) and error code', labelNames: ['outcome', 'code'],
  }),
  loadSeconds: () => histogram({
    name: 'eddy_server_model_load_seconds', help: 'Time to read, verify and load one model artifact',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
  }),
  evictions: () => counter({
    name: 'eddy_server_model_evictions_total', help: 'Loaded models evicted to stay within EDDY_SERVER_MODEL_MEMORY_MB',
  }),
  loadedModels: () => gauge({
    name: 'eddy_server_models_loaded', help: 'Models currently loaded in memory',
  }),
  loadedBytes: () => gauge({
    name: 'eddy_server_models_loaded_bytes', help: 'Memory of loaded models as reported by Predictor.memoryBytes',
  }),
  swaps: () => counter({
    name: 'eddy_server_model_swaps_total', help: 'Live versions switched after a background load', labelNames: ['outcome'],
  }),
  published: () => counter({
    name: 'eddy_server_predictions_published_total', help: 'PredictionMade events written to Kafka',
  }),
  dropped: () => counter({
    name: 'eddy_server_predictions_dropped_total', help: 'PredictionMade events that will not reach Kafka: refused by their schema or the producer, or lost with a publisher thread that died (a full buffer no longer drops: see eddy_server_publish_refused_total)',
  }),
  refused: () => counter({
    name: 'eddy_server_publish_refused_total', help: 'Predict requests answered 503 (Retry-After) before predicting because the PredictionMade backlog was full (Kafka slow or down)',
  }),
  spoolReplayed: () => counter({
    name: 'eddy_server_spool_replayed_total', help: 'PredictionMade events a dead server left in the spool, replayed to Kafka at start',
  }),
  spoolUnreplayable: () => counter({
    name: 'eddy_server_spool_unreplayable_total', help: 'Spooled PredictionMade that cannot be replayed: torn (a partial last record: a write cut by a power loss) or schema (written by a build with another schema; kept as .bad)', labelNames: ['reason'],
  }),
  spoolCommits: () => counter({
    name: 'eddy_server_spool_commits_total', help: 'Spool group commits (one write per turn of the event loop that answered predictions): predictions per commit = eddy_server_predictions_total{channel="HTTP"} / this',
  }),
  spoolFailures: () => counter({
    name: 'eddy_server_spool_write_failures_total', help: 'Spool writes that failed (disk full, I/O error): the predictions of that group commit were answered 503',
  }),
  bufferSize: () => gauge({
    name: 'eddy_server_publish_buffer_events', help: 'PredictionMade events waiting to be written to Kafka',
  }),
  registryReady: () => gauge({
    name: 'eddy_server_registry_ready', help: '1 once the model registry caught up with the models topic',
  }),
};
