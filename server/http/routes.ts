import type { FastifyPluginAsync } from 'fastify';
import type { ServerConfig } from '../../common/config.ts';
import type { Logger } from '../../common/log.ts';
import { metricsRegistry } from '../../common/metrics.ts';
import type { ModelAdmin, ModelRegistry, VersionInfo } from '../../models/lifecycle.ts';
import type { ModelManager } from '../model-manager.ts';
import { checkInputLimits, type PredictionService, type PredictResult } from '../prediction-service.ts';
import type { PredictionPublisher } from '../publisher.ts';
import { apiError, clientParams, errorResponses, guards } from './plumbing.ts';

/**
 * The API's routes (after fastify/demo): one plugin, request AND response schemas on every route.
 * Errors, authentication and the shared schemas are the plumbing's (./plumbing.ts).
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
const explain = { type: 'boolean', description: 'also answer, per returned label, the input terms that pushed its score most' } as const;

/** The body of POST /v1/clients/:clientId/predict (exported: the benchmark's bare-route floor validates with it). */
export const predictBodySchema = { ...predictItem, properties: { ...predictItem.properties, topK, explain } } as const;

/** models/explain.ts `Explanation`. */
export const explanationSchema = {
  type: 'object',
  required: ['method', 'exact', 'labels'],
  properties: {
    method: { type: 'string', enum: ['occlusion', 'keyword-overlap'] },
    exact: { type: 'boolean' },
    labels: {
      type: 'array',
      items: {
        type: 'object',
        required: ['label', 'logit', 'prior', 'terms'],
        properties: {
          label: { type: 'string' }, logit: { type: 'number' }, prior: { type: 'number' },
          terms: {
            type: 'array',
            items: {
              type: 'object',
              required: ['term', 'features', 'kind', 'spans', 'contribution'],
              properties: {
                term: { type: 'string' },
                features: { type: 'array', items: { type: 'string' } },
                kind: { type: 'string', enum: ['word', 'char', 'metadata', 'realtime'] },
                spans: { type: 'array', items: { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 2 } },
                contribution: { type: 'number' },
              },
            },
          },
        },
      },
    },
  },
} as const;

/** One prediction as the predict routes answer it (exported: the benchmark's bare-route floor answers with it). */
export const predictionSchema = {
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
    unsure: { type: ['boolean', 'null'], description: "true when the calibrated top score is below the model version's unsure threshold; null without calibration (baseline, older versions)" },
    latencyMs: { type: 'number' },
    explanation: explanationSchema,
  },
} as const;

/** The body of POST /v1/clients/:clientId/predict/batch (exported, like the answer below, for the benchmark's floor). */
export const predictBatchBodySchema = {
  type: 'object', required: ['items'], additionalProperties: false,
  properties: { items: { type: 'array', minItems: 1, items: predictItem }, topK, explain },
} as const;

/** The answer of POST /v1/clients/:clientId/predict/batch: one prediction per item, in item order. */
export const predictBatchSchema = { type: 'object', required: ['predictions'], properties: { predictions: { type: 'array', items: predictionSchema } } } as const;

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
    kind: { type: ['string', 'null'], description: 'the model kind (from the configuration)' },
    config: { type: ['object', 'null'], additionalProperties: true, description: 'the configuration the model search chose: {kind, params, charNgrams}' },
    cvMacroF1: { type: ['number', 'null'], description: 'cross-validated macro-F1 of that configuration at the last search' },
    searched: { type: 'boolean', description: 'whether this version ran the search (false: reused the previous choice)' },
    backend: { type: ['string', 'null'] },
    calibration: {
      type: ['object', 'null'],
      properties: { temperature: { type: 'number' }, unsureBelow: { type: 'number' }, eceBefore: { type: 'number' }, eceAfter: { type: 'number' } },
    },
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

