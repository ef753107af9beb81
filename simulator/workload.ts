import { seededRandom } from '../common/random.ts';

/**
 * The upstream world the simulator plays: client companies, their teams (labels), the words their
 * users write, who writes, and the ground truth of which team a request really belongs to (the
 * "oracle" that reassigns wrong predictions).
 *
 * Why not test/quality/workload.ts (the trainer's quality corpus): that one generates a fixed,
 * noisy corpus for offline accuracy measurements; the simulator needs a *stream* whose truth
 * changes while it runs (a team is added or removed, a drift moves vocabulary). Both share the
 * generation idea (a team = a topic word pool + neighbouring-topic words + filler, Zipf team
 * sizes) and the seeded PRNG, so numbers from both are comparable. Deterministic per seed.
 */

/** Word pools of the request topics a workplace sees; each team of a client owns one or more. */
export const TOPIC_WORDS: Readonly<Record<string, readonly string[]>> = {
  network: 'network wifi router switch cable outage latency vpn firewall dns'.split(' '),
  laptop: 'laptop boot screen keyboard battery charger docking monitor freeze'.split(' '),
  access: 'password login account locked reset mfa token sso access'.split(' '),
  printer: 'printer paper toner scan jam print queue tray'.split(' '),
  email: 'email outlook mailbox calendar invite spam attachment'.split(' '),
  payroll: 'payroll salary payslip bonus tax deduction overtime'.split(' '),
  benefits: 'benefits insurance pension dental leave vacation parental'.split(' '),
  facilities: 'office desk chair heating cleaning parking badge'.split(' '),
  security: 'security phishing malware virus breach suspicious incident'.split(' '),
  software: 'software install license upgrade update crash error'.split(' '),
  database: 'database query backup replication slow index schema'.split(' '),
  phone: 'phone mobile sim voicemail headset call roaming'.split(' '),
  travel: 'travel flight hotel booking visa expense reimbursement'.split(' '),
  legal: 'contract nda gdpr compliance lawyer clause signature'.split(' '),
  sales: 'customer quote crm pipeline discount renewal lead'.split(' '),
  cloud: 'cloud kubernetes cluster deploy container bucket quota'.split(' '),
};
export type TopicName = keyof typeof TOPIC_WORDS & string;

const FILLER = 'please help my the is not working since yesterday urgent hi hello thanks can you we have an issue problem again today team need still with for on at this that it'.split(' ');
const SYLLABLES = ['ka', 'lo', 'mi', 'ne', 'ru', 'ta', 'vo', 'shi', 'pe', 'gra', 'dun', 'sel', 'bri', 'tor', 'wen', 'qui', 'za', 'fo'];
const CHANNELS = ['email', 'chat', 'portal'];

export interface TeamSpec {
  /** The label. */
  name: string;
  /** Topics whose requests this team handles. */
  topics: TopicName[];
}

export interface ClientSpec {
  clientId: string;
  teams: TeamSpec[];
  /** Labelled history sent at sign-up (assignments made before Eddy). */
  historyExamples: number;
  /** Relative share of live traffic. */
  trafficWeight: number;
  /** People who file requests; each leans to a few topics (what the real-time features pick up). */
  requesters: number;
  seed: number;
}

export interface Team {
  name: string;
  description: string;
  keywords: string[];
}

export interface Request {
  text: string;
  /** Ground truth: the team that really handles it. */
  label: string;
  metadata: Record<string, string>;
}

interface TopicState {
  words: string[];
  owner: string;
  /** Zipf-like frequency of requests about this topic. */
  weight: number;
}

/**
 * One client's world: its current teams and the truth about which team handles which topic.
 * `addTeam`, `removeTeam` and `drift` change the truth mid-run, as real clients do.
 */
export class ClientWorld {
  readonly clientId: string;
  readonly spec: ClientSpec;
  private readonly random: () => number;
  private readonly topics = new Map<string, TopicState>();
  private readonly teams = new Map<string, Team>();
  private readonly requesterTopics: string[][] = [];
  private exampleSeq = 0;

