import { timingSafeEqual } from 'node:crypto';
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerConfig } from '../../common/config.ts';
import { EddyError, errorMessage } from '../../common/errors.ts';
import type { Logger } from '../../common/log.ts';
import { API_ERRORS, isApiErrorCode, type ApiErrorCode } from '../../common/api-errors.ts';

/**
 * HTTP plumbing shared by every route (after fastify/demo): the error envelope and its codes,
 * authentication, and the schemas several routes use. Every error the server answers — its own,
 * a failed validation, Fastify's router and body parser, an unexpected exception — is
 * `{"error": {"code", "message", "details"?}}` with a code from API_ERRORS, never a stack trace.
 */

/**
 * The codes the API answers with, and their HTTP status (common/api-errors.ts, shared with the
 * typed client). The union is derived from that table, so a route that throws a code without a
 * status does not compile. Errors of other layers pass through with their own code: a retriable
 * one (a dependency away, e.g. REDIS_UNAVAILABLE) answers 503 with Retry-After, anything else 500.
 */
export { API_ERRORS, type ApiErrorCode };

/** An error with one of the API's codes (the compiler checks the code). */
export function apiError(code: ApiErrorCode, message: string): EddyError {
  return new EddyError(code, message);
}

export interface ErrorReply {
  status: number;
  code: string;
  message: string;
  details?: Array<{ path: string; message: string }>;
}

/** Maps anything a request can throw to the envelope. Unexpected errors are logged with their stack, never sent. */
export function toErrorReply(err: unknown, logger: Logger, url: string): ErrorReply {
  const fe = err as Partial<FastifyError>;
  if (fe && Array.isArray(fe.validation)) {
    return {
      status: 400, code: 'INVALID_REQUEST', message: fe.message ?? 'invalid request',
      details: fe.validation.map((v) => ({ path: v.instancePath || '/', message: v.message ?? 'is invalid' })),
    };
  }
  if (err instanceof EddyError) {
    const status = isApiErrorCode(err.code) ? API_ERRORS[err.code] : err.retriable ? 503 : 500;
    // An error whose thrower already logs it, rate-limited (a full PredictionMade backlog), is not logged per request.
    if (status >= 500 && !(err as { loggedByThrower?: boolean }).loggedByThrower) logger.error({ code: err.code, err: err.message, url }, 'request failed');
    return { status, code: err.code, message: err.message };
  }
  switch (fe?.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'request body is larger than this route accepts' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send the body as application/json' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'INVALID_JSON', message: errorMessage(err) };
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return { status: 400, code: 'INVALID_REQUEST', message: `the request path is not valid: ${errorMessage(err)}` };
    default:
      break;
  }
  if (err instanceof SyntaxError || (fe?.statusCode === 400 && /JSON/i.test(errorMessage(err)))) {
    return { status: 400, code: 'INVALID_JSON', message: `body is not valid JSON: ${errorMessage(err)}` };
  }
  if (fe?.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, code: 'INVALID_REQUEST', message: errorMessage(err) };
  }
  logger.error({ err: errorMessage(err), stack: (err as Error | undefined)?.stack, url }, 'unexpected error while handling a request');
  return { status: 500, code: 'INTERNAL', message: 'internal error; see the server log' };
}

/** Sends the envelope (with Retry-After on 503). */
export function sendError(reply: FastifyReply, e: ErrorReply): FastifyReply {
  if (e.status === 503) reply.header('retry-after', '1');
  return reply.status(e.status).send({ error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) } });
}

// --- authentication ---

/**
 * Who is asking: the admin key acts for (and sees) every client; a client key acts for and sees
 * its own client only. Every route but /healthz, /readyz and the dashboard's sign-in page and
 * static code needs one (docs/server.md, "Who sees what").
 */
export type Principal = { kind: 'admin' } | { kind: 'client'; clientId: string };

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

/**
 * The dashboard's session cookie: the key itself, HttpOnly (page scripts never read it),
 * SameSite=Strict (never sent by another site's page, so no cross-site request carries it) and
 * re-checked on every request like a header key (revoking a key ends its sessions).
 */
export const SESSION_COOKIE = 'eddy_key';

function cookieValue(req: FastifyRequest, name: string): string | undefined {
  const raw = req.headers.cookie;
  if (!raw) return undefined;
  for (const part of raw.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    try {
      return decodeURIComponent(part.slice(eq + 1).trim());
    } catch {
      return undefined;
    }
  }
  return undefined;
}

function keyOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const header = req.headers['x-api-key'];
  if (typeof header === 'string') return header;
  return cookieValue(req, SESSION_COOKIE);
}

/** The admin key's bytes, kept (the key is compared on every request; config does not change while serving). */
let secretBytes: { key: string; bytes: Buffer } | undefined;

function sameSecret(a: string, secret: string): boolean {
  if (secretBytes?.key !== secret) secretBytes = { key: secret, bytes: Buffer.from(secret) };
  const x = Buffer.from(a);
  return x.length === secretBytes.bytes.length && timingSafeEqual(x, secretBytes.bytes);
}

