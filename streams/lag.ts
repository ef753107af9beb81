import type { Admin } from './client.ts';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { counter, gauge } from '../common/metrics.ts';
import type { Streams } from './connect.ts';
import { TOPIC_NAMES, type TopicName } from './topics.ts';

const gauges = {
  lag: () => gauge({
    name: 'eddy_consumer_lag', help: 'Messages not yet committed by a consumer group, per topic (end offset - committed offset, summed over partitions)', labelNames: ['group', 'topic'],
  }),
  endOffset: () => gauge({
    name: 'eddy_topic_end_offset', help: 'Sum of the end offsets of a topic\'s partitions: rate() of it is events/s', labelNames: ['topic'],
  }),
  rate: () => gauge({
    name: 'eddy_topic_events_per_second', help: 'Events/s written to a topic between the last two samples of the lag collector', labelNames: ['topic'],
  }),
  scrapeErrors: () => counter({
    name: 'eddy_lag_collector_errors_total', help: 'Lag samples that failed (Kafka unreachable)',
  }),
};

export interface LagSample {
  at: number;
  /** logical topic -> sum of end offsets */
  ends: Partial<Record<TopicName, number>>;
  /** logical topic -> events/s since the previous sample (absent on the first) */
  rates: Partial<Record<TopicName, number>>;
  /** physical group id -> logical topic -> lag */
  lag: Record<string, Partial<Record<TopicName, number>>>;
}

/**
 * Samples Kafka through the admin API every `intervalMs`: end offsets per topic (events/s from
 * two samples) and, for every consumer group of this prefix, committed offsets -> lag per topic.
 * Consumer lag is measured from the broker's view, so it covers groups running in any process
 * (trainers, servers, processors), not only the ones in this one.
 */
export class LagCollector {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private previous: LagSample | undefined;
  latest: LagSample | undefined;

  constructor(private readonly streams: Pick<Streams, 'withAdmin' | 'topics'>, private readonly intervalMs: number, private readonly logger: Logger) {}

  start(): void {
    if (this.timer) return;
    const tick = () => {
      this.running = this.sample().then(() => undefined, (err: unknown) => {
        gauges.scrapeErrors().inc();
        this.logger.warn({ err: errorMessage(err) }, 'lag sample failed; retrying at the next interval');
      });
    };
    tick();
    this.timer = setInterval(tick, this.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Takes one sample now (also used by tests and the dashboard's first paint). */
  async sample(): Promise<LagSample> {
    const names = this.streams.topics;
    const s = await this.streams.withAdmin(async (admin: Admin) => {
      const present = new Set(await admin.listTopics());
      const ends: LagSample['ends'] = {};
      const partitionEnds = new Map<string, Map<number, number>>();
      for (const t of TOPIC_NAMES) {
        const physical = names.physical(t);
        if (!present.has(physical)) continue;
        const offsets = await admin.fetchTopicOffsets(physical);
        const m = new Map<number, number>();
        let sum = 0;
        for (const o of offsets) {
          m.set(o.partition, Number(o.high));
          sum += Number(o.high);
        }
        partitionEnds.set(physical, m);
        ends[t] = sum;
      }
      const groups = await admin.listGroups();
      const lag: LagSample['lag'] = {};
      for (const g of groups.filter((id) => id.startsWith(names.prefix))) {
        const committed = await admin.fetchOffsets({ groupId: g, topics: [...partitionEnds.keys()] });
        for (const t of committed) {
          const logical = names.logical(t.topic);
          const endMap = partitionEnds.get(t.topic);
          if (!logical || !endMap) continue;
          // A group that never committed on a topic is not subscribed to it: no lag to report.
          if (t.partitions.every((p) => Number(p.offset) < 0)) continue;
          let total = 0;
          for (const p of t.partitions) {
            const end = endMap.get(p.partition) ?? 0;
            const at = Number(p.offset) < 0 ? 0 : Number(p.offset);
            total += Math.max(0, end - at);
          }
          (lag[g] ??= {})[logical] = total;
        }
      }
      const sample: LagSample = { at: Date.now(), ends, rates: {}, lag };
      return sample;
    });
    const prev = this.latest;
    if (prev) {
      const seconds = (s.at - prev.at) / 1000;
      for (const t of Object.keys(s.ends) as TopicName[]) {
        const before = prev.ends[t];
        if (before !== undefined && seconds > 0) s.rates[t] = Math.max(0, (s.ends[t]! - before) / seconds);
      }
    }
    this.previous = prev;
    this.latest = s;
    for (const [t, v] of Object.entries(s.ends)) gauges.endOffset().set({ topic: t }, v ?? 0);
    for (const [t, v] of Object.entries(s.rates)) gauges.rate().set({ topic: t }, v ?? 0);
    for (const [g, topics] of Object.entries(s.lag)) for (const [t, v] of Object.entries(topics)) gauges.lag().set({ group: g, topic: t }, v ?? 0);
    return s;
  }

  /** The sample before the latest (for tests that check rates). */
  get before(): LagSample | undefined {
    return this.previous;
  }
}