  constructor(spec: ClientSpec) {
    this.spec = spec;
    this.clientId = spec.clientId;
    this.random = seededRandom(spec.seed);
    spec.teams.forEach((t, i) => {
      t.topics.forEach((topic, j) => this.topics.set(topic, { words: [...TOPIC_WORDS[topic]!], owner: t.name, weight: 1 / (i + 1 + j) }));
      this.teams.set(t.name, describeTeam(t.name, t.topics.map((x) => TOPIC_WORDS[x]!)));
    });
    const names = [...this.topics.keys()];
    for (let r = 0; r < spec.requesters; r++) {
      this.requesterTopics.push([this.pick(names), this.pick(names)]);
    }
  }

  currentTeams(): Team[] {
    return [...this.teams.values()];
  }

  hasTeam(name: string): boolean {
    return this.teams.has(name);
  }

  /** A request as a user would write it, with its true team. */
  sample(): Request {
    const requester = Math.floor(this.random() * this.requesterTopics.length);
    // A requester files about their usual topics 40% of the time (what requester features learn).
    const topicName = this.random() < 0.4 ? this.pick(this.requesterTopics[requester]!) : this.sampleTopic();
    const topic = this.topics.get(topicName) ?? this.topics.get(this.sampleTopic())!;
    const names = [...this.topics.keys()];
    const neighbour = this.topics.get(names[(names.indexOf(topicName) + 1) % names.length]!)!;
    const length = 5 + Math.floor(this.random() * 10);
    const words: string[] = [];
    for (let k = 0; k < length; k++) {
      const r = this.random();
      let w = r < 0.4 ? this.pick(topic.words) : r < 0.5 ? this.pick(neighbour.words) : this.pick(FILLER);
      if (this.random() < 0.03 && w.length > 3) {
        const i = 1 + Math.floor(this.random() * (w.length - 2));
        w = w.slice(0, i) + w.slice(i + 1);
      }
      words.push(w);
    }
    const channel = this.random() < 0.6 ? CHANNELS[requester % CHANNELS.length]! : this.pick(CHANNELS);
    return { text: words.join(' '), label: topic.owner, metadata: { requester: `${this.clientId}-user-${requester}`, channel } };
  }

  /** A stable id for a new labelled thing (a ticket). */
  nextExampleId(): string {
    return `${this.clientId}-t${this.exampleSeq++}`;
  }

  /**
   * A new team takes over a topic (a new one if given, else a fresh invented one). Returns the
   * team. Its requests become frequent so that the model has to learn it quickly.
   */
  addTeam(name: string, topic?: TopicName): Team {
    const words = topic ? [...TOPIC_WORDS[topic]!] : Array.from({ length: 8 }, () => this.inventWord());
    const key = topic ?? `new:${name}`;
    this.topics.set(key, { words, owner: name, weight: 1 });
    const team = describeTeam(name, [words]);
    this.teams.set(name, team);
    return team;
  }

  /** A team is dissolved; its topics go to `heir` (the requests keep coming, routed elsewhere). */
  removeTeam(name: string, heir: string): void {
    if (!this.teams.has(heir)) throw new Error(`heir team ${heir} does not exist at ${this.clientId}`);
    for (const t of this.topics.values()) if (t.owner === name) t.owner = heir;
    this.teams.delete(name);
  }

  /**
   * Concept drift: users of `team` start describing their problems in the words of
   * `confusedWith`'s topics (a migration moved their systems under the other team's names), and
   * write more often. The live model routes them to the wrong team, and a retrain on the
   * reassignments cannot learn it from the text alone (only requester features tell the two
   * apart): the monitor sees a lasting over-prediction of `confusedWith`. The truth (the owner)
   * does not change. With a couple of new words as well, the demo's data-driven retrains learned
   * the drift within minutes and the bias levelled off at 0.08-0.09, just at the demo's alert
   * threshold (measured 27 Nov): a coin toss for the story.
   */
  drift(team: string, confusedWith: string): void {
    const borrowed = [...this.topics.values()].filter((t) => t.owner === confusedWith).flatMap((t) => t.words);
    for (const t of this.topics.values()) {
      if (t.owner !== team) continue;
      t.words = [...borrowed];
      t.weight *= 6;
    }
  }

  /** Topics owned by a team (for tests and the story). */
  topicsOf(team: string): string[] {
    return [...this.topics.entries()].filter(([, t]) => t.owner === team).map(([k]) => k);
  }

