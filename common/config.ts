import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import envSchema from 'env-schema';
import { ConfigError } from './errors.ts';

/**
 * The one place Eddy reads its environment. Every variable is declared here with its type,
 * default and meaning; `loadConfig` validates them all at start and fails with one message that
 * names each bad variable. `docs/configuration.md` is the reference (kept in sync by a test).
 */
const ENV_SCHEMA = {
  type: 'object',
  properties: {
    EDDY_KAFKA_BROKERS: {
      type: 'string', default: '127.0.0.1:9092', pattern: '^[^,\\s:]+:\\d+(,[^,\\s:]+:\\d+)*$',
      description: 'Comma-separated host:port list of Kafka bootstrap brokers.',
    },
    EDDY_KAFKA_SESSION_TIMEOUT_MS: {
      type: 'integer', default: 10000, minimum: 1000, maximum: 300000,
      description: "How long a consumer group waits for a silent member before its partitions go to other members (at least the broker's group.min.session.timeout.ms, 6 s by default). A restarted member with the same EDDY_INSTANCE_ID does not wait for it. docs/reliability.md",
    },
    EDDY_KAFKA_HEARTBEAT_MS: {
      type: 'integer', default: 1000, minimum: 100, maximum: 60000,
      description: 'How often a consumer tells its group it is alive (well under EDDY_KAFKA_SESSION_TIMEOUT_MS).',
    },
    EDDY_KAFKA_FETCH_MIN_BYTES: {
      type: 'integer', default: 65536, minimum: 1, maximum: 52428800,
      description: "The processors' fetches wait at the broker until this many bytes are ready or EDDY_KAFKA_FETCH_MAX_WAIT_MS passes: when traffic is low they fetch, handle and commit a few times a second instead of once every few events (about half the CPU of the processors and of the broker at 400 events/s); when it is high a fetch fills at once. 1 answers a fetch as soon as anything is there. Consumers that a caller waits on (the Kafka predict path, the trainer, the servers' model registry) always use 1. docs/streams.md",
    },
    EDDY_KAFKA_FETCH_MAX_WAIT_MS: {
      type: 'integer', default: 500, minimum: 0, maximum: 10000,
      description: 'The longest a fetch waits at the broker for EDDY_KAFKA_FETCH_MIN_BYTES: how late an event may reach the processors when traffic is low. Also how often an idle consumer asks again.',
    },
    EDDY_INSTANCE_ID: {
      type: 'string', default: '', pattern: '^[A-Za-z0-9._-]*$',
      description: "Stable name of this process in its consumer groups (static membership): a process restarted with the same name gets its partitions back at once instead of after the session timeout. Unique per process of one component (a pod name); default: the host name and a slot claimed on this host. docs/reliability.md",
    },
    EDDY_SCHEMA_REGISTRY_URL: {
      type: 'string', default: 'http://127.0.0.1:8081/apis/ccompat/v7', pattern: '^https?://',
      description: 'Base URL of a Confluent-compatible schema registry.',
    },
    EDDY_REDIS_URL: {
      type: 'string', default: 'redis://127.0.0.1:6379', pattern: '^(rediss?://|rediss?\\+cluster://[^,\\s/]+(,[^,\\s/@]+)*/?$)',
      description: 'Redis for real-time features and per-client state: a redis:// (or rediss://) URL of one server, or redis+cluster://host:port,host:port,... (rediss+cluster:// for TLS; user:password@ before the first node applies to all) naming seed nodes of a Redis Cluster. docs/reliability.md',
    },
    EDDY_CLICKHOUSE_URL: {
      type: 'string', default: 'http://127.0.0.1:8123', pattern: '^https?://',
      description: 'ClickHouse HTTP interface for the analytics log.',
    },
    EDDY_CLICKHOUSE_DATABASE: {
      type: 'string', default: 'eddy', pattern: '^[A-Za-z_][A-Za-z0-9_]*$',
      description: 'ClickHouse database that holds Eddy tables and views.',
    },
    EDDY_TOPIC_PREFIX: {
      type: 'string', default: 'eddy.', pattern: '^[A-Za-z0-9._-]*$',
      description: 'Prefix of every Kafka topic and consumer group (isolates environments and tests).',
    },
    EDDY_REDIS_PREFIX: {
      type: 'string', default: 'eddy', pattern: '^[A-Za-z0-9._-]+$',
      description: 'Prefix of every Redis key.',
    },
    EDDY_PARTITIONS: {
      type: 'integer', default: 6, minimum: 1, maximum: 1024,
      description: 'Partitions of each keyed topic when Eddy creates it (scaling unit of every consumer group).',
    },
    EDDY_REPLICATION_FACTOR: {
      type: 'integer', default: 1, minimum: 1, maximum: 5,
      description: 'Replication factor of topics Eddy creates.',
    },
    EDDY_LOG_LEVEL: {
      type: 'string', default: 'info', enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'],
      description: 'Log level of every Eddy process.',
    },
    EDDY_HOME: {
      type: 'string', default: '',
      description: 'Directory for the local stack cache, logs and data (default ~/.cache/eddy).',
    },
    EDDY_MODEL_STORE_DIR: {
      type: 'string', default: '',
      description: 'Model store directory shared by trainers and servers (default $EDDY_HOME/models).',
    },
    // --- processors (processors/) ---
    EDDY_ANALYTICS_BATCH_ROWS: {
      type: 'integer', default: 5000, minimum: 1, maximum: 1000000,
      description: 'Rows per ClickHouse insert at most; events of concurrent partitions share one insert.',
    },
    EDDY_ANALYTICS_BATCH_MIN_ROWS: {
      type: 'integer', default: 1000, minimum: 1, maximum: 1000000,
      description: 'Rows a ClickHouse insert waits for (up to EDDY_ANALYTICS_BATCH_MS) when no more are on the way: fewer, larger inserts are far cheaper for ClickHouse than one per consumer batch.',
    },
    EDDY_ANALYTICS_BATCH_MS: {
      type: 'integer', default: 200, minimum: 0, maximum: 60000,
      description: 'Longest a row waits for its ClickHouse insert to fill (time bound of a batch).',
    },
    EDDY_FEATURES_SEEN_TTL_HOURS: {
      type: 'integer', default: 48, minimum: 1, maximum: 87600,
      description: 'How long the feature processor remembers processed eventIds (redeliveries within it never count twice).',
    },
    EDDY_FEEDBACK_PREDICTION_TTL_DAYS: {
      type: 'integer', default: 14, minimum: 1, maximum: 3650,
      description: 'How long predictions are kept in Redis so that feedback on them becomes a training example.',
    },
    EDDY_FEEDBACK_MAX_WAITS: {
      type: 'integer', default: 6, minimum: 0, maximum: 1000,
      description: 'Retries of a feedback whose prediction is not (yet) known before it is dead-lettered.',
    },
    EDDY_TRIGGER_MIN_EXAMPLES: {
      type: 'integer', default: 50, minimum: 1, maximum: 100000000,
      description: 'Examples a new client needs (with at least EDDY_TRIGGER_MIN_LABELS labels) before its first retrain.',
    },
    EDDY_TRIGGER_MIN_LABELS: {
      type: 'integer', default: 2, minimum: 2, maximum: 100000,
      description: 'Distinct labels with examples a client needs before any retrain.',
    },
    EDDY_TRIGGER_NEW_EXAMPLES: {
      type: 'integer', default: 500, minimum: 1, maximum: 100000000,
      description: 'New examples since the last model that trigger a retrain.',
    },
    EDDY_TRIGGER_GROWTH: {
      type: 'number', default: 0.2, minimum: 0.001, maximum: 1000,
      description: 'Growth of the example count since the last model (0.2 = +20%) that triggers a retrain, if at least EDDY_TRIGGER_MIN_EXAMPLES new ones.',
    },
    EDDY_TRIGGER_COOLDOWN_MS: {
      type: 'integer', default: 600000, minimum: 0, maximum: 2592000000,
      description: 'Least time between two retrain requests of one client (quality alerts and label changes wait too).',
    },
    EDDY_TRIGGER_CATCH_UP_GROWTH: {
      type: 'number', default: 2, minimum: 0, maximum: 1000,
      description: 'Catch-up: when a client has this many times the examples its live model (or its last request) saw, a retrain is requested without waiting for the cooldown, after a quiet moment (0 disables).',
    },
    EDDY_TRIGGER_QUIET_MS: {
      type: 'integer', default: 1500, minimum: 0, maximum: 3600000,
      description: 'A first model (NEW_CLIENT) and a catch-up retrain wait until no example of the client arrived for this long, so that a burst is trained on whole (0: do not wait).',
    },
    EDDY_TRIGGER_QUIET_MAX_WAIT_MS: {
      type: 'integer', default: 30000, minimum: 0, maximum: 86400000,
      description: 'Longest wait for that quiet moment; after it the retrain is requested on the data there is.',
    },
    EDDY_TRIGGER_QUIET_BURST: {
      type: 'integer', default: 10, minimum: 0, maximum: 1000000,
      description: 'Only a burst is waited out: a client counts as busy while its examples of about the last EDDY_TRIGGER_QUIET_MS (exponentially decayed) number at least this many (at the defaults, a burst or a sustained ~7 examples/s); slower live traffic does not hold its first model or a catch-up back (0: every example counts as busy).',
    },
    EDDY_TRIGGER_OUTSTANDING_TIMEOUT_MS: {
      type: 'integer', default: 3600000, minimum: 1000, maximum: 2592000000,
      description: 'A retrain request with no ModelPublished/ModelRejected after this long no longer blocks new ones.',
    },
    EDDY_TRIGGER_STALE_MS: {
      type: 'integer', default: 604800000, minimum: 1000, maximum: 31536000000,
      description: 'A model older than this is retrained when any new example arrives.',
    },
    // --- prediction server (server/) ---
    EDDY_SERVER_HOST: {
      type: 'string', default: '127.0.0.1',
      description: 'Address the prediction server listens on (0.0.0.0 for every interface).',
    },
    EDDY_SERVER_PORT: {
      type: 'integer', default: 8080, minimum: 0, maximum: 65535,
      description: 'TCP port of the prediction server (0 picks a free port).',
    },
    EDDY_SERVER_API_KEYS: {
      type: 'string', default: '', pattern: '^([A-Za-z0-9._~+/-]{16,}=[^,=\\s]+(,[A-Za-z0-9._~+/-]{16,}=[^,=\\s]+)*)?$',
      description: 'Comma-separated key=clientId pairs: a key may predict for and read only its own client (keys >= 16 chars).',
    },
    EDDY_SERVER_API_KEYS_FILE: {
      type: 'string', default: '',
      description: 'File of API keys, one "key clientId" per line (# comments), added to EDDY_SERVER_API_KEYS; for thousands of clients.',
    },
    EDDY_SERVER_ADMIN_KEY: {
      type: 'string', default: '', pattern: '^([A-Za-z0-9._~+/-]{16,})?$',
      description: 'Key for the admin endpoints (promote, rollback, pin) and every client; empty disables them.',
    },
    EDDY_SERVER_MODEL_MEMORY_MB: {
      type: 'integer', default: 1024, minimum: 1, maximum: 1048576,
      description: 'Memory budget of loaded models per server process; least recently used models are evicted beyond it.',
    },
    EDDY_SERVER_FEATURE_TIMEOUT_MS: {
      type: 'integer', default: 5, minimum: 1, maximum: 10000,
      description: 'How long a prediction waits for real-time features from Redis before answering with defaults.',
    },
    EDDY_SERVER_FEATURE_CACHE_ENTRIES: {
      type: 'integer', default: 20000, minimum: 0, maximum: 10000000,
      description: 'Entity states (requesters, channels) kept in the server between predictions while Redis announces their changes (client-side caching with CLIENT TRACKING; not on Redis Cluster); 0 reads Redis for every prediction.',
    },
    EDDY_SERVER_MAX_TEXT_CHARS: {
      type: 'integer', default: 10000, minimum: 1, maximum: 1000000,
      description: 'Longest text a prediction accepts (longer: 413 TEXT_TOO_LONG).',
    },
    EDDY_SERVER_MAX_METADATA_ENTRIES: {
      type: 'integer', default: 32, minimum: 0, maximum: 10000,
      description: 'Most metadata entries a prediction accepts (more: 413 METADATA_TOO_LARGE).',
    },
    EDDY_SERVER_MAX_METADATA_BYTES: {
      type: 'integer', default: 4096, minimum: 0, maximum: 1048576,
      description: 'Most UTF-8 bytes of metadata keys plus values a prediction accepts (more: 413 METADATA_TOO_LARGE).',
    },
    EDDY_SERVER_MAX_BATCH: {
      type: 'integer', default: 100, minimum: 1, maximum: 10000,
      description: 'Most items in one batch prediction (more: 413 BATCH_TOO_LARGE).',
    },
    EDDY_SERVER_TOP_K: {
      type: 'integer', default: 3, minimum: 1, maximum: 1000,
      description: 'Scores returned per prediction unless the request asks for another topK.',
    },
    EDDY_SERVER_PUBLISH_BUFFER: {
      type: 'integer', default: 20000, minimum: 1, maximum: 10000000,
      description: 'PredictionMade events on their way to Kafka per process; while this many wait, predict requests are answered 503 KAFKA_UNAVAILABLE with Retry-After before predicting (counted: eddy_server_publish_refused_total), so an answered prediction is never dropped.',
    },
    EDDY_SERVER_SPOOL: {
      type: 'string', default: 'write', enum: ['write', 'fsync', 'off'],
      description: 'Spool of answered predictions\' PredictionMade, replayed at the next start (docs/reliability.md): write (written before the answer; survives kill -9, not a power loss), fsync (also flushed to disk per group commit; survives a power loss), off (a crash loses what the publish buffer held).',
    },
    EDDY_SERVER_SPOOL_DIR: {
      type: 'string', default: '',
      description: 'Directory of the PredictionMade spool (default <EDDY_HOME>/spool); keep it across restarts on the same host (a volume), one per host or container.',
    },
    EDDY_SERVER_PUBLISHER: {
      type: 'string', default: 'thread', enum: ['thread', 'inline'],
      description: 'Where PredictionMade events are encoded and produced: a worker thread with its own Kafka connection (keeps the Kafka client off the request thread; p99 in BENCHMARKS.md) or inline on the request thread.',
    },
    EDDY_SERVER_CANARY_KEY: {
      type: 'string', default: 'requester', pattern: '^[A-Za-z0-9._-]+$',
      description: 'Metadata field whose value is hashed to pick canary traffic, so one requester always sees one version.',
    },
    EDDY_SERVER_REPLICA_ID: {
      type: 'string', default: '', pattern: '^[A-Za-z0-9._-]*$',
      description: 'Name of this server replica in logs and consumer groups (default hostname-pid).',
    },
    EDDY_SERVER_METRICS_PORT: {
      type: 'integer', default: 0, minimum: 0, maximum: 65535,
      description: 'Internal port serving the server\'s Prometheus /metrics without a key (for the scraper; keep it off the public network); 0: none, /metrics is then served on the API port to the admin key only.',
    },
    EDDY_SERVER_METRICS_HOST: {
      type: 'string', default: '127.0.0.1',
      description: 'Address the internal /metrics port listens on (0.0.0.0 in containers, where the scraper is on the internal network).',
    },
    // --- review queue (processors/review/, server/http/review.ts) ---
    EDDY_REVIEW_UNSURE_BELOW: {
      type: 'number', default: 0.5, minimum: 0, maximum: 1,
      description: 'A served prediction whose top score is below this is unsure and goes to the review queue (until predictions carry the calibrated unsure flag).',
    },
    EDDY_REVIEW_CONFIDENT_ABOVE: {
      type: 'number', default: 0.8, minimum: 0, maximum: 1,
      description: 'A prediction with a top score at least this high that feedback reassigned or rejected is confidently wrong and goes to the review queue.',
    },
    EDDY_REVIEW_MAX_ITEMS: {
      type: 'integer', default: 1000, minimum: 1, maximum: 1000000,
      description: 'Items kept in each client\'s review queue; the least worth reviewing are dropped beyond it.',
    },
    // --- trainer (trainer/) ---
    EDDY_TRAINER_GATE_MARGIN: {
      type: 'number', default: 0.02, minimum: 0, maximum: 1,
      description: 'A candidate is published only if its test macro-F1 is at most this much below the live version\'s on the same test set.',
    },
    EDDY_TRAINER_BACKEND: {
      type: 'string', default: '', enum: ['', 'webgpu', 'wasm', 'cpu'],
      description: 'Force a TensorFlow.js backend; empty picks the best available (webgpu when a GPU adapter is found > wasm > cpu).',
    },
    EDDY_TRAINER_EPOCHS: {
      type: 'integer', default: 10, minimum: 1, maximum: 1000,
      description: 'Training epochs per model (passes over the training split).',
    },
    EDDY_TRAINER_MIN_EXAMPLES: {
      type: 'integer', default: 10, minimum: 1, maximum: 100000000,
      description: 'Fewest usable examples a training set needs (fewer: ModelRejected TOO_FEW_EXAMPLES).',
    },
    EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL: {
      type: 'integer', default: 2, minimum: 1, maximum: 1000000,
      description: 'Fewest examples (its definition counts as one) each label needs (fewer: LABEL_TOO_FEW_EXAMPLES).',
    },
    EDDY_TRAINER_MAX_TEXT_CHARS: {
      type: 'integer', default: 20000, minimum: 1, maximum: 10000000,
      description: 'Longer example texts are oversized: dropped, and the set is refused (OVERSIZED_TEXT) when more than 5% are.',
    },
    EDDY_TRAINER_MAX_LABEL_DRIFT: {
      type: 'number', default: 0.5, minimum: 0, maximum: 1,
      description: 'Largest change of the label distribution (total variation) since the previous training set (more: LABEL_DISTRIBUTION_DRIFT).',
    },
    EDDY_TRAINER_KEEP_VERSIONS: {
      type: 'integer', default: 10, minimum: 2, maximum: 100000,
      description: 'Model versions kept per client in the model store (older ones are pruned after a publish; rollback needs 2).',
    },
    EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES: {
      type: 'integer', default: 5000, minimum: 0, maximum: 1000000000,
      description: "A client's first model on at least this many examples (a bulk import) is published at once with the default configuration, and the model search follows as the next version, answering the same request (0: search before the first model, whatever its size). See docs/trainer.md.",
    },
    EDDY_TRAINER_DATA_WAIT_MS: {
      type: 'integer', default: 60000, minimum: 0, maximum: 3600000,
      description: 'Longest wait, per retrain, for the events a request names (its dataAsOf watermark) to become visible in ClickHouse before the training set is read; after it the trainer trains on what is there and logs a warning.',
    },
    EDDY_TRAINER_NICE: {
      type: 'integer', default: 0, minimum: 0, maximum: 19,
      description: "CPU priority (Linux nice value) `eddy trainer run` takes once it is running; 0 keeps the normal one. On a host it shares with processors and servers, 10 makes training yield the cores to them and to a process starting up, and take whatever they leave idle (docker-compose.yml sets it; training gets slower when the host is saturated). See docs/trainer.md.",
    },
    // --- quality monitor and dashboard (processors/monitor/, server/dashboard/) ---
    EDDY_MONITOR_DROP_PCT: {
      type: 'number', default: 10, minimum: 0.1, maximum: 100,
      description: 'QualityAlert when a live precision/recall/F1 (macro or per label) falls more than this many percent below the previous week\'s.',
    },
    EDDY_MONITOR_MIN_SUPPORT: {
      type: 'integer', default: 30, minimum: 1, maximum: 100000000,
      description: 'Judged predictions (feedback) each week (and each label) needs before its quality or bias may alert.',
    },
    EDDY_MONITOR_BIAS_THRESHOLD: {
      type: 'number', default: 0.1, minimum: 0.001, maximum: 1,
      description: 'Jensen-Shannon divergence (bits) of predicted vs observed label distribution over 7 days that raises a PREDICTION_BIAS alert.',
    },
    EDDY_MONITOR_AUTO_ROLLBACK: {
      type: 'boolean', default: true,
      description: 'Roll back a freshly published live version whose accuracy on live feedback is clearly below its predecessor\'s.',
    },
    EDDY_MONITOR_ROLLBACK_DROP_PCT: {
      type: 'number', default: 15, minimum: 0.1, maximum: 100,
      description: 'How many percent below its predecessor\'s live accuracy a fresh version must fall to be rolled back automatically.',
    },
    EDDY_MONITOR_ROLLBACK_MIN_SUPPORT: {
      type: 'integer', default: 50, minimum: 1, maximum: 100000000,
      description: 'Judged predictions both the fresh version and its predecessor need before the rollback comparison is made (once).',
    },
    EDDY_MONITOR_LAG_INTERVAL_MS: {
      type: 'integer', default: 15000, minimum: 500, maximum: 3600000,
      description: 'How often consumer lag per group and topic end offsets are read from Kafka (admin API) for metrics and the dashboard.',
    },
    EDDY_MONITOR_SEGMENT_FIELDS: {
      type: 'string', default: 'channel,department', pattern: '^([A-Za-z0-9._-]+(,[A-Za-z0-9._-]+)*)?$',
      description: 'Metadata fields whose values are quality segments (per-segment precision/recall/F1 and SEGMENT_GAP alerts), besides text length.',
    },
    EDDY_MONITOR_LENGTH_BUCKETS: {
      type: 'string', default: '40,160', pattern: '^[0-9]+(,[0-9]+)*$',
      description: 'Text-length segments: ascending character counts that split texts into buckets (default: short < 40 <= medium < 160 <= long).',
    },
    EDDY_MONITOR_SEGMENT_GAP_PCT: {
      type: 'number', default: 20, minimum: 0, maximum: 100,
      description: 'A segment whose 7-day accuracy is more than this many percent below its client\'s overall accuracy raises SEGMENT_GAP.',
    },
    EDDY_MONITOR_SEGMENT_MIN_SUPPORT: {
      type: 'integer', default: 30, minimum: 1, maximum: 100000000,
      description: 'Judged predictions a segment needs in 7 days before it may raise SEGMENT_GAP.',
    },
    EDDY_METRICS_PORT: {
      type: 'integer', default: 9464, minimum: 0, maximum: 65535,
      description: 'Port of the Prometheus /metrics endpoint of `eddy processors run` and `eddy trainer run` (processes without an HTTP API; one per host or container); 0 disables it. Servers export on their own port.',
    },
    EDDY_METRICS_HOST: {
      type: 'string', default: '127.0.0.1',
      description: 'Address that /metrics endpoint listens on (0.0.0.0 in containers).',
    },
  },
} as const;

