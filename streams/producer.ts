import type { KafkaClient, OutgoingMessage, ProducerDriver, TopicMessages } from './client.ts';
import type { EventName, EventTypes } from '../schemas/events.ts';
import type { AnyEvent, EventCodec } from './codec.ts';
import { TOPIC_OF_EVENT, type TopicNames } from './topics.ts';
import { DependencyUnavailableError, errorMessage } from '../common/errors.ts';
import { counter } from '../common/metrics.ts';

/** Header naming the event type, for tools that look at raw messages (the value is authoritative). */
export const EVENT_HEADER = 'eddy-event';

const produced = () => counter({
  name: 'eddy_events_produced_total', help: 'Events produced, by event type', labelNames: ['event'],
});

/**
 * Counts events another thread produced (its metrics registry is not the one /metrics exports),
 * e.g. the prediction server's publisher thread.
 */
export function countProduced(name: EventName, n: number): void {
  produced().inc({ event: name }, n);
}

/**
 * One frozen headers object per event type, shared by all its messages: the patched Kafka client
 * serialises a headers object once per send when consecutive messages share it (docs/streams.md,
 * "The library patch"), instead of a Buffer per header per message.
 */
const HEADERS = new Map<EventName, Readonly<Record<string, string>>>();
function headersOf(name: EventName): Record<string, string> {
  let h = HEADERS.get(name);
  if (!h) HEADERS.set(name, (h = Object.freeze({ [EVENT_HEADER]: name })));
  return h as Record<string, string>;
}

/**
 * A typed producer: validates each event against its Avro schema before it leaves the process
 * (an invalid event is refused with the field named, never sent), encodes it through the registry,
 * keys it by clientId, and sends it to the topic the catalogue assigns to its type.
 * acks=all and idempotent, so retries do not duplicate; every consumer is still idempotent on
 * `eventId` because upstream producers and replays can repeat an event.
 */
export class EventProducer {
  private readonly producer: ProducerDriver;
  private connected = false;

  constructor(kafka: KafkaClient, private readonly codec: EventCodec, private readonly topics: TopicNames) {
    // Idempotent (broker-side sequence numbers: a retried request never writes twice) with bounded
    // retries, so a dead cluster surfaces as an error instead of a hang; after that, delivery is
    // at-least-once and consumers dedupe on eventId.
    this.producer = kafka.producer();
  }

  async connect(): Promise<void> {
    if (this.connected) return;
    try {
      await this.producer.connect();
    } catch (err) {
      throw new DependencyUnavailableError('kafka', `cannot connect a producer to Kafka: ${errorMessage(err)}`, err);
    }
    this.connected = true;
  }

  async disconnect(): Promise<void> {
    if (!this.connected) return;
    this.connected = false;
    await this.producer.disconnect();
  }

  /** Encodes one event into a Kafka message (validation errors are thrown here, synchronously). */
  message<N extends EventName>(name: N, event: EventTypes[N]): OutgoingMessage {
    return {
      key: (event as { clientId: string }).clientId,
      value: this.codec.encode(name, event),
      headers: headersOf(name),
    };
  }

  async send<N extends EventName>(name: N, event: EventTypes[N]): Promise<void> {
    await this.sendAll([{ name, value: event } as AnyEvent]);
  }

  /**
   * Sends many events in one request per broker. All are validated first: one invalid event
   * refuses the whole call and nothing is sent.
   */
  async sendAll(events: readonly AnyEvent[]): Promise<void> {
    if (events.length === 0) return;
    const byTopic = new Map<string, OutgoingMessage[]>();
    const counts = new Map<string, number>();
    for (const e of events) {
      const topic = this.topics.physical(TOPIC_OF_EVENT[e.name]);
      let list = byTopic.get(topic);
      if (!list) byTopic.set(topic, (list = []));
      list.push(this.message(e.name, e.value as never));
      counts.set(e.name, (counts.get(e.name) ?? 0) + 1);
    }
    await this.sendMessages([...byTopic].map(([topic, messages]) => ({ topic, messages })));
    const counter = produced();
    for (const [name, n] of counts) counter.inc({ event: name }, n);
  }

  /** Sends already-encoded messages (used for dead letters and benchmarks). */
  async sendMessages(topicMessages: TopicMessages[]): Promise<void> {
    await this.connect();
    try {
      await this.producer.send(topicMessages);
    } catch (err) {
      throw new DependencyUnavailableError('kafka', `cannot produce to Kafka: ${errorMessage(err)}`, err);
    }
  }
}
