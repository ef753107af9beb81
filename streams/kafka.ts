import { Kafka, logLevel, type LogEntry, type KafkaConfig } from 'kafkajs';
import type { EddyConfig } from '../common/config.ts';
import { createLogger, type Logger } from '../common/log.ts';

const LEVELS: Record<number, 'error' | 'warn' | 'info' | 'debug'> = {
  [logLevel.ERROR]: 'error',
  [logLevel.WARN]: 'warn',
  [logLevel.INFO]: 'info',
  [logLevel.DEBUG]: 'debug',
};

/** kafkajs logs through pino so every line is structured like the rest of Eddy's. */
function pinoLogCreator(logger: Logger) {
  return () => ({ namespace, level, log }: LogEntry) => {
    const { message, ...extra } = log;
    // Bounded retries are a deliberate choice (see EventProducer); the warning adds nothing.
    if (message.startsWith('Limiting retries for the idempotent producer')) return;
    // Per-request failures that kafkajs retries by itself are warnings; what finally fails reaches
    // our code as a thrown error and is logged there.
    const retried = namespace === 'Connection' || 'retryCount' in extra;
    const name = LEVELS[level] ?? 'info';
    logger[retried && name === 'error' ? 'warn' : name]({ kafkajs: namespace, ...extra }, message);
  };
}

export function createKafka(config: Pick<EddyConfig, 'kafkaBrokers' | 'logLevel'>, clientId: string, overrides: Partial<KafkaConfig> = {}): Kafka {
  // kafkajs INFO logs every group join/leave; only warnings and errors reach our log by default.
  const level = config.logLevel === 'debug' || config.logLevel === 'trace' ? 'debug' : config.logLevel === 'info' ? 'warn' : config.logLevel;
  const logger = createLogger('kafkajs', level);
  process.env.KAFKAJS_NO_PARTITIONER_WARNING ??= '1';
  return new Kafka({
    clientId,
    brokers: config.kafkaBrokers,
    logLevel: logLevel.WARN,
    logCreator: pinoLogCreator(logger),
    connectionTimeout: 3000,
    retry: { initialRetryTime: 200, retries: 8 },
    ...overrides,
  });
}