/** May this principal read or act on this client's data? */
export function maySee(principal: Principal | undefined, clientId: string): boolean {
  return principal !== undefined && (principal.kind === 'admin' || principal.clientId === clientId);
}

const ADMIN: Principal = Object.freeze({ kind: 'admin' });
/** One frozen principal per client (a request's principal is only read). */
const clientPrincipals = new Map<string, Principal>();

/**
 * The principal a key stands for, or undefined for an unknown key. The admin key wins over a
 * client key equal to it. A client's key is recognised without comparing it to the admin key
 * when the admin key belongs to no client or to another one (then it cannot be the admin key):
 * the constant-time comparison copies the key into a buffer, ~4 µs per request in a profile.
 */
export function principalOfKey(config: Pick<ServerConfig, 'adminKey' | 'apiKeys'>, key: string): Principal | undefined {
  const clientId = config.apiKeys.get(key);
  if (clientId !== undefined && (!config.adminKey || config.apiKeys.get(config.adminKey) !== clientId)) return clientPrincipal(clientId);
  if (config.adminKey && sameSecret(key, config.adminKey)) return ADMIN;
  return clientId === undefined ? undefined : clientPrincipal(clientId);
}

function clientPrincipal(clientId: string): Principal {
  let p = clientPrincipals.get(clientId);
  if (!p) {
    if (clientPrincipals.size >= 100_000) clientPrincipals.clear();
    clientPrincipals.set(clientId, (p = Object.freeze({ kind: 'client', clientId })));
  }
  return p;
}

/**
 * The route guards. They run before body validation (onRequest), so a caller without a valid
 * key learns nothing about the API's shape, and readiness is checked after authentication.
 */
export function guards(config: Pick<ServerConfig, 'adminKey' | 'apiKeys'>, isReady: () => boolean) {
  const authenticate = (req: FastifyRequest): Principal => {
    const key = keyOf(req);
    if (!key) throw apiError('UNAUTHENTICATED', 'missing API key (Authorization: Bearer <key>, X-API-Key, or the dashboard sign-in)');
    const principal = principalOfKey(config, key);
    if (!principal) throw apiError('UNAUTHENTICATED', 'unknown API key');
    return principal;
  };
  const ready = () => {
    if (!isReady()) throw apiError('NOT_READY', 'the model registry has not caught up with the models topic yet; retry shortly');
  };
  /** The client key of `:clientId`, or the admin key. */
  const ownClient = (req: FastifyRequest<{ Params: { clientId: string } }>) => {
    const principal = authenticate(req);
    if (!maySee(principal, req.params.clientId)) throw apiError('FORBIDDEN', 'this API key belongs to another client');
    req.principal = principal;
  };
  const admin = (req: FastifyRequest, what: string) => {
    if (!config.adminKey) {
      authenticate(req);
      throw apiError('ADMIN_DISABLED', `${what} are disabled (EDDY_SERVER_ADMIN_KEY is not set)`);
    }
    const principal = authenticate(req);
    if (principal.kind !== 'admin') throw apiError('FORBIDDEN', `${what} need the admin key`);
    req.principal = principal;
  };
  return {
    authenticate,
    /** Any valid key; what it may see is decided by the route (a client key: its own client only). */
    requireKey: async (req: FastifyRequest) => {
      req.principal = authenticate(req);
    },
    /** The client key of `:clientId`, or the admin key; the registry must have caught up (predictions). */
    requireClient: (req: FastifyRequest<{ Params: { clientId: string } }>, _reply: FastifyReply, done: (err?: Error) => void) => {
      // Callback style, not async: every prediction passes here, and a promise per request is CPU.
      try {
        ownClient(req);
        ready();
      } catch (err) {
        done(err as Error);
        return;
      }
      done();
    },
    /** The client key of `:clientId`, or the admin key; for reads of stored data (no readiness needed). */
    requireClientData: async (req: FastifyRequest<{ Params: { clientId: string } }>) => {
      ownClient(req);
    },
    requireAdmin: async (req: FastifyRequest) => {
      admin(req, 'admin endpoints');
      ready();
    },
    /** The admin key, without readiness (/metrics must answer while the registry catches up). */
    requireAdminKey: async (req: FastifyRequest) => {
      admin(req, 'operator endpoints (/metrics)');
    },
  };
}

// --- schemas used by several routes ---

export const errorSchema = {
  $id: 'eddyError',
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string' },
        message: { type: 'string' },
        details: { type: 'array', items: { type: 'object', properties: { path: { type: 'string' }, message: { type: 'string' } } } },
      },
    },
  },
} as const;

export const errorResponses = { '4xx': { $ref: 'eddyError#' }, '5xx': { $ref: 'eddyError#' } };

/** Client ids are at most 200 characters; the router accepts longer path parameters so the schema answers. */
export const MAX_PARAM_LENGTH = 2048;

export const clientParams = {
  type: 'object',
  required: ['clientId'],
  properties: { clientId: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;
