import { seededRandom } from '../../common/random.ts';

/**
 * A synthetic multi-client routing workload: each client has its own teams (labels) built from a
 * shared pool of topics, so vocabularies overlap across labels and clients; label frequencies
 * are Zipf-like (imbalanced); a share of examples carry a wrong label (noise); texts mix topic
 * words, words of neighbouring topics, generic filler and the odd typo. Deterministic per seed.
 */
export interface WorkloadExample {
  exampleId: string;
  text: string;
  label: string;
  metadata: Record<string, string>;
}

export interface WorkloadClient {
  clientId: string;
  labels: Array<{ name: string; description: string; keywords: string[] }>;
  examples: WorkloadExample[];
}

const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'vo', 'shi', 'pe', 'gra', 'dun', 'sel', 'bri', 'tor', 'wen', 'qui', 'za', 'fo', 'hal', 'mes', 'pri', 'cor', 'lin', 'dex'];
const REAL_TOPICS = [
  'network wifi router switch cable outage latency vpn firewall dns',
  'laptop boot screen keyboard battery charger docking monitor freeze',
  'password login account locked reset mfa token sso access',
  'printer paper toner scan jam print queue',
  'email outlook mailbox calendar invite spam attachment',
  'payroll salary payslip bonus tax deduction overtime',
  'benefits insurance pension dental leave vacation',
  'office desk chair heating cleaning parking badge',
  'security phishing malware virus breach suspicious incident',
  'software install license upgrade update crash error',
  'database query backup replication slow index',
  'phone mobile sim voicemail headset call',
];
const GENERIC = 'please help my the is not working since yesterday urgent hi hello thanks can you we have an issue problem again today team need still with for on at this that it'.split(' ');

function pseudoWord(random: () => number): string {
  const n = 2 + Math.floor(random() * 2);
  let w = '';
  for (let i = 0; i < n; i++) w += SYLLABLES[Math.floor(random() * SYLLABLES.length)];
  return w;
}

/** Topic word pools: a dozen real ones plus generated ones, so there are enough topics for large label sets. */
function topicPools(random: () => number, count: number): string[][] {
  const pools = REAL_TOPICS.map((t) => t.split(' '));
  while (pools.length < count) pools.push(Array.from({ length: 12 }, () => pseudoWord(random)));
  return pools;
}

export interface ClientSpec {
  clientId: string;
  examples: number;
  labels: number;
  /** Share of examples whose label is replaced by a random one. */
  noise: number;
  seed: number;
}

export function generateClient(spec: ClientSpec): WorkloadClient {
  const random = seededRandom(spec.seed);
  const pools = topicPools(seededRandom(7), 80);
  const pick = <T>(arr: readonly T[]): T => arr[Math.floor(random() * arr.length)]!;
  // Each label is one topic, with a neighbouring topic it shares words with (overlap).
  const topics = Array.from({ length: pools.length }, (_, i) => i).sort(() => random() - 0.5).slice(0, spec.labels);
  const labels = topics.map((t, i) => {
    const words = pools[t]!;
    return {
      name: `team-${i}-${words[0]}`,
      description: `handles ${words.slice(0, 4).join(', ')} requests`,
      keywords: words.slice(0, 3),
      topic: t,
      neighbour: topics[(i + 1) % topics.length]!,
    };
  });
  // Zipf-like priors: the first label is ~labels times more frequent than the last.
  const weights = labels.map((_, i) => 1 / (i + 1));
  const total = weights.reduce((a, b) => a + b, 0);
  const sample = (): number => {
    let r = random() * total;
    for (let i = 0; i < weights.length; i++) {
      r -= weights[i]!;
      if (r <= 0) return i;
    }
    return weights.length - 1;
  };
  const channels = ['email', 'chat', 'portal'];
  const examples: WorkloadExample[] = [];
  for (let e = 0; e < spec.examples; e++) {
    const li = sample();
    const label = labels[li]!;
    const length = 4 + Math.floor(random() * 14);
    const words: string[] = [];
    for (let k = 0; k < length; k++) {
      const r = random();
      let w: string;
      if (r < 0.3) w = pick(pools[label.topic]!);
      else if (r < 0.45) w = pick(pools[label.neighbour]!);
      else if (r < 0.52) w = pick(pools[Math.floor(random() * pools.length)]!);
      else w = pick(GENERIC);
      if (random() < 0.03 && w.length > 3) {
        const i = 1 + Math.floor(random() * (w.length - 2));
        w = w.slice(0, i) + w.slice(i + 1);
      }
      words.push(w);
    }
    const noisy = random() < spec.noise;
    const finalLabel = noisy ? labels[Math.floor(random() * labels.length)]!.name : label.name;
    const channel = random() < 0.6 ? channels[li % channels.length]! : pick(channels);
    examples.push({ exampleId: `${spec.clientId}-ex-${e}`, text: words.join(' '), label: finalLabel, metadata: { channel } });
  }
  return { clientId: spec.clientId, labels: labels.map(({ name, description, keywords }) => ({ name, description, keywords })), examples };
}

/** The default multi-client workload: 100 to 50,000 examples, 3 to 30 labels, 2-10% noise. */
export const WORKLOAD: ClientSpec[] = [
  { clientId: 'acme-100', examples: 100, labels: 3, noise: 0.02, seed: 1 },
  { clientId: 'beta-300', examples: 300, labels: 5, noise: 0.05, seed: 2 },
  { clientId: 'gamma-1k', examples: 1_000, labels: 8, noise: 0.05, seed: 3 },
  { clientId: 'delta-3k', examples: 3_000, labels: 12, noise: 0.08, seed: 4 },
  { clientId: 'eps-10k', examples: 10_000, labels: 20, noise: 0.05, seed: 5 },
  { clientId: 'zeta-20k', examples: 20_000, labels: 25, noise: 0.1, seed: 6 },
  { clientId: 'eta-50k', examples: 50_000, labels: 30, noise: 0.08, seed: 7 },
];
