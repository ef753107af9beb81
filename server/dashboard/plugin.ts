import fs from 'node:fs';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { ServerConfig } from '../../common/config.ts';
import type { RedisClient } from '../../common/redis.ts';
import type { Logger } from '../../common/log.ts';
import { LagCollector } from '../../streams/lag.ts';
import type { Streams } from '../../streams/index.ts';
import type { ModelRegistry } from '../../models/lifecycle.ts';
import { DashboardData } from './data.ts';
import { apiError, errorResponses, guards, principalOfKey, SESSION_COOKIE, type Principal } from '../http/plumbing.ts';

/**
 * The operators' dashboard, served by the prediction server itself (no separate runtime, no build
 * step): /dashboard is plain HTML + one JS file + one CSS file; the page polls two JSON endpoints
 * whose responses have schemas like every other route. It also samples consumer lag and topic
 * rates (LagCollector) for the page and for /metrics.
 */
export interface DashboardOptions {
  /** The keys: every page and endpoint but the sign-in page and the static code needs one. */
  auth: Pick<ServerConfig, 'adminKey' | 'apiKeys'>;
  redis: RedisClient;
  keyPrefix: string;
  registry?: ModelRegistry;
  /** For consumer lag and event rates (admin API); without it the page shows none. */
  streams?: Pick<Streams, 'withAdmin' | 'topics'>;
  lagIntervalMs?: number;
  logger: Logger;
}

const STATIC = new URL('./static/', import.meta.url);
const FILES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'login.html': 'text/html; charset=utf-8',
  'review.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'review.js': 'text/javascript; charset=utf-8',
  'login.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};
/** Code and the sign-in page: no data in them, so no key (a browser must load them to sign in). */
const PUBLIC_FILES = ['login.html', 'app.js', 'login.js', 'review.js', 'style.css'];

/** 12 hours: a shift. The key is checked again on every request, so revoking it ends the session at once. */
const SESSION_MAX_AGE_S = 12 * 3600;

/** A figure, or null where nothing was judged (the page shows "—"). */
const figure = { type: ['number', 'null'] } as const;

const quality = {
  type: 'object',
  required: ['precision', 'recall', 'f1', 'accuracy', 'support', 'bias'],
  properties: { precision: figure, recall: figure, f1: figure, accuracy: figure, support: { type: 'integer' }, bias: figure },
} as const;

const segmentGaps = { type: 'array', items: { type: 'object', properties: { segment: { type: 'string' }, gapPercent: { type: 'number' } } } } as const;

const lifecycleEntry = {
  type: 'object',
  required: ['id', 'clientId', 'type', 'at', 'title'],
  properties: {
    id: { type: 'string' }, clientId: { type: 'string' }, type: { type: 'string' }, at: { type: 'number' },
    version: { type: ['string', 'null'] }, title: { type: 'string' },
  },
} as const;

const errorReply = {
  type: 'object', required: ['error'],
  properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' } } } },
} as const;

const principalSchema = {
  type: 'object', required: ['kind'],
  properties: { kind: { type: 'string', enum: ['admin', 'client'] }, clientId: { type: 'string' } },
} as const;

const overviewSchema = {
  type: 'object',
  required: ['generatedAt', 'totalClients', 'clients', 'recent', 'rates', 'lag', 'lagSampledAt'],
  properties: {
    generatedAt: { type: 'number' },
    totalClients: { type: 'integer' },
    clients: {
      type: 'array',
      items: {
        type: 'object',
        required: ['clientId', 'live', 'liveSource', 'quality', 'openAlerts', 'segmentGaps', 'reviewQueue', 'trend', 'predictions', 'feedback'],
        properties: {
          clientId: { type: 'string' },
          live: { type: ['string', 'null'] },
          liveSource: { type: 'string', enum: ['server', 'monitor', 'none'] },
          versions: { type: 'integer' },
          lastRetrain: { type: ['object', 'null'], properties: { at: { type: 'number' }, reason: { type: 'string' }, detail: { type: 'string' } } },
          lastOutcome: { type: ['object', 'null'], properties: { at: { type: 'number' }, status: { type: 'string' }, version: { type: 'string' }, detail: { type: 'string' } } },
          lastRollback: { type: ['object', 'null'], properties: { at: { type: 'number' }, detail: { type: 'string' } } },
          quality,
          openAlerts: { type: 'array', items: { type: 'string' } },
          segmentGaps,
          reviewQueue: { type: 'integer' },
          trend: {
            type: 'array',
            items: { type: 'object', properties: { t: { type: 'number' }, f1: figure, precision: figure, recall: figure, support: { type: 'integer' } } },
          },
          predictions: { type: 'integer' },
          feedback: { type: 'integer' },
          lastActivity: { type: 'number' },
        },
      },
    },
    recent: { type: 'array', items: lifecycleEntry },
    rates: { type: 'array', items: { type: 'object', properties: { topic: { type: 'string' }, perSecond: { type: ['number', 'null'] }, total: { type: 'number' } } } },
    lag: { type: 'array', items: { type: 'object', properties: { group: { type: 'string' }, topic: { type: 'string' }, lag: { type: 'number' } } } },
    lagSampledAt: { type: ['number', 'null'] },
  },
} as const;

