import fs from 'node:fs';
import path from 'node:path';
import { seededRandom } from '../../common/random.ts';

/**
 * Real, public, human-written text that Debian ships, cut into benchmark clients with their own
 * label sets, sizes and imbalance. Texts stay exactly as written (no lowercasing or cleaning that
 * only one of the compared models would benefit from). Deterministic: the same files and seeds give
 * the same clients, examples and 80/20 split on every machine.
 *
 * - `fortunes` (Debian package fortunes): /usr/share/games/fortunes/<category>, entries separated
 *   by lines holding only '%'; the category file name is the label.
 * - `wordnet-base` (Debian package wordnet-base): /usr/share/wordnet/data.{noun,verb,adj,adv};
 *   a synset line's second field is its lexicographer file number and its gloss follows '| ';
 *   the lexicographer file (noun.animal, verb.motion, ...) is the label.
 */

export const FORTUNES_DIR = '/usr/share/games/fortunes';
export const WORDNET_DIR = '/usr/share/wordnet';
export type CorpusName = 'fortunes' | 'wordnet-base';
/** The Debian package that ships each corpus (the benchmark installs it when it is missing). */
export const CORPUS_PACKAGE: Record<CorpusName, { pkg: string; probe: string }> = {
  fortunes: { pkg: 'fortunes', probe: path.join(FORTUNES_DIR, 'computers') },
  'wordnet-base': { pkg: 'wordnet-base', probe: path.join(WORDNET_DIR, 'data.noun') },
};

/**
 * Lexicographer file names by number, as lexnames(5WN) lists them. Debian's wordnet-base ships
 * the man page but not the `lexnames` data file, so the table is written out here.
 */
export const LEXNAMES = [
  'adj.all', 'adj.pert', 'adv.all', 'noun.Tops', 'noun.act', 'noun.animal', 'noun.artifact', 'noun.attribute', 'noun.body',
  'noun.cognition', 'noun.communication', 'noun.event', 'noun.feeling', 'noun.food', 'noun.group', 'noun.location',
  'noun.motive', 'noun.object', 'noun.person', 'noun.phenomenon', 'noun.plant', 'noun.possession', 'noun.process',
  'noun.quantity', 'noun.relation', 'noun.shape', 'noun.state', 'noun.substance', 'noun.time', 'verb.body', 'verb.change',
  'verb.cognition', 'verb.communication', 'verb.competition', 'verb.consumption', 'verb.contact', 'verb.creation',
  'verb.emotion', 'verb.motion', 'verb.perception', 'verb.possession', 'verb.social', 'verb.stative', 'verb.weather', 'adj.ppl',
] as const;

export interface CorpusExample {
  exampleId: string;
  text: string;
  label: string;
}

export interface CorpusClient {
  clientId: string;
  corpus: CorpusName;
  /** Label names, in the order they are announced (LabelSetChanged ADDED). */
  labels: string[];
  /** 80%: imported into Eddy and given to the reference to fit. */
  train: CorpusExample[];
  /** 20%: held out, scored through the predict API and by the reference. */
  test: CorpusExample[];
}

export interface CorpusClientSpec {
  clientId: string;
  corpus: CorpusName;
  /** label -> most examples taken (a random sample when the source has more); sets size and imbalance. */
  take: Record<string, number>;
  seed: number;
}