export const serverRoutes: FastifyPluginAsync<AppDeps> = async (app, deps) => {
  const { config, service, registry, manager, admin } = deps;
  const { requireClient, requireAdmin, requireAdminKey } = guards(config, deps.isReady);

  const checkLimits = (text: string, metadata: Record<string, string> | undefined) => checkInputLimits(config, text, metadata);

  // An answered prediction is always logged: room for its events is checked before predicting
  // (admit: 503 + Retry-After while the backlog is full), and the answer leaves only once they are
  // in the spool (committed), so neither a full buffer nor a crash loses them (docs/reliability.md).
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
    if (!deps.isReady()) throw apiError('NOT_READY', 'the model registry has not caught up with the models topic yet');
    return { status: 'ready', clients: registry.size, loadedModels: manager.stats.models };
  });

  // Per-client series (client ids, quality) are not for every caller: the admin key, or the
  // internal port (EDDY_SERVER_METRICS_PORT) that only the scraper reaches.
  app.get('/metrics', { onRequest: requireAdminKey, schema: { response: { 200: { type: 'string' }, ...errorResponses } } }, async (_req, reply) => {
    reply.header('content-type', metricsRegistry.contentType);
    return metricsRegistry.metrics();
  });

  app.post<{ Params: { clientId: string }; Body: { text: string; metadata?: Record<string, string>; requestId?: string; topK?: number; explain?: boolean } }>(
    '/v1/clients/:clientId/predict',
    {
      bodyLimit: oneBody,
      onRequest: requireClient,
      schema: {
        params: clientParams,
        body: predictBodySchema,
        response: { 200: predictionSchema, ...errorResponses },
      },
    },
    async (req) => {
      const { text, metadata, requestId, topK: k, explain: why } = req.body;
      checkLimits(text, metadata);
      deps.publisher.admit(1);
      const { result, events } = await service.predict({ clientId: req.params.clientId, text, metadata: metadata ?? {}, requestId, topK: k, explain: why }, 'HTTP');
      publish(events);
      await deps.publisher.committed();
      return result;
    },
  );

  app.post<{ Params: { clientId: string }; Body: { items: Array<{ text: string; metadata?: Record<string, string>; requestId?: string }>; topK?: number; explain?: boolean } }>(
    '/v1/clients/:clientId/predict/batch',
    {
      bodyLimit: oneBody * config.maxBatch,
      onRequest: requireClient,
      schema: {
        params: clientParams,
        body: predictBatchBodySchema,
        response: { 200: predictBatchSchema, ...errorResponses },
      },
    },
    async (req) => {
      const { items, topK: k, explain: why } = req.body;
      if (items.length > config.maxBatch) throw apiError('BATCH_TOO_LARGE', `batch has ${items.length} items; the limit is ${config.maxBatch}`);
      items.forEach((item) => checkLimits(item.text, item.metadata));
      deps.publisher.admit(items.length);
      // All items at once: the model looked up once, their feature reads in one Redis round trip.
      // Published once every item succeeded, in item order.
      const answers = await service.predictMany(req.params.clientId, items.map((item) => (
        { clientId: req.params.clientId, text: item.text, metadata: item.metadata ?? {}, requestId: item.requestId, topK: k, explain: why })), 'HTTP');
      const predictions: PredictResult[] = new Array(answers.length);
      answers.forEach(({ result, events }, i) => {
        publish(events);
        predictions[i] = result;
      });
      await deps.publisher.committed();
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
    if (!service.isKnown(clientId)) throw apiError('CLIENT_UNKNOWN', `client '${clientId}' has no model and no label definitions`);
    const c = registry.get(clientId);
    const describe = (version: string | undefined, extra: { share?: number; pinned?: boolean }) => {
      const info = version ? c?.versions.get(version) : undefined;
      if (!info) return null;
      return {
        version: info.version, ...extra, loaded: manager.isLoaded(clientId, info.version),
        loadError: manager.failure(clientId, info.version)?.message ?? null,
        publishedAt: info.publishedAt, trainingExamples: info.trainingExamples, featurizer: info.featurizer,
        labels: info.labels, metrics: info.metrics, ...modelInfoFields(info),
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
    await registry.waitForApplied(eventId, 10_000);
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

/** The model-builder fields of a version (configuration, CV score, calibration) for GET /v1/clients/:id/model. */
function modelInfoFields(info: VersionInfo) {
  let config: Record<string, unknown> | null = null;
  try {
    config = info.modelConfig ? (JSON.parse(info.modelConfig) as Record<string, unknown>) : null;
  } catch {
    config = null;
  }
  const m = info.metrics;
  return {
    kind: typeof config?.kind === 'string' ? config.kind : null, config, cvMacroF1: info.cvMacroF1 ?? null, searched: info.searched ?? false, backend: info.backend ?? null,
    calibration: m.temperature !== undefined
      ? { temperature: m.temperature, unsureBelow: m.unsureBelow ?? 0, eceBefore: m.eceBefore ?? 0, eceAfter: m.eceAfter ?? 0 }
      : null,
  };
}