const point = {
  type: 'object',
  properties: {
    t: { type: 'number' }, precision: { type: 'number' }, recall: { type: 'number' }, f1: { type: 'number' }, accuracy: { type: 'number' },
    support: { type: 'integer' }, bias: { type: 'number' }, version: { type: ['string', 'null'] },
  },
} as const;

const clientSchema = {
  type: 'object',
  required: ['clientId', 'live', 'versions', 'quality', 'labels', 'byVersion', 'trend', 'daily', 'markers', 'events', 'segments', 'segmentGaps', 'reviewQueue'],
  properties: {
    clientId: { type: 'string' },
    live: { type: ['string', 'null'] },
    versions: { type: 'array', items: { type: 'string' } },
    quality,
    labels: { type: 'array', items: { type: 'object', properties: { label: { type: 'string' }, precision: figure, recall: figure, f1: figure, support: { type: 'integer' } } } },
    byVersion: { type: 'array', items: { type: 'object', properties: { version: { type: 'string' }, precision: figure, recall: figure, f1: figure, accuracy: figure, support: { type: 'integer' } } } },
    trend: { type: 'array', items: point },
    daily: { type: 'array', items: { type: 'object', properties: { day: { type: 'string' }, precision: figure, recall: figure, f1: figure, accuracy: figure, support: { type: 'integer' } } } },
    segments: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          segment: { type: 'string' }, field: { type: 'string' }, value: { type: 'string' },
          precision: { type: 'number' }, recall: { type: 'number' }, f1: { type: 'number' }, accuracy: { type: 'number' }, support: { type: 'integer' },
          gapPercent: { type: 'number' }, previousAccuracy: figure, previousSupport: { type: 'integer' }, dropPercent: figure,
        },
      },
    },
    segmentGaps,
    reviewQueue: { type: 'integer' },
    model: {
      type: ['object', 'null'],
      properties: {
        version: { type: 'string' }, config: { type: 'string' }, cvMacroF1: { type: ['number', 'null'] }, searched: { type: 'boolean' },
        backend: { type: ['string', 'null'] }, trainingExamples: { type: 'integer' }, macroF1: { type: ['number', 'null'] },
        eceBefore: { type: ['number', 'null'] }, eceAfter: { type: ['number', 'null'] }, unsureBelow: { type: ['number', 'null'] },
      },
    },
    markers: { type: 'array', items: { type: 'object', properties: { at: { type: 'number' }, version: { type: ['string', 'null'] }, type: { type: 'string' }, title: { type: 'string' } } } },
    events: { type: 'array', items: lifecycleEntry },
  },
} as const;

