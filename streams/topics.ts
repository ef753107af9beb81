import type { Admin, NewTopic } from './client.ts';
import type { EventName } from '../schemas/events.ts';

/**
 * The topic catalogue: every topic Eddy reads or writes, the event types it carries, and how long
 * Kafka keeps it. Topics are keyed by clientId so a client's events stay ordered on one partition.
 * Names are logical; the physical name is `${EDDY_TOPIC_PREFIX}${name}`.
 */
export interface TopicSpec {
  name: TopicName;
  events: readonly EventName[];
  /** Retention in ms; -1 keeps the log forever (it is the source of truth and replay input). */
  retentionMs: number;
  description: string;
}

const DAY = 24 * 60 * 60 * 1000;
const FOREVER = -1;

export const TOPICS = {
  examples: { events: ['LabeledExample'], retentionMs: FOREVER, description: 'labelled texts (definitions, assignments, corrections, imports)' },
  labels: { events: ['LabelSetChanged'], retentionMs: FOREVER, description: 'label (team) set changes per client' },
  'prediction-requests': { events: ['PredictionRequested'], retentionMs: 7 * DAY, description: 'asynchronous predict requests' },
  predictions: { events: ['PredictionMade'], retentionMs: 90 * DAY, description: 'every prediction served, any channel, any variant' },
  feedback: { events: ['PredictionFeedback'], retentionMs: FOREVER, description: 'accepted / reassigned / rejected predictions' },
  'retrain-requests': { events: ['RetrainRequested'], retentionMs: 30 * DAY, description: 'requests to train a new model version' },
  models: {
    events: ['ModelPublished', 'ModelRejected', 'ModelPromoted', 'ModelRolledBack'],
    retentionMs: FOREVER,
    description: 'the model lifecycle; servers rebuild their registry from it',
  },
  alerts: { events: ['QualityAlert'], retentionMs: 90 * DAY, description: 'quality drops and prediction bias' },
  'dead-letters': { events: ['DeadLetter'], retentionMs: 30 * DAY, description: 'what a consumer could not decode or process, with the reason' },
} as const satisfies Record<string, Omit<TopicSpec, 'name'>>;

export type TopicName = keyof typeof TOPICS;
export const TOPIC_NAMES = Object.keys(TOPICS) as TopicName[];

/** The logical topic an event type is published to. */
export const TOPIC_OF_EVENT: Readonly<Record<EventName, TopicName>> = Object.fromEntries(
  TOPIC_NAMES.flatMap((topic) => TOPICS[topic].events.map((event) => [event, topic])),
) as Record<EventName, TopicName>;

export function topicSpec(name: TopicName): TopicSpec {
  return { name, ...TOPICS[name] };
}

export class TopicNames {
  constructor(readonly prefix: string) {}
  physical(name: TopicName): string {
    return `${this.prefix}${name}`;
  }
  /** The logical name of a physical topic, or undefined when it is not one of ours. */
  logical(physical: string): TopicName | undefined {
    if (!physical.startsWith(this.prefix)) return undefined;
    const name = physical.slice(this.prefix.length);
    return name in TOPICS ? (name as TopicName) : undefined;
  }
  /** Consumer groups share the prefix so environments (and tests) never see each other's offsets. */
  group(name: string): string {
    return `${this.prefix}${name}`;
  }
}

/**
 * Creates missing topics (idempotent: existing topics are left as they are, including their
 * partition count, which only grows by an explicit operator decision).
 */
export async function ensureTopics(
  admin: Admin,
  names: TopicNames,
  opts: { partitions: number; replicationFactor: number; only?: readonly TopicName[] },
): Promise<{ created: string[]; existing: string[] }> {
  const wanted = (opts.only ?? TOPIC_NAMES).map((n) => ({ logical: n, physical: names.physical(n) }));
  const present = new Set(await admin.listTopics());
  const missing = wanted.filter((t) => !present.has(t.physical));
  if (missing.length > 0) {
    const topics: NewTopic[] = missing.map((t) => ({
      topic: t.physical,
      numPartitions: opts.partitions,
      replicationFactor: opts.replicationFactor,
      configs: { 'retention.ms': String(TOPICS[t.logical].retentionMs), 'cleanup.policy': 'delete' },
    }));
    // A topic a concurrent creator made first is not an error (Admin.createTopics).
    await admin.createTopics(topics);
    await waitForLeaders(admin, missing.map((t) => t.physical));
  }
  return {
    created: missing.map((t) => t.physical),
    existing: wanted.filter((t) => present.has(t.physical)).map((t) => t.physical),
  };
}

/**
 * A freshly created topic can answer NOT_LEADER for a moment after createTopics returned, even once
 * metadata names a leader (KRaft: the broker has not created the partition's log yet). A producer
 * that hits it retries the whole batch; admin calls fail outright. Waiting until every partition
 * answers a ListOffsets request (served by the leader) means the topic is really ready.
 */
async function waitForLeaders(admin: Admin, topics: string[], timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const topic of topics) {
    for (;;) {
      try {
        const partitions = await admin.partitionLeaders(topic);
        if (partitions.length > 0 && partitions.every((p) => p.leader >= 0)) {
          await admin.fetchTopicOffsets(topic);
          break;
        }
      } catch (err) {
        if (Date.now() > deadline) throw err;
      }
      if (Date.now() > deadline) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Deletes every topic of a prefix (tests and `eddy topics delete`); never touches other prefixes. */
export async function deleteTopics(admin: Admin, names: TopicNames): Promise<string[]> {
  const present = await admin.listTopics();
  const ours = present.filter((t) => names.logical(t) !== undefined);
  if (ours.length > 0) await admin.deleteTopics(ours);
  return ours;
}

/** The end of each partition of a topic (the offset the next record will get), by partition. */
export async function logEnd(admin: Admin, physicalTopic: string): Promise<Map<number, bigint>> {
  const offsets = await admin.fetchTopicOffsets(physicalTopic);
  return new Map(offsets.map((o) => [o.partition, BigInt(o.high)]));
}
