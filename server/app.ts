import { AjvCompiler } from '@fastify/ajv-compiler';
import { SerializerSelector } from '@fastify/fast-json-stringify-compiler';
import Fastify, { type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import { compiledOnFirstCall, type Compiled } from '../common/compile-on-first-call.ts';
import type { CounterCell, HistogramCell } from '../common/metrics.ts';
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
  const schemas = compiledOnFirstUse();
  const app = Fastify({
    logger: false,
    // Strict bodies: no type coercion (a number is not a text) and unknown fields are refused.
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, allErrors: false } },
    return503OnClosing: true,
    schemaController: { compilersFactory: schemas.compilersFactory },
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
  const byRoute = new Map<string, { latency: HistogramCell; status: Map<number, CounterCell> }>();
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    let series = byRoute.get(route);
    if (!series) byRoute.set(route, (series = { latency: latency.cell({ route }), status: new Map() }));
    let count = series.status.get(reply.statusCode);
    if (!count) series.status.set(reply.statusCode, (count = requests.cell({ route, status: String(reply.statusCode) })));
    count.n++;
    series.latency.observe(reply.elapsedTime / 1000);
    done();
  });
  app.register(serverRoutes, deps);
  compileAllOf.set(app, schemas.compileAll);
  return app;
}

const compileAllOf = new WeakMap<FastifyInstance, () => number>();

/**
 * Compiles every schema of `app`'s routes that has not compiled yet (they compile on first use:
 * {@link compiledOnFirstUse}) and returns how many there are in all; throws as Fastify would have at
 * start if one does not compile. For tests.
 */
export function compileEveryRouteSchema(app: FastifyInstance): number {
  const compileAll = compileAllOf.get(app);
  if (!compileAll) throw new Error('not an app of createApp');
  return compileAll();
}

type Compile = (route: unknown) => Compiled;
type CompilersFactory = NonNullable<NonNullable<FastifyServerOptions['schemaController']>['compilersFactory']>;

/**
 * Fastify's own validator and serializer compilers (Ajv, fast-json-stringify), each route's schema
 * compiled when the route first validates a request or serializes an answer instead of when the
 * server starts: ~25 routes, most of which a restarted server does not serve in its first seconds
 * (the dashboard, the admin and review routes, most error answers), and Ajv's own set-up cost
 * ~0.25 s of CPU on the path to its first answer (docs/reliability.md, "Start-up"). A compiled
 * function is what Fastify would have built, from the same schema. A schema that does not compile fails its
 * route's first request instead of the start: `compileAll` compiles every one (a test does).
 */
export function compiledOnFirstUse(): { compilersFactory: CompilersFactory; compileAll(): number } {
  const compiles: Array<() => Compiled> = [];
  const lazily = <O>(factory: (externalSchemas: unknown, options: O) => Compile) => (externalSchemas: unknown, options: O): Compile => {
    let compileRoute: Compile | undefined; // built on first use too: Ajv's instance is most of the cost
    return (route) => {
      let compiled: Compiled | undefined;
      const compile = () => (compiled ??= (compileRoute ??= factory(externalSchemas, options))(route));
      compiles.push(compile);
      return compiledOnFirstCall(compile);
    };
  };
  return {
    compilersFactory: {
      buildValidator: lazily(AjvCompiler() as never) as never,
      buildSerializer: lazily(SerializerSelector() as never) as never,
    },
    compileAll: () => {
      for (const compile of compiles) compile();
      return compiles.length;
    },
  };
}
