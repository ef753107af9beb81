/**
 * Which way Eddy's dependencies may point (shared/ARCHITECTURE.md, "Components"). `npm test` runs
 * `npm run lint:deps` first; a wrong import fails it with a message naming both files.
 *
 *   bin/ cli/ simulator/                 wiring, operator commands, the demo's simulated upstream
 *   processors/   trainer/   server/     the three runtimes: siblings, none imports another
 *   models/  featurizer/  streams/       what they share
 *   schemas/  common/                    contracts; infrastructure
 *
 *   client/                              the typed client for upstream services: a library, beside
 *                                        the floors; uses schemas/, streams/, common/ only
 *
 * test/ may import anything; nothing else may import test/ or client/.
 */
const RUNTIMES = '^(processors|trainer|server)/';
const SHARED = '^(models|featurizer|streams|schemas|common)/';
const NOT_PRODUCTION = '^(test|scratch)/|[.](test|bench)[.]ts$|^vitest[.]config[.]ts$';

module.exports = {
  forbidden: [
    {
      name: 'runtimes-are-siblings',
      comment: 'processors/, trainer/ and server/ never import one another: move what two of them share below them (models/, featurizer/, streams/, common/).',
      severity: 'error',
      from: { path: '^(processors|trainer|server)/' },
      to: { path: RUNTIMES, pathNot: '^$1/' },
    },
    {
      name: 'shared-code-stays-below',
      comment: 'models/, featurizer/, streams/, schemas/ and common/ serve the runtimes and the wiring; they never import them.',
      severity: 'error',
      from: { path: SHARED },
      to: { path: '^(processors|trainer|server|cli|simulator|bin)/' },
    },
    {
      name: 'common-is-the-floor',
      comment: 'common/ is infrastructure every other folder builds on: it imports no other folder of Eddy.',
      severity: 'error',
      from: { path: '^common/' },
      to: { path: '^(models|featurizer|streams|schemas)/' },
    },
    {
      name: 'featurizer-and-streams-are-independent',
      comment: 'featurizer/ (pure feature extraction) and streams/ (Kafka) do not know about models/ or each other.',
      severity: 'error',
      from: { path: '^(featurizer|streams)/' },
      to: { path: '^(models|featurizer|streams)/', pathNot: '^$1/' },
    },
    {
      name: 'schemas-are-contracts',
      comment: 'schemas/ holds the Avro contracts and their generated types; it imports no other folder of Eddy.',
      severity: 'error',
      from: { path: '^schemas/' },
      to: { path: '^(models|featurizer|streams|common|processors|trainer|server|cli|simulator)/' },
    },
    {
      name: 'simulator-is-an-upstream-service',
      comment: 'The simulator talks to Eddy the way upstream services do (events on Kafka, HTTP): it imports no runtime.',
      severity: 'error',
      from: { path: '^simulator/' },
      to: { path: RUNTIMES },
    },
    {
      name: 'cli-uses-public-entry-points',
      comment: 'cli/ wires the runtimes through their index.ts (their public surface), never their internals.',
      severity: 'error',
      from: { path: '^cli/' },
      to: { path: RUNTIMES, pathNot: '^(processors|trainer|server)/index[.]ts$' },
    },
    {
      name: 'no-dev-dependency-at-run-time',
      comment: 'Production installs omit devDependencies (npm ci --omit=dev): code that runs in production may not import one.',
      severity: 'error',
      from: { pathNot: `${NOT_PRODUCTION}|^schemas/generate[.]ts$` },
      to: { dependencyTypes: ['npm-dev'] },
    },
    {
      name: 'no-dev-tool-at-run-time',
      comment: 'schemas/generate.ts is a development tool (it needs @ovotech/avro-ts, a devDependency): production code may not import it.',
      severity: 'error',
      from: { pathNot: NOT_PRODUCTION },
      to: { path: '^schemas/generate[.]ts$' },
    },
    {
      name: 'client-uses-contracts-only',
      comment: 'client/ is what upstream services embed: it speaks the contracts (schemas/), Kafka (streams/) and common/, never a runtime or models/.',
      severity: 'error',
      from: { path: '^client/' },
      to: { path: '^(bin|cli|simulator|processors|trainer|server|models|featurizer|test|scratch)/' },
    },
    {
      name: 'nothing-imports-the-client',
      comment: 'client/ is for upstream services; Eddy itself never calls itself through it (tests may).',
      severity: 'error',
      from: { pathNot: '^(test|client)/' },
      to: { path: '^client/' },
    },
    {
      name: 'nothing-imports-tests',
      severity: 'error',
      from: { pathNot: '^test/' },
      to: { path: '^test/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'no-unresolvable-import',
      comment: 'An import that resolves to nothing fails at run time.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^(node_modules|scratch|dist|coverage)/' },
    tsConfig: { fileName: 'tsconfig.json' },
    tsPreCompilationDeps: true,
    enhancedResolveOptions: { exportsFields: ['exports'], conditionNames: ['import', 'require', 'node', 'default', 'types'], extensions: ['.ts', '.mjs', '.js', '.json'] },
  },
};
