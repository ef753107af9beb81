import * as Ajv2020Module from 'ajv/dist/2020.js';
import { compiledOnFirstCall, type Compiled } from '../../common/compile-on-first-call.ts';

/**
 * Compiles @platformatic/kafka's option validators on first use instead of at import.
 *
 * The library compiles ~40 JSON-schema validators with Ajv when its module loads (one per admin,
 * producer and consumer method, `ajv.compile(...)` at the top level of its options modules), most
 * of which Eddy never calls: ~250 ms of CPU on an idle 2-core machine in every process and worker
 * thread that loads it, several times that on a loaded one, all on the path of a restarted server
 * to its first answer (docs/reliability.md, "Start-up"). Called before the library is imported, this
 * wraps `compile` of the library's Ajv class (the instance lives in the library's utils.js) so that
 * each validator compiles the first time it validates, with the same schema and the same result;
 * the validator's `errors` are copied after each call, which is how the library reads them. The
 * library validates most options only in its `strict` mode, which Eddy does not use: in Eddy only
 * the validator of a consumer's group options, which its constructor always calls, is compiled
 * (~0.1 s, once per process).
 *
 * Only Ajv's Ajv2020 class is touched, imported as the library imports it, so that in the start-up
 * build (bin/build.mjs, which bundles dependencies) both name the one bundled copy and, under tsx,
 * the one file in node_modules; Fastify and env-schema use Ajv's default class. Remove when the
 * library compiles lazily by itself.
 */
type Validate = Compiled<boolean>;
type Compile = (this: unknown, schema: unknown, meta?: boolean) => Validate;

export function lazyLibraryValidators(): void {
  const { Ajv2020 } = Ajv2020Module as unknown as { Ajv2020: { prototype: { compile: Compile & { lazy?: boolean } } } };
  const eagerCompile = Ajv2020.prototype.compile;
  if (eagerCompile.lazy) return;
  const lazyCompile: Compile & { lazy?: boolean } = function (this: unknown, schema, meta) {
    let compiled: Validate | undefined;
    return compiledOnFirstCall(() => (compiled ??= eagerCompile.call(this, schema, meta)));
  };
  lazyCompile.lazy = true;
  Ajv2020.prototype.compile = lazyCompile;
}
