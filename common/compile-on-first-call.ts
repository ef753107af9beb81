/** A compiled validator or serializer in the shape Ajv and Fastify use: `errors` is read after a call. */
export type Compiled<R = unknown> = ((data: unknown) => R) & { errors?: unknown };

/**
 * A stand-in for a compiled validator (or serializer) that compiles it on its first call: start-up
 * pays only for what is used (streams/clients/lazy-validators.ts for the Kafka library's option
 * validators, server/app.ts for the routes' schemas; docs/reliability.md, "Start-up"). `compile`
 * is called on every call and must return the same function each time (the caller memoises it, so
 * that it can also compile ahead). The compiled function's `errors` are copied after each call,
 * which is where Ajv and Fastify read a validation's errors.
 */
export function compiledOnFirstCall<R>(compile: () => Compiled<R>): Compiled<R> {
  const call: Compiled<R> = (data) => {
    const compiled = compile();
    const result = compiled(data);
    call.errors = compiled.errors;
    return result;
  };
  return call;
}
