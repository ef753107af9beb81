import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import type { EddyConfig } from '../common/config.ts';
import { EddyError } from '../common/errors.ts';
import { EVENT_NAMES, type EventName } from '../schemas/events.ts';
import type { AnyEvent } from '../streams/index.ts';
// The catalogue alone (no Kafka client): the client is loaded by the commands that talk to Kafka.
import { TOPICS, TOPIC_NAMES, type TopicName } from '../streams/topics.ts';

const kafka = () => import('../streams/index.ts');

const out = (line: string) => process.stdout.write(line + '\n');

/** JSON with Buffers shown as base64 (dead letters carry the original bytes). */
export function eventJson(value: unknown): string {
  return JSON.stringify(value, (_k, v: unknown) => {
    if (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' && Array.isArray((v as { data?: unknown }).data)) {
      return Buffer.from((v as { data: number[] }).data).toString('base64');
    }
    return v;
  });
}

export function registerStreamsCommands(program: Command, config: () => EddyConfig): void {
  const topics = program.command('topics').description('the Kafka topic catalogue');
  topics
    .command('list')
    .description('list the catalogue with event types and retention')
    .action(() => {
      const prefix = config().topicPrefix;
      for (const name of TOPIC_NAMES) {
        const t = TOPICS[name];
        const retention = t.retentionMs < 0 ? 'forever' : `${Math.round(t.retentionMs / 86_400_000)}d`;
        out(`${(prefix + name).padEnd(32)}${retention.padEnd(9)}${t.events.join(', ').padEnd(64)}${t.description}`);
      }
    });
  topics
    .command('ensure')
    .description('create missing topics and register every schema (idempotent)')
    .action(async () => {
      const { connectStreams } = await kafka();
      const streams = await connectStreams(config(), 'eddy-cli', { ensureTopics: false });
      try {
        const { ensureTopics } = await import('../streams/topics.ts');
        const c = config();
        const r = await streams.withAdmin((admin) => ensureTopics(admin, streams.topics, { partitions: c.partitions, replicationFactor: c.replicationFactor }));
        out(`created: ${r.created.join(', ') || 'none'}; already present: ${r.existing.length}`);
      } finally {
        await streams.close();
      }
    });
  topics
    .command('delete')
    .description(`delete every topic under the current EDDY_TOPIC_PREFIX (destroys the log!)`)
    .requiredOption('--yes', 'confirm')
    .action(async () => {
      const { connectStreams, deleteTopics } = await kafka();
      const streams = await connectStreams(config(), 'eddy-cli', { ensureTopics: false });
      try {
        const deleted = await streams.withAdmin((admin) => deleteTopics(admin, streams.topics));
        out(`deleted: ${deleted.join(', ') || 'none'}`);
      } finally {
        await streams.close();
      }
    });

  const events = program.command('events').description('produce and inspect events');
  events
    .command('send')
    .description('validate and produce one event given as JSON (eventId and occurredAt are filled in when missing)')
    .argument('<type>', `event type: ${EVENT_NAMES.join(', ')}`)
    .argument('<json>', "the event as JSON, or '-' to read it from stdin")
    .action(async (type: string, json: string) => {
      if (!(EVENT_NAMES as readonly string[]).includes(type)) throw new EddyError('UNKNOWN_EVENT', `unknown event type '${type}'; one of: ${EVENT_NAMES.join(', ')}`);
      const text = json === '-' ? await readStdin() : json;
      let value: Record<string, unknown>;
      try {
        value = JSON.parse(text) as Record<string, unknown>;
      } catch (e) {
        throw new EddyError('BAD_JSON', `the event is not valid JSON: ${(e as Error).message}`);
      }
      value.eventId ??= randomUUID();
      value.occurredAt ??= Date.now();
      const { connectStreams } = await kafka();
      const streams = await connectStreams(config(), 'eddy-cli');
      try {
        await streams.producer.sendAll([{ name: type as EventName, value } as unknown as AnyEvent]);
        out(`sent ${type} ${String(value.eventId)} for client ${String(value.clientId)}`);
      } finally {
        await streams.close();
      }
    });
  events
    .command('tail')
    .description('print the events of a topic as JSON lines (from the beginning with --from-beginning)')
    .argument('<topic>', `one of: ${TOPIC_NAMES.join(', ')}`)
    .option('--from-beginning', 'start at the oldest retained event')
    .option('-n, --max <n>', 'stop after n events')
    .action(async (topic: string, opts: { fromBeginning?: boolean; max?: string }) => {
      if (!(TOPIC_NAMES as string[]).includes(topic)) throw new EddyError('UNKNOWN_TOPIC', `unknown topic '${topic}'; one of: ${TOPIC_NAMES.join(', ')}`);
      const { connectStreams, FETCH_EACH_EVENT } = await kafka();
      const streams = await connectStreams(config(), 'eddy-cli');
      const max = opts.max ? Number(opts.max) : Infinity;
      let seen = 0;
      let finish: () => void = () => undefined;
      const done = new Promise<void>((r) => (finish = r));
      const runner = streams.consumer({
        group: `cli-tail-${randomUUID()}`,
        topics: [topic as TopicName],
        fromBeginning: opts.fromBeginning ?? false,
        // Someone is watching: each event as soon as it is there.
        fetch: FETCH_EACH_EVENT,
        handler: {
          async handle(records) {
            for (const r of records) {
              if (seen >= max) break;
              out(eventJson({ type: r.event.name, partition: r.partition, offset: r.offset, ...r.event.value }));
              if (++seen >= max) finish();
            }
          },
        },
      });
      process.once('SIGINT', finish);
      process.once('SIGTERM', finish);
      await runner.start();
      await done;
      await streams.close();
      await streams.withAdmin((admin) => admin.deleteGroups([runner.groupId]).catch(() => undefined));
    });
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}
