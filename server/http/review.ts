import type { FastifyPluginAsync } from 'fastify';
import type { RedisClient } from '../../common/redis.ts';
import type { ServerConfig } from '../../common/config.ts';
import { derivedId } from '../../common/ids.ts';
import type { ModelRegistry } from '../../models/lifecycle.ts';
import { closeReviewItem, readReviewItem, readReviewQueue, REVIEW_REASONS, type ReviewItem } from '../../models/review.ts';
import type { LabeledExample } from '../../schemas/events.ts';
import type { EventProducer } from '../../streams/index.ts';
import type { LabelDirectory } from '../labels.ts';
import { apiError, clientParams, errorResponses, guards } from './plumbing.ts';

/**
 * The review API: a person (or a labelling tool) works through a client's review queue
 * (models/review.ts, kept by processors/review/): list it, label an item — which becomes a
 * LabeledExample with source REVIEW on the `examples` topic, so the next model is trained on it —
 * or skip it. A client key acts on its own client's queue only; the admin key on any.
 */
export interface ReviewRouteOptions {
  auth: Pick<ServerConfig, 'adminKey' | 'apiKeys'>;
  redis: RedisClient;
  keyPrefix: string;
  producer: Pick<EventProducer, 'send'>;
  labels: Pick<LabelDirectory, 'get'>;
  registry: Pick<ModelRegistry, 'get'>;
  /** How long a closed item stays closed (the prediction TTL). */
  closedTtlMs: number;
  /** Labelling checks the label against the client's labels: only once the registry caught up. */
  isReady(): boolean;
}

const itemParams = {
  type: 'object',
  required: ['clientId', 'itemId'],
  properties: { ...clientParams.properties, itemId: { type: 'string', minLength: 1, maxLength: 64, pattern: '^[A-Za-z0-9_-]+$' } },
} as const;

export const reviewItemSchema = {
  type: 'object',
  required: ['itemId', 'priority', 'text', 'metadata', 'predicted', 'scores', 'reasons', 'shadow', 'feedback', 'occurrences', 'requestId', 'firstSeenAt', 'lastSeenAt'],
  properties: {
    itemId: { type: 'string' },
    priority: { type: 'number' },
    text: { type: 'string' },
    metadata: { type: 'object', additionalProperties: { type: 'string' } },
    predicted: {
      type: 'object', required: ['label', 'score', 'version', 'variant'],
      properties: { label: { type: 'string' }, score: { type: 'number' }, version: { type: ['string', 'null'] }, variant: { type: 'string' } },
    },
    scores: { type: 'array', items: { type: 'object', properties: { label: { type: 'string' }, score: { type: 'number' } } } },
    reasons: { type: 'array', items: { type: 'object', required: ['reason', 'score'], properties: { reason: { type: 'string', enum: [...REVIEW_REASONS] }, score: { type: 'number' } } } },
    shadow: { type: ['object', 'null'], properties: { label: { type: 'string' }, version: { type: 'string' }, score: { type: 'number' } } },
    feedback: { type: ['object', 'null'], properties: { outcome: { type: 'string' }, correctLabel: { type: ['string', 'null'] } } },
    occurrences: { type: 'integer' },
    requestId: { type: 'string' },
    firstSeenAt: { type: 'number' },
    lastSeenAt: { type: 'number' },
  },
} as const;