export const dashboardRoutes: FastifyPluginAsync<DashboardOptions> = async (app, opts) => {
  const lag = opts.streams ? new LagCollector(opts.streams, opts.lagIntervalMs ?? 15_000, opts.logger.child({ component: 'lag' })) : undefined;
  const data = new DashboardData(opts.redis, opts.keyPrefix, opts.registry, () => lag?.latest);
  // Read once at start: the files are part of the release, and a missing one should fail the boot.
  const files = new Map(Object.entries(FILES).map(([name, type]) => [name, { type, body: fs.readFileSync(new URL(name, STATIC)) }]));

  app.addHook('onReady', async () => lag?.start());
  app.addHook('onClose', async () => lag?.stop());

  const { authenticate, requireKey, requireClientData } = guards(opts.auth, () => true);
  const sendFile = (name: string) => async (_req: unknown, reply: FastifyReply) => {
    const f = files.get(name)!;
    return reply.header('content-type', f.type).header('cache-control', 'no-cache').send(f.body);
  };
  /**
   * The pages need a key like the data does. A browser that has none (a navigation asking for
   * HTML) gets the same 401 with the sign-in page as its body, so a person can sign in; any other
   * caller gets the JSON envelope.
   */
  const page = (name: string) => async (req: FastifyRequest, reply: FastifyReply) => {
    try {
      req.principal = authenticate(req);
    } catch (err) {
      if (!/text\/html/.test(String(req.headers.accept ?? ''))) throw err;
      const login = files.get('login.html')!;
      return reply.status(401).header('content-type', login.type).header('cache-control', 'no-store').send(login.body);
    }
    return sendFile(name)(req, reply);
  };
  app.get('/dashboard', page('index.html'));
  app.get('/dashboard/', page('index.html'));
  app.get('/dashboard/review', page('review.html'));
  for (const name of PUBLIC_FILES) app.get(`/dashboard/${name === 'login.html' ? 'login' : name}`, sendFile(name));

  // Sign-in for people: the key goes into an HttpOnly, SameSite=Strict cookie (see SESSION_COOKIE).
  // Write routes take JSON bodies only, which a form on another site cannot send (415).
  app.post<{ Body: { key: string } }>('/dashboard/session', {
    schema: {
      body: { type: 'object', required: ['key'], additionalProperties: false, properties: { key: { type: 'string', minLength: 1, maxLength: 512 } } },
      response: { 200: { type: 'object', required: ['principal'], properties: { principal: principalSchema } }, ...errorResponses },
    },
  }, async (req, reply) => {
    const principal = principalOfKey(opts.auth, req.body.key);
    if (!principal) throw apiError('UNAUTHENTICATED', 'unknown API key');
    const secure = String(req.headers['x-forwarded-proto'] ?? '').split(',')[0]?.trim() === 'https' ? '; Secure' : '';
    reply.header('set-cookie', `${SESSION_COOKIE}=${encodeURIComponent(req.body.key)}; Path=/; HttpOnly; SameSite=Strict; Max-Age=${SESSION_MAX_AGE_S}${secure}`);
    return { principal };
  });
  app.delete('/dashboard/session', { schema: { response: { 200: { type: 'object', properties: { signedOut: { type: 'boolean' } } } } } }, async (_req, reply) => {
    reply.header('set-cookie', `${SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0`);
    return { signedOut: true };
  });
  app.get('/dashboard/api/me', {
    onRequest: requireKey,
    schema: { response: { 200: { type: 'object', required: ['principal'], properties: { principal: principalSchema } }, '4xx': errorReply, '5xx': errorReply } },
  }, async (req) => ({ principal: req.principal! }));

  // Query values arrive as strings and this server never coerces types: digits are checked here.
  app.get<{ Querystring: { limit?: string; offset?: string; search?: string } }>('/dashboard/api/overview', {
    onRequest: requireKey,
    schema: {
      querystring: {
        type: 'object', additionalProperties: false,
        properties: {
          limit: { type: 'string', pattern: '^(1000|[1-9][0-9]{0,2})$', description: 'clients per page, 1..1000 (default 100)' },
          offset: { type: 'string', pattern: '^[0-9]{1,9}$' },
          search: { type: 'string', maxLength: 200, description: 'substring of the client id' },
        },
      },
      response: { 200: overviewSchema, '4xx': errorReply, '5xx': errorReply },
    },
  }, async (req) => data.overview({ limit: Number(req.query.limit ?? 100), offset: Number(req.query.offset ?? 0), search: req.query.search || undefined }, req.principal as Principal));

  app.get<{ Params: { clientId: string } }>('/dashboard/api/clients/:clientId', {
    onRequest: requireClientData,
    schema: {
      params: { type: 'object', required: ['clientId'], properties: { clientId: { type: 'string', minLength: 1, maxLength: 200 } } },
      response: { 200: clientSchema, '4xx': errorReply, '5xx': errorReply },
    },
  }, async (req) => data.client(req.params.clientId));
};