/** The benchmark's clients: 5–10 labels each, a few hundred to ~15k examples, some imbalanced. */
export const REAL_CLIENTS: CorpusClientSpec[] = [
  { clientId: 'fortune-topics', corpus: 'fortunes', seed: 11, take: { computers: 1100, science: 700, politics: 700, people: 1300, work: 700, food: 200 } },
  { clientId: 'fortune-arts', corpus: 'fortunes', seed: 12, take: { art: 500, literature: 300, 'songs-poems': 800, law: 250, medicine: 80, education: 250, sports: 160, love: 160 } },
  { clientId: 'fortune-small', corpus: 'fortunes', seed: 13, take: { drugs: 90, pets: 52, kids: 80, startrek: 90, riddles: 60 } },
  { clientId: 'fortune-geek', corpus: 'fortunes', seed: 14, take: { linux: 340, perl: 280, debian: 85, zippy: 550, knghtbrd: 550, wisdom: 430, platitudes: 500 } },
  {
    clientId: 'wordnet-nouns', corpus: 'wordnet-base', seed: 21,
    take: {
      'noun.animal': 2500, 'noun.plant': 2500, 'noun.artifact': 2500, 'noun.person': 2500, 'noun.food': 1200,
      'noun.body': 900, 'noun.location': 1200, 'noun.substance': 1200, 'noun.feeling': 400, 'noun.time': 600,
    },
  },
  {
    clientId: 'wordnet-verbs', corpus: 'wordnet-base', seed: 22,
    take: {
      'verb.motion': 1000, 'verb.communication': 1000, 'verb.change': 1000, 'verb.contact': 1000, 'verb.creation': 500,
      'verb.consumption': 250, 'verb.emotion': 300, 'verb.perception': 450,
    },
  },
  { clientId: 'wordnet-mixed', corpus: 'wordnet-base', seed: 23, take: { 'adj.all': 900, 'adj.pert': 400, 'adv.all': 300, 'noun.act': 600, 'noun.state': 500, 'noun.cognition': 300 } },
];

/** Every entry of a fortune file, as written (surrounding blank lines trimmed). */
export function readFortunes(category: string, dir = FORTUNES_DIR): string[] {
  const raw = fs.readFileSync(path.join(dir, category), 'utf8');
  return raw.split(/^%$/m).map((e) => e.replace(/^\n+|\s+$/g, '')).filter((e) => e.trim().length > 0);
}

/** Glosses by lexicographer file name over the four WordNet data files. */
export function readWordnet(dir = WORDNET_DIR): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    for (const line of fs.readFileSync(path.join(dir, `data.${pos}`), 'utf8').split('\n')) {
      if (!/^\d{8} /.test(line)) continue; // the license header lines start with two spaces
      const bar = line.indexOf('| ');
      if (bar < 0) continue;
      const lexname = LEXNAMES[Number(line.split(' ')[1])];
      const gloss = line.slice(bar + 2).trimEnd();
      if (!lexname || !gloss) continue;
      let list = out.get(lexname);
      if (!list) out.set(lexname, (list = []));
      list.push(gloss);
    }
  }
  return out;
}

/** Fisher–Yates with the seeded generator (so every run samples and splits the same way). */
function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const a = [...items];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

/**
 * Builds a client: samples each label's examples, drops texts that occur twice in the client (the
 * same text in train and test would measure memory, not generalisation), and splits 80/20 per
 * label (stratified, so a small label has test examples).
 */
export function buildClient(spec: CorpusClientSpec, source: (label: string) => string[]): CorpusClient {
  const random = seededRandom(spec.seed);
  const seen = new Set<string>();
  const train: CorpusExample[] = [];
  const test: CorpusExample[] = [];
  for (const [label, most] of Object.entries(spec.take)) {
    const texts = source(label);
    if (texts.length === 0) throw new Error(`${spec.clientId}: no text for label ${label} in ${spec.corpus}`);
    const picked = shuffled(texts, random).filter((t) => !seen.has(t) && seen.add(t)).slice(0, most);
    const cut = Math.round(picked.length * 0.8);
    picked.forEach((text, i) => (i < cut ? train : test).push({ exampleId: `${spec.clientId}-${label}-${i}`, text, label }));
  }
  // Interleave labels in the import order, as a real history would be.
  return { clientId: spec.clientId, corpus: spec.corpus, labels: Object.keys(spec.take), train: shuffled(train, random), test };
}

/** Builds the given clients (reading each corpus once). */
export function loadClients(specs: readonly CorpusClientSpec[]): CorpusClient[] {
  let wordnet: Map<string, string[]> | undefined;
  const fortunes = new Map<string, string[]>();
  return specs.map((spec) => buildClient(spec, (label) => {
    if (spec.corpus === 'wordnet-base') return (wordnet ??= readWordnet()).get(label) ?? [];
    if (!fortunes.has(label)) fortunes.set(label, readFortunes(label));
    return fortunes.get(label)!;
  }));
}
