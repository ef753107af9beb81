/**
 * The codes the HTTP API answers with, and their HTTP status: the contract between the server
 * (server/http/plumbing.ts answers them) and its callers (client/ maps them to typed errors).
 * It lives here, below both, so that neither imports the other.
 *
 * Errors of other layers pass through the API with their own code: a retriable one (a dependency
 * away, e.g. REDIS_UNAVAILABLE, KAFKA_UNAVAILABLE) answers 503 with Retry-After, anything else 500.
 */
export const API_ERRORS = {
  INVALID_REQUEST: 400,
  INVALID_JSON: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  ADMIN_DISABLED: 403,
  NOT_FOUND: 404,
  CLIENT_UNKNOWN: 404,
  VERSION_UNKNOWN: 404,
  REVIEW_ITEM_UNKNOWN: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  TEXT_TOO_LONG: 413,
  METADATA_TOO_LARGE: 413,
  BATCH_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  LABEL_UNKNOWN: 422,
  INTERNAL: 500,
  NOT_READY: 503,
} as const satisfies Record<string, number>;

export type ApiErrorCode = keyof typeof API_ERRORS;

export const API_ERROR_CODES = Object.keys(API_ERRORS) as ApiErrorCode[];

export function isApiErrorCode(code: string): code is ApiErrorCode {
  return Object.hasOwn(API_ERRORS, code);
}

/** The error envelope every HTTP error answers with. */
export interface ErrorEnvelope {
  error: { code: string; message: string; details?: Array<{ path: string; message: string }> };
}
