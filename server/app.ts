import { timingSafeEqual } from 'node:crypto';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyPluginAsync, type FastifyReply, type FastifyRequest } from 'fastify';
import type { ServerConfig } from '../common/config.ts';
import { EddyError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { metricsRegistry } from '../common/metrics.ts';
import { serverMetrics } from './metrics.ts';
import type { ModelManager } from './model-manager.ts';
import { checkInputLimits, type PredictionService, type PredictResult } from './prediction-service.ts';
import type { PredictionPublisher } from './publisher.ts';
import type { ModelAdmin, ModelRegistry } from '../models/lifecycle.ts';

/**
 * The HTTP API (after fastify/demo): the routes are one plugin with request AND response schemas
 * on every route; errors are `{error: {code, message, details?}}` with stable codes and never a
 * stack trace; authentication and readiness run before body validation, so a caller without a
 * valid key learns nothing about the API's shape.
 */

export interface AppDeps {
  config: ServerConfig;
  service: PredictionService;
  registry: ModelRegistry;
  manager: ModelManager;
  publisher: PredictionPublisher;
  admin: ModelAdmin;
  isReady(): boolean;
  logger: Logger;
}

/** Stable error codes and their HTTP status. */
const STATUS_OF_CODE: Record<string, number> = {
  INVALID_REQUEST: 400,
  INVALID_JSON: 400,
  UNAUTHENTICATED: 401,
  FORBIDDEN: 403,
  ADMIN_DISABLED: 403,
  NOT_FOUND: 404,
  CLIENT_UNKNOWN: 404,
  VERSION_UNKNOWN: 404,
  CONFLICT: 409,
  PAYLOAD_TOO_LARGE: 413,
  TEXT_TOO_LONG: 413,
  METADATA_TOO_LARGE: 413,
  BATCH_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  NOT_READY: 503,
};

const errorSchema = {
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

const errorResponses = { '4xx': { $ref: 'eddyError#' }, '5xx': { $ref: 'eddyError#' } };

const clientParams = {
  type: 'object',
  required: ['clientId'],
  properties: { clientId: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;

const metadataSchema = { type: 'object', additionalProperties: { type: 'string' } } as const;

const predictItem = {
  type: 'object',
  required: ['text'],
  additionalProperties: false,
  properties: {
    text: { type: 'string', minLength: 1 },
    metadata: metadataSchema,
    requestId: { type: 'string', minLength: 1, maxLength: 200 },
  },
} as const;

const topK = { type: 'integer', minimum: 1, maximum: 1000 } as const;

const predictionSchema = {
  type: 'object',
  required: ['requestId', 'label', 'scores', 'modelVersion', 'variant', 'featuresDefaulted'],
  properties: {
    requestId: { type: 'string' },
    clientId: { type: 'string' },
    label: { type: 'string' },
    scores: { type: 'array', items: { type: 'object', required: ['label', 'score'], properties: { label: { type: 'string' }, score: { type: 'number' } } } },
    modelVersion: { type: ['string', 'null'] },
    variant: { type: 'string', enum: ['LIVE', 'CANARY', 'BASELINE'] },
    featuresDefaulted: { type: 'boolean' },
    latencyMs: { type: 'number' },
  },
} as const;

const versionSchema = {
  type: ['object', 'null'],
  properties: {
    version: { type: 'string' },
    share: { type: 'number' },
    pinned: { type: 'boolean' },
    loaded: { type: 'boolean' },
    loadError: { type: ['string', 'null'] },
    publishedAt: { type: 'number' },
    trainingExamples: { type: 'integer' },
    featurizer: { type: 'string' },
    labels: { type: 'array', items: { type: 'string' } },
    metrics: { type: 'object', additionalProperties: { type: 'number' } },
  },
} as const;

const adminResult = {
  type: 'object',
  required: ['eventId', 'applied'],
  properties: {
    eventId: { type: 'string' },
    event: { type: 'string' },
    applied: { type: 'boolean', description: 'true once this replica applied the event from the log' },
    live: { type: ['string', 'null'] },
    pinned: { type: 'boolean' },
    canary: { type: ['string', 'null'] },
    shadow: { type: ['string', 'null'] },
  },
} as const;

type Principal = { kind: 'admin' } | { kind: 'client'; clientId: string };

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

function keyOf(req: FastifyRequest): string | undefined {
  const auth = req.headers.authorization;
  if (auth?.startsWith('Bearer ')) return auth.slice(7).trim();
  const header = req.headers['x-api-key'];
  return typeof header === 'string' ? header : undefined;
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export const serverRoutes: FastifyPluginAsync<AppDeps> = async (app, deps) => {
  const { config, service, registry, manager, admin } = deps;
  app.addSchema(errorSchema);

  const authenticate = (req: FastifyRequest): Principal => {
    const key = keyOf(req);
    if (!key) throw new EddyError('UNAUTHENTICATED', 'missing API key (Authorization: Bearer <key> or X-API-Key)');
    if (config.adminKey && sameSecret(key, config.adminKey)) return { kind: 'admin' };
    const clientId = config.apiKeys.get(key);
    if (clientId === undefined) throw new EddyError('UNAUTHENTICATED', 'unknown API key');
    return { kind: 'client', clientId };
  };

  const requireClient = async (req: FastifyRequest<{ Params: { clientId: string } }>) => {
    const principal = authenticate(req);
    if (principal.kind === 'client' && principal.clientId !== req.params.clientId) {
      throw new EddyError('FORBIDDEN', 'this API key belongs to another client');
    }
    if (!deps.isReady()) throw new EddyError('NOT_READY', 'the model registry has not caught up with the models topic yet; retry shortly');
  };

  const requireAdmin = async (req: FastifyRequest) => {
    if (!config.adminKey) {
      authenticate(req);
      throw new EddyError('ADMIN_DISABLED', 'admin endpoints are disabled (EDDY_SERVER_ADMIN_KEY is not set)');
    }
    if (authenticate(req).kind !== 'admin') throw new EddyError('FORBIDDEN', 'admin endpoints need the admin key');
    if (!deps.isReady()) throw new EddyError('NOT_READY', 'the model registry has not caught up with the models topic yet; retry shortly');
  };

  const checkLimits = (text: string, metadata: Record<string, string> | undefined) => checkInputLimits(config, text, metadata);

  const publish = (events: Awaited<ReturnType<PredictionService['predict']>>['events']) => {
    for (const e of events) deps.publisher.publish(e);
  };

  // JSON escapes can take 6 bytes per character; the limits above are the precise check.
  const oneBody = config.maxTextChars * 6 + config.maxMetadataBytes * 6 + 4096;

  app.get('/healthz', {
    schema: { response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } },
  }, async () => ({ status: 'ok' }));

  app.get('/readyz', {
    schema: {
      response: {
        200: { type: 'object', properties: { status: { type: 'string' }, clients: { type: 'integer' }, loadedModels: { type: 'integer' } } },
        ...errorResponses,
      },
    },
  }, async () => {
    if (!deps.isReady()) throw new EddyError('NOT_READY', 'the model registry has not caught up with the models topic yet');
    return { status: 'ready', clients: registry.size, loadedModels: manager.stats.models };
  });

  app.get('/metrics', { schema: { response: { 200: { type: 'string' } } } }, async (_req, reply) => {
    reply.header('content-type', metricsRegistry.contentType);
    return metricsRegistry.metrics();
  });

  app.post<{ Params: { clientId: string }; Body: { text: string; metadata?: Record<string, string>; requestId?: string; topK?: number } }>(
    '/v1/clients/:clientId/predict',
    {
      bodyLimit: oneBody,
      onRequest: requireClient,
      schema: {
        params: clientParams,
        body: { ...predictItem, properties: { ...predictItem.properties, topK } },
        response: { 200: predictionSchema, ...errorResponses },
      },
    },
    async (req) => {
      const { text, metadata, requestId, topK: k } = req.body;
      checkLimits(text, metadata);
      const { result, events } = await service.predict({ clientId: req.params.clientId, text, metadata: metadata ?? {}, requestId, topK: k }, 'HTTP');
      publish(events);
      return result;
    },
  );

  app.post<{ Params: { clientId: string }; Body: { items: Array<{ text: string; metadata?: Record<string, string>; requestId?: string }>; topK?: number } }>(
    '/v1/clients/:clientId/predict/batch',
    {
      bodyLimit: oneBody * config.maxBatch,
      onRequest: requireClient,
      schema: {
        params: clientParams,
        body: {
          type: 'object', required: ['items'], additionalProperties: false,
          properties: { items: { type: 'array', minItems: 1, items: predictItem }, topK },
        },
        response: {
          200: { type: 'object', required: ['predictions'], properties: { predictions: { type: 'array', items: predictionSchema } } },
          ...errorResponses,
        },
      },
    },
    async (req) => {
      const { items, topK: k } = req.body;
      if (items.length > config.maxBatch) throw new EddyError('BATCH_TOO_LARGE', `batch has ${items.length} items; the limit is ${config.maxBatch}`);
      items.forEach((item) => checkLimits(item.text, item.metadata));
      const predictions: PredictResult[] = [];
      for (const item of items) {
        const { result, events } = await service.predict(
          { clientId: req.params.clientId, text: item.text, metadata: item.metadata ?? {}, requestId: item.requestId, topK: k }, 'HTTP');
        publish(events);
        predictions.push(result);
      }
      return { predictions };
    },
  );

  app.get<{ Params: { clientId: string } }>('/v1/clients/:clientId/model', {
    onRequest: requireClient,
    schema: {
      params: clientParams,
      response: {
        200: {
          type: 'object',
          required: ['clientId', 'live', 'canary', 'shadow'],
          properties: {
            clientId: { type: 'string' },
            live: versionSchema, canary: versionSchema, shadow: versionSchema,
            rollbackTo: { type: ['string', 'null'] },
            versions: { type: 'array', items: { type: 'string' } },
            baseline: { type: 'boolean', description: 'true when the client is answered by the baseline (no servable model)' },
          },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { clientId } = req.params;
    if (!service.isKnown(clientId)) throw new EddyError('CLIENT_UNKNOWN', `client '${clientId}' has no model and no label definitions`);
    const c = registry.get(clientId);
    const describe = (version: string | undefined, extra: { share?: number; pinned?: boolean }) => {
      const info = version ? c?.versions.get(version) : undefined;
      if (!info) return null;
      return {
        version: info.version, ...extra, loaded: manager.isLoaded(clientId, info.version),
        loadError: manager.failure(clientId, info.version)?.message ?? null,
        publishedAt: info.publishedAt, trainingExamples: info.trainingExamples, featurizer: info.featurizer,
        labels: info.labels, metrics: info.metrics,
      };
    };
    return {
      clientId,
      live: describe(c?.live, { pinned: c?.pinned ?? false }),
      canary: describe(c?.canary?.version, { share: c?.canary?.share }),
      shadow: describe(c?.shadow?.version, { share: c?.shadow?.share }),
      rollbackTo: c?.liveHistory.at(-1) ?? null,
      versions: c ? [...c.versions.keys()] : [],
      baseline: c?.live === undefined,
    };
  });

  /** Waits (bounded) until this replica read its own event back from the log, so the answer shows the new state. */
  const applied = async (clientId: string, eventId: string, event: string) => {
    const deadline = Date.now() + 10_000;
    while (!registry.hasApplied(eventId) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const c = registry.get(clientId);
    return {
      eventId, event, applied: registry.hasApplied(eventId),
      live: c?.live ?? null, pinned: c?.pinned ?? false, canary: c?.canary?.version ?? null, shadow: c?.shadow?.version ?? null,
    };
  };

  app.post<{ Params: { clientId: string }; Body: { version: string; variant?: 'LIVE' | 'CANARY' | 'SHADOW'; share?: number; pinned?: boolean; reason?: string } }>(
    '/v1/admin/clients/:clientId/promote',
    {
      onRequest: requireAdmin,
      schema: {
        params: clientParams,
        body: {
          type: 'object', required: ['version'], additionalProperties: false,
          properties: {
            version: { type: 'string', minLength: 1, maxLength: 100 },
            variant: { type: 'string', enum: ['LIVE', 'CANARY', 'SHADOW'], default: 'LIVE' },
            share: { type: 'number', minimum: 0, maximum: 1 },
            pinned: { type: 'boolean' },
            reason: { type: 'string', maxLength: 1000 },
          },
        },
        response: { 200: adminResult, ...errorResponses },
      },
    },
    async (req) => {
      const e = await admin.promote(req.params.clientId, { ...req.body, variant: req.body.variant ?? 'LIVE', actor: 'admin-api' });
      return applied(req.params.clientId, e.eventId, 'ModelPromoted');
    },
  );

  app.post<{ Params: { clientId: string }; Body: { to?: string; reason?: string } }>(
    '/v1/admin/clients/:clientId/rollback',
    {
      onRequest: requireAdmin,
      schema: {
        params: clientParams,
        body: {
          type: ['object', 'null'], additionalProperties: false,
          properties: { to: { type: 'string', minLength: 1, maxLength: 100 }, reason: { type: 'string', maxLength: 1000 } },
        },
        response: { 200: adminResult, ...errorResponses },
      },
    },
    async (req) => {
      const e = await admin.rollback(req.params.clientId, { ...(req.body ?? {}), actor: 'admin-api' });
      return applied(req.params.clientId, e.eventId, 'ModelRolledBack');
    },
  );

  app.post<{ Params: { clientId: string }; Body: { version?: string; pinned?: boolean; reason?: string } }>(
    '/v1/admin/clients/:clientId/pin',
    {
      onRequest: requireAdmin,
      schema: {
        params: clientParams,
        body: {
          type: ['object', 'null'], additionalProperties: false,
          properties: {
            version: { type: 'string', minLength: 1, maxLength: 100 },
            pinned: { type: 'boolean', default: true },
            reason: { type: 'string', maxLength: 1000 },
          },
        },
        response: { 200: adminResult, ...errorResponses },
      },
    },
    async (req) => {
      const body = req.body ?? {};
      const e = await admin.pin(req.params.clientId, { version: body.version, pinned: body.pinned ?? true, reason: body.reason, actor: 'admin-api' });
      return applied(req.params.clientId, e.eventId, 'ModelPromoted');
    },
  );
};

function toErrorReply(err: FastifyError | EddyError | Error, logger: Logger, req: FastifyRequest): { status: number; code: string; message: string; details?: Array<{ path: string; message: string }> } {
  const fe = err as FastifyError;
  if (fe.validation) {
    return {
      status: 400, code: 'INVALID_REQUEST', message: err.message,
      details: fe.validation.map((v) => ({ path: v.instancePath || '/', message: v.message ?? 'is invalid' })),
    };
  }
  if (err instanceof EddyError) {
    const status = STATUS_OF_CODE[err.code] ?? (err.retriable ? 503 : 500);
    if (status >= 500) logger.error({ code: err.code, err: err.message, url: req.url }, 'request failed');
    return { status, code: err.code, message: err.message };
  }
  switch (fe.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return { status: 413, code: 'PAYLOAD_TOO_LARGE', message: 'request body is larger than this route accepts' };
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return { status: 415, code: 'UNSUPPORTED_MEDIA_TYPE', message: 'send the body as application/json' };
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return { status: 400, code: 'INVALID_JSON', message: err.message };
    default:
      break;
  }
  if (err instanceof SyntaxError || (fe.statusCode === 400 && /JSON/i.test(err.message))) {
    return { status: 400, code: 'INVALID_JSON', message: `body is not valid JSON: ${err.message}` };
  }
  if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, code: 'INVALID_REQUEST', message: err.message };
  }
  logger.error({ err: errorMessage(err), stack: err.stack, url: req.url }, 'unexpected error while handling a request');
  return { status: 500, code: 'INTERNAL', message: 'internal error; see the server log' };
}

/** Builds the Fastify instance: routes, JSON errors, 404s, per-route metrics. */
export function createApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    // Strict bodies: no type coercion (a number is not a text) and unknown fields are refused.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    forceCloseConnections: true,
  });
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toErrorReply(err, deps.logger, req);
    serverMetrics.errors().inc({ code: e.code });
    if (e.status === 503) reply.header('retry-after', '1');
    return reply.status(e.status).send({ error: { code: e.code, message: e.message, ...(e.details ? { details: e.details } : {}) } });
  });
  app.setNotFoundHandler((req, reply) => {
    serverMetrics.errors().inc({ code: 'NOT_FOUND' });
    return reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });
  // Every server metric exists from the start (a counter that is absent until its first event reads as "no data").
  for (const create of Object.values(serverMetrics)) create();
  const requests = serverMetrics.requests();
  const latency = serverMetrics.requestSeconds();
  // Per-route children are cached: label lookups are on every request's path.
  const latencyByRoute = new Map<string, ReturnType<typeof latency.labels>>();
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    requests.inc({ route, status: String(reply.statusCode) });
    let child = latencyByRoute.get(route);
    if (!child) latencyByRoute.set(route, (child = latency.labels(route)));
    child.observe(reply.elapsedTime / 1000);
    done();
  });
  app.register(serverRoutes, deps);
  return app;
}