export const reviewRoutes: FastifyPluginAsync<ReviewRouteOptions> = async (app, opts) => {
  const { redis, keyPrefix: p } = opts;
  const { requireClient, requireClientData } = guards(opts.auth, opts.isReady);

  /** The labels a reviewer may choose: the client's defined labels and those its live model knows. */
  const labelsOf = (clientId: string): string[] => {
    const defined = opts.labels.get(clientId).map((d) => d.label);
    const c = opts.registry.get(clientId);
    const live = c?.live !== undefined ? c.versions.get(c.live)?.labels ?? [] : [];
    return [...new Set([...defined, ...live])].sort();
  };

  const openItem = async (clientId: string, itemId: string): Promise<ReviewItem> => {
    const item = await readReviewItem(redis, p, clientId, itemId);
    if (!item) throw apiError('REVIEW_ITEM_UNKNOWN', `review item '${itemId}' of client '${clientId}' is not in the queue (labelled, skipped, expired or never queued)`);
    return item;
  };

  app.get<{ Params: { clientId: string }; Querystring: { limit?: string; offset?: string } }>('/v1/clients/:clientId/review', {
    onRequest: requireClientData,
    schema: {
      params: clientParams,
      // Query values arrive as strings and this server never coerces types: digits are checked here.
      querystring: {
        type: 'object', additionalProperties: false,
        properties: { limit: { type: 'string', pattern: '^(100|[1-9][0-9]?)$' }, offset: { type: 'string', pattern: '^[0-9]{1,9}$' } },
      },
      response: {
        200: {
          type: 'object', required: ['clientId', 'total', 'items', 'labels'],
          properties: { clientId: { type: 'string' }, total: { type: 'integer' }, items: { type: 'array', items: reviewItemSchema }, labels: { type: 'array', items: { type: 'string' } } },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { clientId } = req.params;
    const { total, items } = await readReviewQueue(redis, p, clientId, { limit: Number(req.query.limit ?? 20), offset: Number(req.query.offset ?? 0) });
    return { clientId, total, items, labels: labelsOf(clientId) };
  });

  app.post<{ Params: { clientId: string; itemId: string }; Body: { label: string; reviewer?: string } }>('/v1/clients/:clientId/review/:itemId/label', {
    onRequest: requireClient,
    schema: {
      params: itemParams,
      body: {
        type: 'object', required: ['label'], additionalProperties: false,
        properties: { label: { type: 'string', minLength: 1, maxLength: 200 }, reviewer: { type: 'string', maxLength: 200 } },
      },
      response: {
        200: {
          type: 'object', required: ['itemId', 'label', 'exampleId', 'eventId'],
          properties: { itemId: { type: 'string' }, label: { type: 'string' }, exampleId: { type: 'string' }, eventId: { type: 'string' } },
        },
        ...errorResponses,
      },
    },
  }, async (req) => {
    const { clientId, itemId } = req.params;
    const { label } = req.body;
    const item = await openItem(clientId, itemId);
    const known = labelsOf(clientId);
    if (!known.includes(label)) throw apiError('LABEL_UNKNOWN', `'${label}' is not a label of client '${clientId}' (one of: ${known.join(', ') || 'none defined'})`);
    const example: LabeledExample = {
      // The same label of the same item is the same event: a retried request is deduplicated downstream.
      eventId: derivedId(`eddy:review:${clientId}:${itemId}:${label}`),
      clientId,
      occurredAt: Date.now(),
      // One example per reviewed text: a later review of the same text replaces it.
      exampleId: `review:${itemId}`,
      text: item.text,
      label,
      source: 'REVIEW',
      metadata: { ...item.metadata, ...(req.body.reviewer ? { reviewer: req.body.reviewer } : {}) },
      predictionId: item.requestId || null,
    };
    // Sent before the item is closed: if Kafka is away the item stays in the queue (503, retry).
    await opts.producer.send('LabeledExample', example);
    await closeReviewItem(redis, p, clientId, itemId, Date.now(), opts.closedTtlMs);
    return { itemId, label, exampleId: example.exampleId, eventId: example.eventId };
  });

  app.post<{ Params: { clientId: string; itemId: string } }>('/v1/clients/:clientId/review/:itemId/skip', {
    onRequest: requireClientData,
    schema: {
      params: itemParams,
      body: { type: ['object', 'null'], additionalProperties: false, properties: {} },
      response: { 200: { type: 'object', required: ['itemId', 'skipped'], properties: { itemId: { type: 'string' }, skipped: { type: 'boolean' } } }, ...errorResponses },
    },
  }, async (req) => {
    const { clientId, itemId } = req.params;
    if (!(await closeReviewItem(redis, p, clientId, itemId, Date.now(), opts.closedTtlMs))) {
      throw apiError('REVIEW_ITEM_UNKNOWN', `review item '${itemId}' of client '${clientId}' is not in the queue (labelled, skipped, expired or never queued)`);
    }
    return { itemId, skipped: true };
  });
};