export interface EddyConfig {
  kafkaBrokers: string[];
  /** Consumer-group liveness and identity (docs/reliability.md), and how long a fetch may wait to fill (docs/streams.md). */
  kafka: { sessionTimeoutMs: number; heartbeatIntervalMs: number; fetchMinBytes: number; fetchMaxWaitMs: number; instanceId: string };
  schemaRegistryUrl: string;
  redisUrl: string;
  clickhouseUrl: string;
  clickhouseDatabase: string;
  topicPrefix: string;
  redisPrefix: string;
  partitions: number;
  replicationFactor: number;
  logLevel: string;
  home: string;
  modelStoreDir: string;
  server: ServerConfig;
  processors: ProcessorsConfig;
  trainer: TrainerConfig;
  monitor: MonitorConfig;
}

/** The trainer's settings (EDDY_TRAINER_*), see docs/trainer.md. */
export interface TrainerConfig {
  gateMargin: number;
  backend: string;
  epochs: number;
  minExamples: number;
  minExamplesPerLabel: number;
  maxTextChars: number;
  maxLabelDrift: number;
  keepVersions: number;
  /** EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES: a first model this large defers the model search to the next version (0: never). */
  quickFirstModelExamples: number;
  /** EDDY_TRAINER_DATA_WAIT_MS: bound on waiting for a request's watermark in ClickHouse. */
  dataWaitMs: number;
  /** EDDY_TRAINER_NICE: the nice value `eddy trainer run` takes once running (0: unchanged). */
  nice: number;
}

