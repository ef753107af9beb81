/**
 * Summarises a `--cpu-prof` profile of the prediction server (bench:server run under
 * `node --cpu-prof --import tsx test/bench/server.bench.ts`) per stage of a prediction, and a
 * `--heap-prof` allocation-sampling profile the same way:
 *
 *   tsx test/bench/profile-stages.ts <file.cpuprofile | -> [<file.heapprofile | ->] [requests]
 *
 * Each sample (CPU: a tick; heap: sampled bytes) goes to the stage of the nearest frame on its
 * stack that belongs to one (a socket write under ioredis is Redis, under Fastify's reply it is
 * the HTTP response). With `requests` (predictions served while profiling) it also prints µs and
 * bytes per request. Stage rules are URL/function patterns: a heuristic, good for ranking.
 */
import fs from 'node:fs';

interface Frame { functionName: string; url: string }
interface CpuNode { id: number; callFrame: Frame; children?: number[] }
interface HeapNode { callFrame: Frame; selfSize: number; children: HeapNode[] }

const STAGES: Array<[string, (f: Frame) => boolean]> = [
  ['Redis features (ioredis, decay maths)', (f) => /ioredis|redis-parser|featurizer\/realtime|standard-as-callback|cluster-key-slot|denque/.test(f.url)],
  ['featurize', (f) => /featurizer\/text/.test(f.url)],
  ['scoring (model)', (f) => /models\/(kinds|predictor)/.test(f.url)],
  ['model lookup (manager, registry)', (f) => /model-manager|models\/lifecycle/.test(f.url)],
  ['PredictionMade encode + hand-off', (f) => /avsc|streams\/codec|server\/publisher|node:internal\/worker/.test(f.url)],
  ['metrics', (f) => /prom-client|common\/metrics|server\/metrics/.test(f.url)],
  ['logging', (f) => /pino|sonic-boom/.test(f.url)],
  ['response serialisation', (f) => /fast-json-stringify/.test(f.url) || (/fastify\/lib\/reply/.test(f.url) && /serialize/i.test(f.functionName))],
  ['HTTP parse + validation (JSON, Ajv)', (f) => /secure-json-parse|contentTypeParser|fastify\/lib\/validation|ajv/.test(f.url) || f.functionName === 'parse' && f.url === ''],
  ['prediction service (rest)', (f) => /server\/prediction-service|server\/http/.test(f.url)],
  ['Fastify routing, hooks, reply', (f) => /fastify|find-my-way|avvio|light-my-request/.test(f.url)],
  ['Node HTTP + sockets', (f) => /node:_http|node:net|node:stream|node:internal\/streams|node:internal\/stream_base/.test(f.url) || /^(writev|writeUtf8String|writeBuffer|writeLatin1String|shutdown)$/.test(f.functionName)],
];

function stageOf(stack: Frame[]): string {
  // Deepest frame first: the most specific stage wins, but a socket write belongs to who wrote.
  for (let i = stack.length - 1; i >= 0; i--) {
    const f = stack[i]!;
    if (f.functionName === '(garbage collector)') return 'GC';
    if (f.functionName === '(idle)') return '(idle)';
    if (f.functionName === '(program)') return '(program: native, not attributed)';
  }
  const sockets = STAGES.find(([n]) => n === 'Node HTTP + sockets')!;
  let fallback: string | undefined;
  for (let i = stack.length - 1; i >= 0; i--) {
    const f = stack[i]!;
    // The API's hooks (authentication) call on into Fastify's pipeline (body parsing, the next
    // hooks, the handler): what runs beneath them is Fastify's or its own stage's, not the hook's.
    if (fallback && /server\/http\/plumbing/.test(f.url)) return fallback;
    for (const [name, test] of STAGES) {
      if (!test(f)) continue;
      if (name === sockets[0] || name === 'Fastify routing, hooks, reply') {
        fallback ??= name; // keep looking: an ancestor (ioredis, the reply's serializer) may own it
        break;
      }
      return name;
    }
  }
  return fallback ?? 'other (timers, promises, bench harness)';
}

function cpu(file: string): Map<string, number> {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: CpuNode[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const stageById = new Map<number, string>();
  const out = new Map<string, number>();
  p.samples.forEach((id, i) => {
    let stage = stageById.get(id);
    if (!stage) {
      const stack: Frame[] = [];
      for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) stack.unshift(byId.get(x)!.callFrame);
      stageById.set(id, (stage = stageOf(stack)));
    }
    out.set(stage, (out.get(stage) ?? 0) + (p.timeDeltas[i] ?? 0));
  });
  return out;
}

function heap(file: string): Map<string, number> {
  const p = JSON.parse(fs.readFileSync(file, 'utf8')) as { head: HeapNode };
  const out = new Map<string, number>();
  const walk = (n: HeapNode, stack: Frame[]) => {
    const s = [...stack, n.callFrame];
    if (n.selfSize > 0) {
      const stage = stageOf(s);
      out.set(stage, (out.get(stage) ?? 0) + n.selfSize);
    }
    for (const c of n.children) walk(c, s);
  };
  walk(p.head, []);
  return out;
}

const [cpuFile, heapFile, requestsArg] = process.argv.slice(2).map((a) => (a === "-" ? undefined : a));
const requests = Number(requestsArg);
const table = (title: string, m: Map<string, number>, unit: (x: number) => string) => {
  const busy = [...m].filter(([k]) => k !== '(idle)').reduce((a, [, v]) => a + v, 0);
  process.stdout.write(`\n| ${title} | share of busy | ${Number.isFinite(requests) ? 'per request' : ''} |\n|---|---:|---:|\n`);
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1])) {
    if (k === '(idle)') continue;
    process.stdout.write(`| ${k} | ${((v / busy) * 100).toFixed(1)} % | ${Number.isFinite(requests) ? unit(v / requests) : ''} |\n`);
  }
};
if (cpuFile) table('stage (CPU, request thread)', cpu(cpuFile), (us) => `${us.toFixed(1)} µs`);
if (heapFile) table('stage (allocation, sampled)', heap(heapFile), (b) => `${(b / 1024).toFixed(2)} KB`);
