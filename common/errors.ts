/**
 * One error base for the whole platform (after kafkajs `src/errors.js`): every failure carries a
 * stable `code`, whether retrying can help (`retriable`), and the underlying `cause`.
 * Consumers retry retriable errors with backoff and dead-letter the rest; HTTP maps codes to
 * statuses; the CLI prints `message` without a stack.
 */
export class EddyError extends Error {
  readonly code: string;
  readonly retriable: boolean;

  constructor(code: string, message: string, options: { retriable?: boolean; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'EddyError';
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** A configuration variable is missing or malformed. The message names every bad variable. */
export class ConfigError extends EddyError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
    this.name = 'ConfigError';
  }
}

/** A command was called wrongly (a bad option value, an unknown name): the CLI exits 2, as for commander's own usage errors. */
export class UsageError extends EddyError {
  constructor(message: string) {
    super('USAGE', message);
    this.name = 'UsageError';
  }
}

/** A dependency (Kafka, registry, Redis, ClickHouse) is unreachable; work pauses and retries. */
export class DependencyUnavailableError extends EddyError {
  constructor(dependency: string, message: string, cause?: unknown) {
    super(`${dependency.toUpperCase()}_UNAVAILABLE`, message, { retriable: true, cause });
    this.name = 'DependencyUnavailableError';
  }
}

/** An event does not match its Avro schema. `path` names the offending field. */
export class InvalidEventError extends EddyError {
  readonly eventType: string;
  readonly paths: string[];
  constructor(eventType: string, paths: string[], detail: string) {
    super('INVALID_EVENT', `invalid ${eventType}: ${detail}`);
    this.name = 'InvalidEventError';
    this.eventType = eventType;
    this.paths = paths;
  }
}

export function isRetriable(err: unknown): boolean {
  return err instanceof EddyError ? err.retriable : false;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