/** The prediction server's settings (EDDY_SERVER_*), see docs/server.md. */
export interface ServerConfig {
  host: string;
  port: number;
  /** API key -> the one client it may act for (from EDDY_SERVER_API_KEYS and EDDY_SERVER_API_KEYS_FILE). */
  apiKeys: Map<string, string>;
  apiKeysFile: string;
  adminKey: string;
  modelMemoryBytes: number;
  featureTimeoutMs: number;
  /** Entity states kept between predictions (featurizer/tracked-states.ts); 0: none. */
  featureCacheEntries: number;
  maxTextChars: number;
  maxMetadataEntries: number;
  maxMetadataBytes: number;
  maxBatch: number;
  topK: number;
  publishBuffer: number;
  publisher: 'thread' | 'inline';
  /** The PredictionMade spool: written before each answer (fsync: and flushed), or off. */
  spool: 'write' | 'fsync' | 'off';
  spoolDir: string;
  canaryKey: string;
  replicaId: string;
  /** Internal /metrics port without a key (0: none). */
  metricsPort: number;
  metricsHost: string;
}

type RawEnv = {
  EDDY_KAFKA_BROKERS: string; EDDY_KAFKA_SESSION_TIMEOUT_MS: number; EDDY_KAFKA_HEARTBEAT_MS: number; EDDY_KAFKA_FETCH_MIN_BYTES: number; EDDY_KAFKA_FETCH_MAX_WAIT_MS: number; EDDY_INSTANCE_ID: string;
  EDDY_SCHEMA_REGISTRY_URL: string; EDDY_REDIS_URL: string;
  EDDY_CLICKHOUSE_URL: string; EDDY_CLICKHOUSE_DATABASE: string; EDDY_TOPIC_PREFIX: string;
  EDDY_REDIS_PREFIX: string; EDDY_PARTITIONS: number; EDDY_REPLICATION_FACTOR: number;
  EDDY_LOG_LEVEL: string; EDDY_HOME: string; EDDY_MODEL_STORE_DIR: string;
  EDDY_SERVER_HOST: string; EDDY_SERVER_PORT: number; EDDY_SERVER_API_KEYS: string; EDDY_SERVER_API_KEYS_FILE: string;
  EDDY_SERVER_ADMIN_KEY: string; EDDY_SERVER_MODEL_MEMORY_MB: number; EDDY_SERVER_FEATURE_TIMEOUT_MS: number; EDDY_SERVER_FEATURE_CACHE_ENTRIES: number;
  EDDY_SERVER_MAX_TEXT_CHARS: number; EDDY_SERVER_MAX_METADATA_ENTRIES: number; EDDY_SERVER_MAX_METADATA_BYTES: number;
  EDDY_SERVER_MAX_BATCH: number; EDDY_SERVER_TOP_K: number; EDDY_SERVER_PUBLISH_BUFFER: number; EDDY_SERVER_PUBLISHER: 'thread' | 'inline'; EDDY_SERVER_SPOOL: 'write' | 'fsync' | 'off'; EDDY_SERVER_SPOOL_DIR: string;
  EDDY_SERVER_CANARY_KEY: string; EDDY_SERVER_REPLICA_ID: string; EDDY_SERVER_METRICS_PORT: number; EDDY_SERVER_METRICS_HOST: string;
  EDDY_REVIEW_UNSURE_BELOW: number; EDDY_REVIEW_CONFIDENT_ABOVE: number; EDDY_REVIEW_MAX_ITEMS: number;
  EDDY_MONITOR_SEGMENT_FIELDS: string; EDDY_MONITOR_LENGTH_BUCKETS: string; EDDY_MONITOR_SEGMENT_GAP_PCT: number; EDDY_MONITOR_SEGMENT_MIN_SUPPORT: number;
  EDDY_ANALYTICS_BATCH_ROWS: number; EDDY_ANALYTICS_BATCH_MIN_ROWS: number; EDDY_ANALYTICS_BATCH_MS: number; EDDY_FEATURES_SEEN_TTL_HOURS: number;
  EDDY_FEEDBACK_PREDICTION_TTL_DAYS: number; EDDY_FEEDBACK_MAX_WAITS: number;
  EDDY_TRIGGER_MIN_EXAMPLES: number; EDDY_TRIGGER_MIN_LABELS: number; EDDY_TRIGGER_NEW_EXAMPLES: number;
  EDDY_TRIGGER_GROWTH: number; EDDY_TRIGGER_COOLDOWN_MS: number; EDDY_TRIGGER_OUTSTANDING_TIMEOUT_MS: number;
  EDDY_TRIGGER_STALE_MS: number; EDDY_TRIGGER_CATCH_UP_GROWTH: number; EDDY_TRIGGER_QUIET_MS: number; EDDY_TRIGGER_QUIET_MAX_WAIT_MS: number; EDDY_TRIGGER_QUIET_BURST: number;
  EDDY_TRAINER_GATE_MARGIN: number; EDDY_TRAINER_BACKEND: string; EDDY_TRAINER_EPOCHS: number;
  EDDY_TRAINER_MIN_EXAMPLES: number; EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL: number; EDDY_TRAINER_MAX_TEXT_CHARS: number;
  EDDY_TRAINER_MAX_LABEL_DRIFT: number; EDDY_TRAINER_KEEP_VERSIONS: number; EDDY_TRAINER_DATA_WAIT_MS: number; EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES: number; EDDY_TRAINER_NICE: number;
  EDDY_MONITOR_DROP_PCT: number; EDDY_MONITOR_MIN_SUPPORT: number; EDDY_MONITOR_BIAS_THRESHOLD: number;
  EDDY_MONITOR_AUTO_ROLLBACK: boolean; EDDY_MONITOR_ROLLBACK_DROP_PCT: number; EDDY_MONITOR_ROLLBACK_MIN_SUPPORT: number;
  EDDY_MONITOR_LAG_INTERVAL_MS: number; EDDY_METRICS_PORT: number; EDDY_METRICS_HOST: string;
};

