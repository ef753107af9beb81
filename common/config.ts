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
    EDDY_SCHEMA_REGISTRY_URL: {
      type: 'string', default: 'http://127.0.0.1:8081/apis/ccompat/v7', pattern: '^https?://',
      description: 'Base URL of a Confluent-compatible schema registry.',
    },
    EDDY_REDIS_URL: {
      type: 'string', default: 'redis://127.0.0.1:6379', pattern: '^rediss?://',
      description: 'Redis URL for real-time features and per-client state.',
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
  },
} as const;

export interface EddyConfig {
  kafkaBrokers: string[];
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
}

type RawEnv = {
  EDDY_KAFKA_BROKERS: string; EDDY_SCHEMA_REGISTRY_URL: string; EDDY_REDIS_URL: string;
  EDDY_CLICKHOUSE_URL: string; EDDY_CLICKHOUSE_DATABASE: string; EDDY_TOPIC_PREFIX: string;
  EDDY_REDIS_PREFIX: string; EDDY_PARTITIONS: number; EDDY_REPLICATION_FACTOR: number;
  EDDY_LOG_LEVEL: string; EDDY_HOME: string; EDDY_MODEL_STORE_DIR: string;
};

/** Names, defaults and descriptions of every variable, for `eddy config` and the docs. */
export function describeConfig(): Array<{ name: string; default: string; description: string }> {
  return Object.entries(ENV_SCHEMA.properties).map(([name, p]) => ({
    name, default: String(p.default), description: p.description,
  }));
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
        return `${name}=${JSON.stringify(data[name] ?? '')} ${e.message ?? 'is invalid'}`;
      });
    throw new ConfigError(`invalid configuration: ${problems.length ? problems.join('; ') : String(err)}`);
  }
  const home = raw.EDDY_HOME || path.join(os.homedir(), '.cache', 'eddy');
  return {
    kafkaBrokers: raw.EDDY_KAFKA_BROKERS.split(','),
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
  };
}