  private sampleTopic(): string {
    const entries = [...this.topics.entries()];
    const total = entries.reduce((a, [, t]) => a + t.weight, 0);
    let r = this.random() * total;
    for (const [name, t] of entries) {
      r -= t.weight;
      if (r <= 0) return name;
    }
    return entries[entries.length - 1]![0];
  }

  private pick<T>(arr: readonly T[]): T {
    return arr[Math.floor(this.random() * arr.length)]!;
  }

  private inventWord(): string {
    let w = '';
    const n = 2 + Math.floor(this.random() * 2);
    for (let i = 0; i < n; i++) w += this.pick(SYLLABLES);
    return w;
  }
}

function describeTeam(name: string, pools: Array<readonly string[]>): Team {
  const words = pools.flat();
  return { name, description: `${name} handles ${words.slice(0, 4).join(', ')} requests`, keywords: words.slice(0, 3) };
}

/**
 * The demo's clients: different team sets, vocabularies and sizes (a 2-team startup to a
 * 9-team enterprise, 120 to 1,500 historical tickets).
 */
export const DEMO_CLIENTS: ClientSpec[] = [
  {
    clientId: 'acme', historyExamples: 600, trafficWeight: 3, requesters: 40, seed: 11,
    teams: [
      { name: 'IT Support', topics: ['laptop', 'printer'] },
      { name: 'Network', topics: ['network'] },
      { name: 'Identity', topics: ['access'] },
      { name: 'Facilities', topics: ['facilities'] },
      { name: 'Payroll', topics: ['payroll', 'benefits'] },
    ],
  },
  {
    clientId: 'globex', historyExamples: 1500, trafficWeight: 4, requesters: 120, seed: 12,
    teams: [
      { name: 'Service Desk', topics: ['laptop'] },
      { name: 'NetOps', topics: ['network'] },
      { name: 'IAM', topics: ['access'] },
      { name: 'Messaging', topics: ['email'] },
      { name: 'SecOps', topics: ['security'] },
      { name: 'Apps', topics: ['software'] },
      { name: 'DBA', topics: ['database'] },
      { name: 'Telecom', topics: ['phone'] },
      { name: 'Platform', topics: ['cloud'] },
    ],
  },
  {
    clientId: 'initech', historyExamples: 300, trafficWeight: 2, requesters: 25, seed: 13,
    teams: [
      { name: 'Helpdesk', topics: ['laptop', 'printer', 'email'] },
      { name: 'HR', topics: ['payroll', 'benefits'] },
      { name: 'Legal', topics: ['legal'] },
      { name: 'Travel Desk', topics: ['travel'] },
    ],
  },
  {
    clientId: 'hooli', historyExamples: 120, trafficWeight: 1, requesters: 10, seed: 14,
    teams: [
      { name: 'Ops', topics: ['laptop', 'network', 'access', 'cloud'] },
      { name: 'Revenue', topics: ['sales', 'travel'] },
    ],
  },
];

/** The client that signs up mid-run. */
export const NEW_CLIENT: ClientSpec = {
  clientId: 'umbrella', historyExamples: 200, trafficWeight: 2, requesters: 20, seed: 15,
  teams: [
    { name: 'Workplace', topics: ['facilities', 'phone'] },
    { name: 'Compliance', topics: ['legal', 'security'] },
    { name: 'People', topics: ['payroll', 'benefits'] },
  ],
};

/**
 * `count` small generated clients (the benchmark's 100 active clients): 3 to 6 teams over
 * the shared topics, 150 to 400 historical tickets, deterministic per index.
 */
export function generatedClients(count: number, prefix = 'bench'): ClientSpec[] {
  const topicNames = Object.keys(TOPIC_WORDS) as TopicName[];
  return Array.from({ length: count }, (_, i) => {
    const random = seededRandom(1000 + i);
    const teamCount = 3 + Math.floor(random() * 4);
    const shuffled = [...topicNames].sort(() => random() - 0.5).slice(0, teamCount);
    return {
      clientId: `${prefix}-${String(i).padStart(3, '0')}`,
      historyExamples: 150 + Math.floor(random() * 250),
      trafficWeight: 1,
      requesters: 10,
      seed: 2000 + i,
      teams: shuffled.map((topic, t) => ({ name: `team-${t}-${topic}`, topics: [topic] })),
    };
  });
}