/** Names, defaults and descriptions of every variable, for `eddy config` and the docs. */
export function describeConfig(): Array<{ name: string; default: string; description: string }> {
  return Object.entries(ENV_SCHEMA.properties).map(([name, p]) => ({
    name, default: String(p.default), description: p.description,
  }));
}

/**
 * How a bad value appears in the error: quoted, so that empty or space-padded values show, except
 * secrets (keys, passwords), which are never printed, and URL credentials, which are masked.
 */
export function shownValue(name: string, value: string): string {
  if (/KEY|SECRET|PASSWORD|TOKEN/.test(name)) return `<${value.length} characters, hidden>`;
  return JSON.stringify(value.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/]*@/i, '$1***@'));
}

/** docs/configuration.md, generated from the schema above (`eddy config --markdown`); a test keeps it in sync. */
export function configurationMarkdown(): string {
  const rows = describeConfig().map((v) => `| \`${v.name}\` | ${v.default === '' ? '' : `\`${v.default}\``} | ${v.description.replace(/\|/g, '\\|')} |`);
  return [
    '# Configuration',
    '',
    'Every Eddy process reads these environment variables, validated at start: a bad value stops the',
    'process with one message naming each bad variable. Generated from `common/config.ts` by',
    '`npx eddy config --markdown > docs/configuration.md`; `test/config.test.ts` fails when this file is stale.',
    '',
    '| variable | default | meaning |',
    '|---|---|---|',
    ...rows,
    '',
  ].join('\n');
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): EddyConfig {
  // Only our variables are validated: the rest of the environment is none of our business.
  const data: Record<string, string> = {};
  for (const name of Object.keys(ENV_SCHEMA.properties)) {
    const value = env[name];
    if (value !== undefined && value !== '') data[name] = value;
  }
  let raw: RawEnv;
  try {
    raw = envSchema<RawEnv>({ schema: ENV_SCHEMA, data, dotenv: false });
  } catch (err) {
    const problems = ((err as { errors?: Array<{ instancePath: string; message?: string }> }).errors ?? [])
      .map((e) => {
        const name = e.instancePath.replace(/^\//, '');
        return `${name}=${shownValue(name, data[name] ?? '')} ${e.message ?? 'is invalid'}`;
      });
    throw new ConfigError(`invalid configuration: ${problems.length ? problems.join('; ') : String(err)}`);
  }
  const home = raw.EDDY_HOME || path.join(os.homedir(), '.cache', 'eddy');
  return {
    kafkaBrokers: raw.EDDY_KAFKA_BROKERS.split(','),
    kafka: { sessionTimeoutMs: raw.EDDY_KAFKA_SESSION_TIMEOUT_MS, heartbeatIntervalMs: raw.EDDY_KAFKA_HEARTBEAT_MS, fetchMinBytes: raw.EDDY_KAFKA_FETCH_MIN_BYTES, fetchMaxWaitMs: raw.EDDY_KAFKA_FETCH_MAX_WAIT_MS, instanceId: raw.EDDY_INSTANCE_ID },
    schemaRegistryUrl: raw.EDDY_SCHEMA_REGISTRY_URL.replace(/\/+$/, ''),
    redisUrl: raw.EDDY_REDIS_URL,
    clickhouseUrl: raw.EDDY_CLICKHOUSE_URL,
    clickhouseDatabase: raw.EDDY_CLICKHOUSE_DATABASE,
    topicPrefix: raw.EDDY_TOPIC_PREFIX,
    redisPrefix: raw.EDDY_REDIS_PREFIX,
    partitions: raw.EDDY_PARTITIONS,
    replicationFactor: raw.EDDY_REPLICATION_FACTOR,
    logLevel: raw.EDDY_LOG_LEVEL,
    home,
    modelStoreDir: raw.EDDY_MODEL_STORE_DIR || path.join(home, 'models'),
    processors: processorsConfig(raw),
    server: {
      host: raw.EDDY_SERVER_HOST,
      port: raw.EDDY_SERVER_PORT,
      apiKeys: parseApiKeys(raw.EDDY_SERVER_API_KEYS, raw.EDDY_SERVER_API_KEYS_FILE),
      apiKeysFile: raw.EDDY_SERVER_API_KEYS_FILE,
      adminKey: raw.EDDY_SERVER_ADMIN_KEY,
      modelMemoryBytes: raw.EDDY_SERVER_MODEL_MEMORY_MB * 1024 * 1024,
      featureTimeoutMs: raw.EDDY_SERVER_FEATURE_TIMEOUT_MS,
      featureCacheEntries: raw.EDDY_SERVER_FEATURE_CACHE_ENTRIES,
      maxTextChars: raw.EDDY_SERVER_MAX_TEXT_CHARS,
      maxMetadataEntries: raw.EDDY_SERVER_MAX_METADATA_ENTRIES,
      maxMetadataBytes: raw.EDDY_SERVER_MAX_METADATA_BYTES,
      maxBatch: raw.EDDY_SERVER_MAX_BATCH,
      topK: raw.EDDY_SERVER_TOP_K,
      publishBuffer: raw.EDDY_SERVER_PUBLISH_BUFFER,
      publisher: raw.EDDY_SERVER_PUBLISHER,
      spool: raw.EDDY_SERVER_SPOOL,
      spoolDir: raw.EDDY_SERVER_SPOOL_DIR || path.join(home, 'spool'),
      canaryKey: raw.EDDY_SERVER_CANARY_KEY,
      replicaId: raw.EDDY_SERVER_REPLICA_ID || `${os.hostname()}-${process.pid}`.replace(/[^A-Za-z0-9._-]/g, '_'),
      metricsPort: raw.EDDY_SERVER_METRICS_PORT,
      metricsHost: raw.EDDY_SERVER_METRICS_HOST,
    },
    trainer: {
      gateMargin: raw.EDDY_TRAINER_GATE_MARGIN,
      backend: raw.EDDY_TRAINER_BACKEND,
      epochs: raw.EDDY_TRAINER_EPOCHS,
      minExamples: raw.EDDY_TRAINER_MIN_EXAMPLES,
      minExamplesPerLabel: raw.EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL,
      maxTextChars: raw.EDDY_TRAINER_MAX_TEXT_CHARS,
      maxLabelDrift: raw.EDDY_TRAINER_MAX_LABEL_DRIFT,
      keepVersions: raw.EDDY_TRAINER_KEEP_VERSIONS,
      dataWaitMs: raw.EDDY_TRAINER_DATA_WAIT_MS,
      quickFirstModelExamples: raw.EDDY_TRAINER_QUICK_FIRST_MODEL_EXAMPLES,
      nice: raw.EDDY_TRAINER_NICE,
    },
    monitor: {
      dropPct: raw.EDDY_MONITOR_DROP_PCT,
      minSupport: raw.EDDY_MONITOR_MIN_SUPPORT,
      biasThreshold: raw.EDDY_MONITOR_BIAS_THRESHOLD,
      autoRollback: raw.EDDY_MONITOR_AUTO_ROLLBACK,
      rollbackDropPct: raw.EDDY_MONITOR_ROLLBACK_DROP_PCT,
      rollbackMinSupport: raw.EDDY_MONITOR_ROLLBACK_MIN_SUPPORT,
      lagIntervalMs: raw.EDDY_MONITOR_LAG_INTERVAL_MS,
      metricsPort: raw.EDDY_METRICS_PORT,
      metricsHost: raw.EDDY_METRICS_HOST,
      segmentFields: raw.EDDY_MONITOR_SEGMENT_FIELDS.split(',').filter(Boolean),
      lengthBuckets: lengthBuckets(raw.EDDY_MONITOR_LENGTH_BUCKETS),
      segmentGapPct: raw.EDDY_MONITOR_SEGMENT_GAP_PCT,
      segmentMinSupport: raw.EDDY_MONITOR_SEGMENT_MIN_SUPPORT,
    },
  };
}

function lengthBuckets(value: string): number[] {
  const bounds = value.split(',').map(Number);
  if (bounds.some((b, i) => i > 0 && b <= bounds[i - 1]!)) {
    throw new ConfigError(`invalid configuration: EDDY_MONITOR_LENGTH_BUCKETS=${JSON.stringify(value)} must be ascending character counts`);
  }
  return bounds;
}

/** The quality monitor's settings (EDDY_MONITOR_*), see docs/monitoring.md. */
export interface MonitorConfig {
  /** Alert when a metric falls more than this many percent below the previous week's. */
  dropPct: number;
  /** Judgements a window (and a label) needs before its metrics may alert. */
  minSupport: number;
  /** Jensen-Shannon divergence (bits, 0..1) of predicted vs observed labels that raises PREDICTION_BIAS. */
  biasThreshold: number;
  autoRollback: boolean;
  /** A fresh version whose live accuracy is this many percent below its predecessor's is rolled back. */
  rollbackDropPct: number;
  /** Judgements each of the two versions needs before the comparison is made (once). */
  rollbackMinSupport: number;
  lagIntervalMs: number;
  /** /metrics of processes without an HTTP API (0: none). */
  metricsPort: number;
  metricsHost: string;
  /** Metadata fields whose values are quality segments. */
  segmentFields: string[];
  /** Ascending character counts splitting texts into length segments. */
  lengthBuckets: number[];
  /** SEGMENT_GAP when a segment's accuracy is more than this many percent below its client's. */
  segmentGapPct: number;
  segmentMinSupport: number;
}

/** API keys from the variable (key=client,...) and the file ("key client" per line); a bad line names itself. */
function parseApiKeys(inline: string, file: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const pair of inline.split(',').filter(Boolean)) {
    const at = pair.indexOf('=');
    keys.set(pair.slice(0, at), pair.slice(at + 1));
  }
  if (!file) return keys;
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`invalid configuration: EDDY_SERVER_API_KEYS_FILE=${JSON.stringify(file)} cannot be read (${(err as Error).message})`);
  }
  text.split('\n').forEach((line, i) => {
    const trimmed = line.trim();
    if (!trimmed || trimmed.startsWith('#')) return;
    const m = /^([A-Za-z0-9._~+/-]{16,})\s+(\S+)$/.exec(trimmed);
    if (!m) throw new ConfigError(`invalid configuration: EDDY_SERVER_API_KEYS_FILE line ${i + 1} is not "key clientId" (key >= 16 chars of [A-Za-z0-9._~+/-])`);
    keys.set(m[1]!, m[2]!);
  });
  return keys;
}

/** The processors' settings (EDDY_ANALYTICS_*, EDDY_FEATURES_*, EDDY_FEEDBACK_*, EDDY_TRIGGER_*), see docs/processors.md. */
export interface ProcessorsConfig {
  analyticsBatchRows: number;
  analyticsBatchMinRows: number;
  analyticsBatchMs: number;
  featuresSeenTtlMs: number;
  predictionTtlMs: number;
  feedbackMaxWaits: number;
  review: {
    unsureBelow: number;
    confidentAbove: number;
    maxItems: number;
  };
  trigger: {
    minExamples: number;
    minLabels: number;
    newExamples: number;
    growth: number;
    cooldownMs: number;
    outstandingTimeoutMs: number;
    staleMs: number;
    catchUpGrowth: number;
    quietMs: number;
    quietMaxWaitMs: number;
    /** Decayed examples of the last quietMs from which a client counts as busy (0: any example). */
    quietBurst: number;
    /** The trainer's EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL: when a label refused for too few examples has enough. */
    minExamplesPerLabel: number;
  };
}

function processorsConfig(raw: RawEnv): ProcessorsConfig {
  return {
    analyticsBatchRows: raw.EDDY_ANALYTICS_BATCH_ROWS,
    analyticsBatchMinRows: raw.EDDY_ANALYTICS_BATCH_MIN_ROWS,
    analyticsBatchMs: raw.EDDY_ANALYTICS_BATCH_MS,
    featuresSeenTtlMs: raw.EDDY_FEATURES_SEEN_TTL_HOURS * 3_600_000,
    predictionTtlMs: raw.EDDY_FEEDBACK_PREDICTION_TTL_DAYS * 86_400_000,
    feedbackMaxWaits: raw.EDDY_FEEDBACK_MAX_WAITS,
    review: {
      unsureBelow: raw.EDDY_REVIEW_UNSURE_BELOW,
      confidentAbove: raw.EDDY_REVIEW_CONFIDENT_ABOVE,
      maxItems: raw.EDDY_REVIEW_MAX_ITEMS,
    },
    trigger: {
      minExamples: raw.EDDY_TRIGGER_MIN_EXAMPLES,
      minLabels: raw.EDDY_TRIGGER_MIN_LABELS,
      newExamples: raw.EDDY_TRIGGER_NEW_EXAMPLES,
      growth: raw.EDDY_TRIGGER_GROWTH,
      cooldownMs: raw.EDDY_TRIGGER_COOLDOWN_MS,
      outstandingTimeoutMs: raw.EDDY_TRIGGER_OUTSTANDING_TIMEOUT_MS,
      staleMs: raw.EDDY_TRIGGER_STALE_MS,
      catchUpGrowth: raw.EDDY_TRIGGER_CATCH_UP_GROWTH,
      quietMs: raw.EDDY_TRIGGER_QUIET_MS,
      quietMaxWaitMs: raw.EDDY_TRIGGER_QUIET_MAX_WAIT_MS,
      quietBurst: raw.EDDY_TRIGGER_QUIET_BURST,
      minExamplesPerLabel: raw.EDDY_TRAINER_MIN_EXAMPLES_PER_LABEL,
    },
  };
}
