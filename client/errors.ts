import { API_ERRORS, type ApiErrorCode } from '../common/api-errors.ts';

/**
 * Typed errors of the Eddy client. Every failure is an EddyClientError with a `code`: the API's
 * own code (common/api-errors.ts, e.g. CLIENT_UNKNOWN, TEXT_TOO_LONG) for an answer in the error
 * envelope, a dependency's code passed through by the API (REDIS_UNAVAILABLE, KAFKA_UNAVAILABLE),
 * or TIMEOUT / NETWORK / INVALID_EVENT / INVALID_RESPONSE for what happened on the caller's side.
 * The class says what to do about it:
 *
 *   EddyRequestError      400, 413, 415, 422  the request is wrong: fix it, do not retry
 *   EddyAuthError         401, 403            the key is missing, unknown, or not for this client
 *   EddyNotFoundError     404                 unknown client, version, review item or route
 *   EddyConflictError     409                 the state does not allow it (e.g. nothing to roll back to)
 *   EddyUnavailableError  503                 retried already (Retry-After, backoff); try later
 *   EddyServerError       500, other          a bug or an outage on the server side
 *   EddyTimeoutError      -                   no answer within the timeout (every attempt)
 *   EddyNetworkError      -                   no connection (every attempt)
 *   EddyInvalidEventError -                   an event failed validation and was not sent
 */
export type EddyErrorCode = ApiErrorCode | 'TIMEOUT' | 'NETWORK' | 'INVALID_EVENT' | 'INVALID_RESPONSE' | (string & {});

export class EddyClientError extends Error {
  constructor(readonly code: EddyErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EddyClientError';
  }
}

/** An answer in the API's error envelope. */
export class EddyApiError extends EddyClientError {
  constructor(
    readonly status: number,
    code: EddyErrorCode,
    message: string,
    /** For INVALID_REQUEST: each offending path of the request. */
    readonly details: Array<{ path: string; message: string }> = [],
    /** Attempts made (retries included). */
    readonly attempts = 1,
  ) {
    super(code, message);
    this.name = 'EddyApiError';
  }
}

export class EddyRequestError extends EddyApiError { override name = 'EddyRequestError'; }
export class EddyAuthError extends EddyApiError { override name = 'EddyAuthError'; }
export class EddyNotFoundError extends EddyApiError { override name = 'EddyNotFoundError'; }
export class EddyConflictError extends EddyApiError { override name = 'EddyConflictError'; }
export class EddyUnavailableError extends EddyApiError { override name = 'EddyUnavailableError'; }
export class EddyServerError extends EddyApiError { override name = 'EddyServerError'; }

export class EddyTimeoutError extends EddyClientError {
  constructor(message: string, readonly attempts: number) {
    super('TIMEOUT', message);
    this.name = 'EddyTimeoutError';
  }
}

export class EddyNetworkError extends EddyClientError {
  constructor(message: string, readonly attempts: number, cause?: unknown) {
    super('NETWORK', message, { cause });
    this.name = 'EddyNetworkError';
  }
}

/** An event the client refused to send: `paths` names each offending field. */
export class EddyInvalidEventError extends EddyClientError {
  constructor(readonly eventType: string, readonly paths: string[], message: string) {
    super('INVALID_EVENT', message);
    this.name = 'EddyInvalidEventError';
  }
}

type ApiErrorClass = new (status: number, code: EddyErrorCode, message: string, details?: Array<{ path: string; message: string }>, attempts?: number) => EddyApiError;

function classOfStatus(status: number): ApiErrorClass {
  if (status === 401 || status === 403) return EddyAuthError;
  if (status === 404) return EddyNotFoundError;
  if (status === 409) return EddyConflictError;
  if (status === 503) return EddyUnavailableError;
  if (status >= 400 && status < 500) return EddyRequestError;
  return EddyServerError;
}

/** The typed error for an envelope answer. A known code's class follows the API's table, whatever status a proxy put on it. */
export function apiErrorOf(status: number, body: unknown, attempts: number): EddyApiError {
  const e = (body as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error;
  const code = typeof e?.code === 'string' ? e.code : status === 503 ? 'UNAVAILABLE' : 'INVALID_RESPONSE';
  const message = typeof e?.message === 'string' ? e.message : `HTTP ${status} without an error envelope`;
  const details = Array.isArray(e?.details) ? (e.details as Array<{ path: string; message: string }>) : [];
  const known = Object.hasOwn(API_ERRORS, code) ? API_ERRORS[code as ApiErrorCode] : status;
  const Cls = classOfStatus(known);
  return new Cls(status, code, message, details, attempts);
}
