import { randomUUID } from 'node:crypto';
import { loadConfig } from '../common/config.ts';
import { InvalidEventError } from '../common/errors.ts';
import { derivedId } from '../common/ids.ts';
import type { LabeledExample, LabelSetChanged, PredictionFeedback, PredictionRequested } from '../schemas/events.ts';
import { connectStreams, type Streams } from '../streams/index.ts';
import { EddyClientError, EddyInvalidEventError } from './errors.ts';

/** The events upstream services produce (ARCHITECTURE.md, "Events"). */
export interface UpstreamEvents {
  LabeledExample: LabeledExample;
  LabelSetChanged: LabelSetChanged;
  PredictionRequested: PredictionRequested;
  PredictionFeedback: PredictionFeedback;
}
export type UpstreamEventName = keyof UpstreamEvents;
export const UPSTREAM_EVENTS: readonly UpstreamEventName[] = ['LabeledExample', 'LabelSetChanged', 'PredictionRequested', 'PredictionFeedback'];

/**
 * What a caller gives for an event: its fields, with `eventId` and `occurredAt` optional (a new
 * id, now) and the fields the schema defaults optional too. `idempotencyKey` derives the event id
 * instead (the same key of the same client and event type gives the same id), so a caller that
 * retries after a crash sends the same event again, which every consumer deduplicates.
 */
type Input<E extends { eventId: string; occurredAt: number }, Optional extends keyof E> =
  Omit<E, Optional | 'eventId' | 'occurredAt'> & Partial<Pick<E, Optional | 'eventId' | 'occurredAt'>> & { idempotencyKey?: string };

export type LabeledExampleInput = Input<LabeledExample, 'metadata' | 'predictionId'>;
export type LabelSetChangedInput = Input<LabelSetChanged, 'previousLabel' | 'description' | 'keywords'>;
export type PredictionRequestedInput = Input<PredictionRequested, 'metadata' | 'requestId'>;
export type PredictionFeedbackInput = Input<PredictionFeedback, 'correctLabel' | 'actor'>;

export interface KafkaOptions {
  brokers: string[];
  /** The Confluent-compatible registry, e.g. http://registry:8080/apis/ccompat/v7. */
  schemaRegistryUrl: string;
  /** EDDY_TOPIC_PREFIX of the deployment (default none). */
  topicPrefix?: string;
  /** Names this producer in Kafka's logs (default eddy-client). */
  clientName?: string;
}

function eventIdOf(name: UpstreamEventName, clientId: string, input: { eventId?: string; idempotencyKey?: string }): string {
  if (input.eventId) return input.eventId;
  if (input.idempotencyKey !== undefined) return derivedId(`eddy:client:${name}:${clientId}:${input.idempotencyKey}`);
  return randomUUID();
}

/** The rules Avro cannot state (it checks types, not meaning); each problem names its field. */
function meaningProblems(name: UpstreamEventName, e: Record<string, unknown>): Array<[string, string]> {
  const problems: Array<[string, string]> = [];
  const nonEmpty = (field: string) => {
    if (typeof e[field] === 'string' && (e[field] as string).trim() === '') problems.push([field, 'must not be empty']);
  };
  nonEmpty('clientId');
  if (name === 'LabeledExample') ['exampleId', 'text', 'label'].forEach(nonEmpty);
  if (name === 'LabelSetChanged') {
    nonEmpty('label');
    if (e.change === 'RENAMED' && !e.previousLabel) problems.push(['previousLabel', 'is required for RENAMED']);
  }
  if (name === 'PredictionRequested') ['text', 'requestId'].forEach(nonEmpty);
  if (name === 'PredictionFeedback') {
    nonEmpty('requestId');
    if (e.outcome === 'REASSIGNED' && !e.correctLabel) problems.push(['correctLabel', 'is required for REASSIGNED']);
  }
  return problems;
}

/**
 * Typed producers for the upstream events: each event is completed (id, time, defaults),
 * validated (its Avro schema, and the rules above) and only then sent, keyed by client, to its
 * topic, through Eddy's own producer (idempotent, acks=all; streams/producer.ts).
 */
export class EventSender {
  private streams: Promise<Streams> | undefined;

  constructor(private readonly kafka: KafkaOptions | undefined) {}

  private connect(): Promise<Streams> {
    if (!this.kafka) throw new EddyClientError('KAFKA_NOT_CONFIGURED', 'this EddyClient was created without `kafka` options; events cannot be sent');
    const k = this.kafka;
    this.streams ??= connectStreams(loadConfig({
      EDDY_KAFKA_BROKERS: k.brokers.join(','), EDDY_SCHEMA_REGISTRY_URL: k.schemaRegistryUrl, EDDY_TOPIC_PREFIX: k.topicPrefix ?? '',
      EDDY_LOG_LEVEL: process.env.EDDY_LOG_LEVEL ?? 'warn',
      // An upstream service writes to the deployment's topics; it never creates them.
    }), k.clientName ?? 'eddy-client', { ensureTopics: false }).catch((err: unknown) => {
      this.streams = undefined;
      throw err;
    });
    return this.streams;
  }

  complete<N extends UpstreamEventName>(name: N, input: Record<string, unknown>): UpstreamEvents[N] {
    const { idempotencyKey: _key, ...fields } = input as Record<string, unknown> & { idempotencyKey?: string };
    const clientId = String(fields.clientId ?? '');
    const base = { ...fields, eventId: eventIdOf(name, clientId, input as { eventId?: string; idempotencyKey?: string }), occurredAt: (fields.occurredAt as number | undefined) ?? Date.now() };
    const defaults: Record<UpstreamEventName, Record<string, unknown>> = {
      LabeledExample: { metadata: {}, predictionId: null },
      LabelSetChanged: { previousLabel: null, description: null, keywords: [] },
      PredictionRequested: { metadata: {}, requestId: base.eventId },
      PredictionFeedback: { correctLabel: null, actor: null },
    };
    const out: Record<string, unknown> = { ...defaults[name], ...base };
    // A field given as undefined takes its default too.
    for (const [k, v] of Object.entries(defaults[name])) if (out[k] === undefined) out[k] = v;
    return out as unknown as UpstreamEvents[N];
  }

  /** Completes, validates and sends one event; answers the event as sent. */
  async send<N extends UpstreamEventName>(name: N, input: Record<string, unknown>): Promise<UpstreamEvents[N]> {
    const event = this.complete(name, input);
    const problems = meaningProblems(name, event as unknown as Record<string, unknown>);
    if (problems.length > 0) {
      throw new EddyInvalidEventError(name, problems.map(([p]) => p), `invalid ${name}: ${problems.map(([p, m]) => `${p}: ${m}`).join('; ')}`);
    }
    const streams = await this.connect();
    try {
      streams.codec.validate(name, event as never);
    } catch (err) {
      if (err instanceof InvalidEventError) throw new EddyInvalidEventError(name, err.paths, err.message);
      throw err;
    }
    await streams.producer.send(name, event as never);
    return event;
  }

  async close(): Promise<void> {
    const s = this.streams;
    this.streams = undefined;
    if (s) await (await s.catch(() => undefined))?.close();
  }
}
