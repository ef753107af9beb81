import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { CounterCell } from '../common/metrics.ts';
import { hotMetrics, serverMetrics } from './metrics.ts';
import { errorSchema, MAX_PARAM_LENGTH, sendError, toErrorReply } from './http/plumbing.ts';
import { serverRoutes, type AppDeps } from './http/routes.ts';

export type { AppDeps };

/**
 * Builds the Fastify instance: strict JSON bodies, the error envelope for every error (Fastify's
 * own router and parser errors included), per-route metrics, then the routes (./http/routes.ts).
 * The dashboard registers itself on it (server/main.ts).
 */
export function createApp(deps: AppDeps): FastifyInstance {
  const app = Fastify({
    logger: false,
    // Strict bodies: no type coercion (a number is not a text) and unknown fields are refused.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    forceCloseConnections: true,
    // Path parameters longer than the schemas allow still reach the schema (which answers 400 with
    // details); beyond this the router refuses, and frameworkErrors puts that in the envelope too.
    routerOptions: { maxParamLength: MAX_PARAM_LENGTH },
    frameworkErrors: (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const e = toErrorReply(err, deps.logger, req.url);
      serverMetrics.errors().inc({ code: e.code });
      return sendError(reply, e);
    },
  });
  // Only JSON bodies: a text/plain body is 415 UNSUPPORTED_MEDIA_TYPE, not a string that fails the schema.
  app.removeContentTypeParser('text/plain');
  app.addSchema(errorSchema);
  app.setErrorHandler((err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
    const e = toErrorReply(err, deps.logger, req.url);
    serverMetrics.errors().inc({ code: e.code });
    return sendError(reply, e);
  });
  app.setNotFoundHandler((req, reply) => {
    serverMetrics.errors().inc({ code: 'NOT_FOUND' });
    return sendError(reply, { status: 404, code: 'NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` });
  });
  // Every server metric exists from the start (a counter that is absent until its first event reads as "no data").
  for (const create of Object.values(serverMetrics)) create();
  const requests = hotMetrics.requests();
  const latency = serverMetrics.requestSeconds();
  // Per-route series are looked up once (label objects are hashed into keys on every lookup).
  const byRoute = new Map<string, { latency: ReturnType<typeof latency.labels>; status: Map<number, CounterCell> }>();
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    let series = byRoute.get(route);
    if (!series) byRoute.set(route, (series = { latency: latency.labels(route), status: new Map() }));
    let count = series.status.get(reply.statusCode);
    if (!count) series.status.set(reply.statusCode, (count = requests.cell({ route, status: String(reply.statusCode) })));
    count.n++;
    series.latency.observe(reply.elapsedTime / 1000);
    done();
  });
  app.register(serverRoutes, deps);
  return app;
}
