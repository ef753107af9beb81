import { randomUUID } from 'node:crypto';
import type { Command } from 'commander';
import type { EddyConfig } from '../common/config.ts';
import type { AnyEvent } from '../streams/index.ts';
import { connectStreams, TOPIC_NAMES } from '../streams/index.ts';
import { stackUp } from './stack.ts';

const out = (line: string) => process.stdout.write(line + '\n');

/** Sample traffic of three clients with different teams: what upstream services send. */
export function sampleEvents(): AnyEvent[] {
  const now = Date.now();
  const ev = () => ({ eventId: randomUUID(), occurredAt: now });
  const clients: Record<string, Record<string, string[]>> = {
    acme: { 'IT Support': ['laptop', 'vpn', 'password'], Facilities: ['desk', 'badge', 'heating'], Payroll: ['salary', 'payslip'] },
    globex: { Network: ['wifi', 'router', 'latency'], Accounts: ['invoice', 'refund'] },
    initech: { Helpdesk: ['printer', 'monitor'], HR: ['leave', 'contract'], Legal: ['nda', 'gdpr'] },
  };
  const events: AnyEvent[] = [];
  for (const [clientId, teams] of Object.entries(clients)) {
    for (const [label, keywords] of Object.entries(teams)) {
      events.push({ name: 'LabelSetChanged', value: { ...ev(), clientId, change: 'ADDED', label, previousLabel: null, description: `${label} team`, keywords } });
      for (const k of keywords) {
        events.push({ name: 'LabeledExample', value: { ...ev(), clientId, exampleId: randomUUID(), text: `my ${k} does not work`, label, source: 'ASSIGNMENT', metadata: { requester: 'sam' }, predictionId: null } });
      }
    }
    const requestId = randomUUID();
    events.push({ name: 'PredictionRequested', value: { ...ev(), clientId, requestId, text: 'cannot connect to the vpn', metadata: {} } });
  }
  return events;
}

export function registerDemoCommand(program: Command, config: () => EddyConfig): void {
  program
    .command('demo')
    .description('start the stack and run the platform with a simulated workload')
    .action(async () => {
      // The demo talks to the user on stdout; routine info logs would drown it.
      process.env.EDDY_LOG_LEVEL ??= 'warn';
      const c = config();
      out('Eddy demo: starting the local stack (first run downloads Kafka and the registry)…');
      await stackUp(c.home, (line) => out(`  ${line}`));
      const streams = await connectStreams(c, 'eddy-demo');
      const events = sampleEvents();
      await streams.producer.sendAll(events);
      // One message that is not Avro at all: it must end in the dead letters with the reason.
      await streams.producer.sendMessages([{ topic: streams.topics.physical('examples'), messages: [{ key: 'acme', value: Buffer.from('{"oops": "plain JSON"}') }] }]);
      out(`\nproduced ${events.length} events for 3 clients through the schema registry (+1 malformed message)`);

      const counts = new Map<string, number>();
      let deadLetters = 0;
      const runner = streams.consumer({
        group: `demo-${randomUUID()}`,
        topics: TOPIC_NAMES,
        handler: {
          async handle(records) {
            for (const r of records) {
              const key = `${r.topic}:${r.event.name}`;
              counts.set(key, (counts.get(key) ?? 0) + 1);
              if (r.event.name === 'DeadLetter') {
                deadLetters++;
                out(`  dead letter from ${r.event.value.sourceTopic}@${r.event.value.offset}: ${r.event.value.errorCode} — ${r.event.value.reason}`);
              }
            }
          },
        },
      });
      await runner.start();
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline && (deadLetters === 0 || [...counts.values()].reduce((a, b) => a + b, 0) < events.length)) {
        await new Promise((r) => setTimeout(r, 200));
      }
      out('\nconsumed (decoded through the registry):');
      for (const [key, n] of [...counts].sort()) out(`  ${key.padEnd(42)} ${n}`);
      await streams.close();
      await streams.withAdmin((admin) => admin.deleteGroups([runner.groupId]).catch(() => undefined));
      out('\nThe stack keeps running: `npm run stack:status`, `npm run stack:down` to stop it.');
    });
}
