import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../common/log.ts';
import { metricsRegistry } from '../common/metrics.ts';
import type { PredictionMade } from '../schemas/events.ts';
import { baselinePredict } from '../server/baseline.ts';
import { PredictionPublisher } from '../server/publisher.ts';
import { PredictionSpool } from '../server/spool.ts';
import { compareVersions } from '../common/ids.ts';
import { MAX_VERSIONS_PER_CLIENT, ModelRegistry } from '../models/lifecycle.ts';
import { LabelDirectory } from '../server/labels.ts';
import type { AnyEvent } from '../streams/index.ts';
import { testConfig, waitFor } from './helpers.ts';
import { serverTestStreams } from './server-fixtures.ts';

/** The registry is a pure fold of the models topic: its rules are tested event by event. */

const published = (clientId: string, version: string): AnyEvent => ({
  name: 'ModelPublished',
  value: {
    eventId: randomUUID(), clientId, occurredAt: Date.now(), modelVersion: version, previousVersion: null,
    artifactUri: `eddy-store://sha256/${'0'.repeat(64)}`, artifactSha256: '0'.repeat(64), featurizer: 'f', labels: ['A', 'B'],
    metrics: { accuracy: 0.5 }, trainingExamples: 10, trainingDataSha256: '0'.repeat(64), backend: 'cpu', trainingMs: 1, retrainEventId: null, dataComplete: true, modelConfig: '', cvMacroF1: null, searched: false,
  },
});
const promoted = (clientId: string, version: string, variant: 'LIVE' | 'CANARY' | 'SHADOW', share = 1, pinned = false): AnyEvent => ({
  name: 'ModelPromoted',
  value: { eventId: randomUUID(), clientId, occurredAt: Date.now(), modelVersion: version, variant, share, pinned, actor: 'test', reason: '' },
});
const rolledBack = (clientId: string, from: string | null, to: string): AnyEvent => ({
  name: 'ModelRolledBack',
  value: { eventId: randomUUID(), clientId, occurredAt: Date.now(), fromVersion: from, toVersion: to, actor: 'test', reason: '' },
});

describe('ModelRegistry', () => {
  it('makes each published version live and keeps the previous ones for rollback', () => {
    const r = new ModelRegistry();
    r.apply(published('c', 'v1'));
    r.apply(published('c', 'v2'));
    expect(r.get('c')).toMatchObject({ live: 'v2', liveHistory: ['v1'], pinned: false });
  });

  it('applies a redelivered event once', () => {
    const r = new ModelRegistry();
    const e1 = published('c', 'v1');
    r.apply(e1);
    r.apply(published('c', 'v2'));
    expect(r.apply(e1)).toBeUndefined();
    expect(r.get('c')?.live).toBe('v2');
    expect(r.hasApplied(e1.value.eventId)).toBe(true);
  });

  it('keeps a pinned live version when newer versions are published, until promoted or unpinned', () => {
    const r = new ModelRegistry();
    r.apply(published('c', 'v1'));
    r.apply(promoted('c', 'v1', 'LIVE', 1, true));
    const change = r.apply(published('c', 'v2'));
    expect(change).toMatchObject({ kind: 'published', becameLive: false });
    expect(r.get('c')).toMatchObject({ live: 'v1', pinned: true });
    expect(r.get('c')?.versions.has('v2')).toBe(true);
    r.apply(promoted('c', 'v1', 'LIVE', 1, false));
    r.apply(published('c', 'v3'));
    expect(r.get('c')?.live).toBe('v3');
  });

  it('rolls back to the named version and drops the rolled-back one from the history', () => {
    const r = new ModelRegistry();
    for (const v of ['v1', 'v2', 'v3']) r.apply(published('c', v));
    r.apply(rolledBack('c', 'v3', 'v2'));
    expect(r.get('c')).toMatchObject({ live: 'v2', liveHistory: ['v1'] });
    r.apply(rolledBack('c', 'v2', 'v1'));
    expect(r.get('c')).toMatchObject({ live: 'v1', liveHistory: [] });
  });

  it('sets and ends canary and shadow roles; promoting the canary to live ends its canary role', () => {
    const r = new ModelRegistry();
    r.apply(published('c', 'v1'));
    r.apply(promoted('c', 'v1', 'LIVE', 1, true));
    r.apply(published('c', 'v2'));
    r.apply(promoted('c', 'v2', 'CANARY', 0.25));
    expect(r.get('c')?.canary).toEqual({ version: 'v2', share: 0.25 });
    r.apply(promoted('c', 'v2', 'SHADOW', 0.5));
    expect(r.get('c')?.shadow).toEqual({ version: 'v2', share: 0.5 });
    r.apply(promoted('c', 'v2', 'SHADOW', 0));
    expect(r.get('c')?.shadow).toBeUndefined();
    r.apply(promoted('c', 'v2', 'LIVE'));
    expect(r.get('c')).toMatchObject({ live: 'v2', canary: undefined, liveHistory: ['v1'] });
    // The live version cannot also be its own canary.
    r.apply(promoted('c', 'v2', 'CANARY', 0.5));
    expect(r.get('c')?.canary).toBeUndefined();
  });

  it('ignores promotions and rollbacks of versions that were never published', () => {
    const r = new ModelRegistry();
    r.apply(published('c', 'v1'));
    expect(r.apply(promoted('c', 'v9', 'LIVE'))).toMatchObject({ kind: 'ignored' });
    expect(r.apply(rolledBack('c', 'v1', 'v0'))).toMatchObject({ kind: 'ignored' });
    expect(r.get('c')?.live).toBe('v1');
  });

  it('forgets the oldest versions beyond the per-client cap, but never one in a role or the rollback history', () => {
    const r = new ModelRegistry();
    r.apply(published('c', 'v1'));
    r.apply(promoted('c', 'v1', 'LIVE', 1, true)); // pinned: v1 stays live while v2..v80 arrive
    for (let i = 2; i <= 80; i++) r.apply(published('c', `v${i}`));
    const c = r.get('c')!;
    expect(c.versions.size).toBe(MAX_VERSIONS_PER_CLIENT);
    expect(c.versions.has('v1')).toBe(true);
    expect(c.versions.has('v2')).toBe(false);
    expect(c.versions.has('v80')).toBe(true);
  });

  it('orders versions numerically', () => {
    expect(['v10', 'v9', 'v1', 'v2'].sort(compareVersions)).toEqual(['v1', 'v2', 'v9', 'v10']);
  });
});

describe('LabelDirectory and the baseline', () => {
  const label = (change: 'ADDED' | 'UPDATED' | 'RENAMED' | 'REMOVED', name: string, opts: { previous?: string; description?: string; keywords?: string[] } = {}): AnyEvent => ({
    name: 'LabelSetChanged',
    value: { eventId: randomUUID(), clientId: 'c', occurredAt: Date.now(), change, label: name, previousLabel: opts.previous ?? null, description: opts.description ?? null, keywords: opts.keywords ?? [] },
  });

  it('follows added, updated, renamed and removed labels', () => {
    const d = new LabelDirectory();
    d.apply(label('ADDED', 'Net', { description: 'network things', keywords: ['vpn'] }));
    d.apply(label('ADDED', 'HR', { description: 'people', keywords: ['holiday'] }));
    d.apply(label('RENAMED', 'Network', { previous: 'Net' }));
    d.apply(label('UPDATED', 'HR', { keywords: ['holiday', 'leave'] }));
    d.apply(label('ADDED', 'Old'));
    d.apply(label('REMOVED', 'Old'));
    expect(d.get('c')).toEqual([
      { label: 'HR', description: 'people', keywords: ['holiday', 'leave'] },
      { label: 'Network', description: 'network things', keywords: ['vpn'] },
    ]);
  });

  it('ranks labels by keyword and description overlap, else by the most examples', () => {
    const defs = [
      { label: 'Network', description: 'VPN, wifi and internet access', keywords: ['vpn'] },
      { label: 'Payroll', description: 'Salaries and payslips', keywords: ['payslip', 'bonus'] },
    ];
    const vpn = baselinePredict('The VPN is down again', defs, undefined, 2)!;
    expect(vpn.label).toBe('Network');
    expect(vpn.scores[0]!.score).toBeGreaterThan(vpn.scores[1]!.score);
    expect(vpn.scores.reduce((s, x) => s + x.score, 0)).toBeCloseTo(1, 6);
    expect(baselinePredict('where is my bonus', defs, undefined, 2)!.label).toBe('Payroll');
    expect(baselinePredict('hello', defs, new Map([['Payroll', 5], ['Network', 2]]), 2)!.label).toBe('Payroll');
    expect(baselinePredict('hello', defs, undefined, 2)!.label).toBe('Network'); // definition order
    expect(baselinePredict('hello', [], undefined, 2)).toBeUndefined();
  });
});

describe('PredictionPublisher', () => {
  let streams: Awaited<ReturnType<typeof serverTestStreams>>;
  beforeAll(async () => {
    streams = await serverTestStreams(testConfig());
  });
  afterAll(async () => {
    await streams?.cleanup();
  });

  const made = (requestId: string): PredictionMade => ({
    eventId: randomUUID(), clientId: 'c', occurredAt: Date.now(), requestId, text: 't', metadata: {}, label: 'A',
    scores: [{ label: 'A', score: 1 }], modelVersion: 'v1', variant: 'LIVE', latencyMs: 1, channel: 'HTTP', featuresDefaulted: false, unsure: null,
  });

  // The production path (a worker thread with its own Kafka connection) and the inline one.
  it.each(['thread', 'inline'] as const)('publishes without blocking, and refuses (counted, never drops) what would overflow its buffer (%s)', async (mode) => {
    const refused = async () => (await metricsRegistry.getSingleMetric('eddy_server_publish_refused_total')?.get())?.values[0]?.value ?? 0;
    const before = await refused();
    const via = mode === 'thread' ? { thread: streams.config } : { producer: streams.producer };
    const publisher = new PredictionPublisher(via, { capacity: 10, logger: createLogger('test', 'silent') });
    const tag = `${mode}-${randomUUID()}`;
    // 25 predictions in one synchronous burst: 10 may be on their way at once, the other 15 are refused before predicting.
    const sent = Array.from({ length: 25 }, (_, i) => ({ ...made(`${tag}-${i}`), metadata: { requester: `r${i}`, channel: 'chat' }, text: `tëxt ${i} 東京 😀` }));
    let refusals = 0;
    for (const e of sent) {
      try {
        publisher.admit(1);
        publisher.publish(e);
      } catch (err) {
        expect(err).toMatchObject({ code: 'KAFKA_UNAVAILABLE', retriable: true });
        refusals++;
      }
    }
    expect(refusals).toBe(15);
    expect(publisher.refusedTotal).toBe(15);
    expect(publisher.droppedTotal).toBe(0);
    expect(await refused()).toBe(before + 15);
    expect(publisher.pending).toBe(10);
    expect(await publisher.flush()).toBe(true);
    expect(publisher.publishedTotal).toBe(10);
    expect(publisher.pending).toBe(0);
    const seen: string[] = [];
    const decoded = new Map<string, unknown>();
    const tail = streams.consumer({
      group: `publisher-test-${tag}`, topics: ['predictions'],
      handler: {
        async handle(records) {
          for (const r of records) {
            if (r.event.name !== 'PredictionMade' || !r.event.value.requestId.startsWith(tag)) continue;
            seen.push(r.event.value.requestId);
            decoded.set(r.event.value.requestId, { key: r.key, event: r.event.value });
          }
        },
      },
    });
    await tail.start();
    await waitFor('the 10 accepted events on the topic', () => seen.length === 10);
    expect(seen.sort()).toEqual(Array.from({ length: 10 }, (_, i) => `${tag}-${i}`).sort());
    // Every field arrives as published (the thread sends the request thread's own encoding), keyed by clientId.
    for (const e of sent.slice(0, 10)) expect(decoded.get(e.requestId)).toEqual({ key: e.clientId, event: e });
    // After close nothing is accepted, and the refusal is counted too.
    await publisher.close();
    publisher.publish(made(`${tag}-late`));
    expect(publisher.droppedTotal).toBe(1);
    await tail.stop();
  });

  it('counts the events a dying publisher thread held as dropped, starts a new thread and keeps publishing', async () => {
    // A long linger keeps the first events inside the thread when it dies.
    const publisher = new PredictionPublisher({ thread: streams.config }, { capacity: 100, logger: createLogger('test', 'silent'), lingerMs: 2_000 });
    const tag = `crash-${randomUUID()}`;
    for (let i = 0; i < 4; i++) publisher.publish(made(`${tag}-${i}`));
    await waitFor('the events handed to the thread', () => (publisher as unknown as { channel: { inThread: number } }).channel.inThread === 4);
    // A message the thread cannot handle throws in its message handler: the thread exits.
    (publisher as unknown as { channel: { worker: { postMessage(m: unknown): void } } }).channel.worker.postMessage({ type: 'events', events: null });
    await waitFor('the lost events counted', () => publisher.droppedTotal === 4);
    expect(publisher.pending).toBe(0);
    for (let i = 4; i < 6; i++) publisher.publish(made(`${tag}-${i}`));
    expect(await publisher.flush(15_000)).toBe(true); // a new thread (started after 0.5 s) wrote them
    expect(publisher.publishedTotal).toBe(2);
    await publisher.close();
  });

  it('keeps events while Kafka is unreachable, refuses new predictions beyond its buffer, and counts what close abandons (no spool)', async () => {
    const unreachable = { ...streams.config, kafkaBrokers: ['127.0.0.1:1'] };
    const publisher = new PredictionPublisher({ thread: unreachable }, { capacity: 10, logger: createLogger('test', 'silent') });
    for (let i = 0; i < 6; i++) publisher.publish(made(`down-${i}`));
    expect(await publisher.flush(300)).toBe(false);
    expect(publisher.pending).toBe(6);
    expect(() => publisher.admit(4)).not.toThrow();
    expect(() => publisher.admit(5)).toThrow(/waiting to be logged/);
    // What was admitted is taken even past the limit (requests admitted together): never dropped for room.
    for (let i = 6; i < 12; i++) publisher.publish(made(`down-${i}`));
    expect(publisher.droppedTotal).toBe(0);
    expect(publisher.pending).toBe(12);
    await publisher.close(200);
    expect(publisher.publishedTotal).toBe(0);
    expect(publisher.droppedTotal).toBe(12);
    expect(publisher.pending).toBe(0);
  });

  it.each(['thread', 'inline'] as const)('keeps what Kafka did not take in the spool, and the next publisher replays it once (torn tails and foreign schemas counted, not replayed) (%s)', async (mode) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'eddy-spool-test-'));
    const topic = `spool-test-${randomUUID()}`;
    const logger = createLogger('test', 'silent');
    const counter = async (name: string, labels: Record<string, string> = {}) => ((await metricsRegistry.getSingleMetric(name)?.get())?.values ?? [])
      .filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((sum, v) => sum + v.value, 0);
    const torn = await counter('eddy_server_spool_unreplayable_total', { reason: 'torn' });
    const foreign = await counter('eddy_server_spool_unreplayable_total', { reason: 'schema' });
    try {
      const tag = `spool-${mode}-${randomUUID()}`;
      const down = new PredictionPublisher({ thread: { ...streams.config, kafkaBrokers: ['127.0.0.1:1'] } }, { capacity: 100, logger, spool: new PredictionSpool({ dir, topic, fsync: false, logger }) });
      for (let i = 0; i < 5; i++) down.publish(made(`${tag}-${i}`));
      await down.committed();
      await down.close(200);
      expect(down.droppedTotal).toBe(0);
      const [file, ...more] = fs.readdirSync(dir);
      expect(more).toEqual([]);
      // A cut last write (power loss) and a segment of a build with another schema.
      fs.appendFileSync(path.join(dir, file!), Buffer.from([0, 0, 0, 9, 1, 2]));
      fs.writeFileSync(path.join(dir, file!.replace(/\.(\d+)\.spool$/, '.$1999.spool')), Buffer.concat([Buffer.from('EDDYSPL1'), Buffer.alloc(8), Buffer.from([0, 0, 0, 1, 65, 0, 0, 0, 1, 0])]));
      // A live process's segment (this test's own pid, held) and another topic's are left alone.
      const otherTopic = path.join(dir, file!.replace(topic, `${topic}-other`));
      fs.writeFileSync(otherTopic, 'x');

      const via = mode === 'thread' ? { thread: streams.config } : { producer: streams.producer };
      const up = new PredictionPublisher(via, { capacity: 100, logger, spool: new PredictionSpool({ dir, topic, fsync: false, logger }) });
      expect(up.replayedTotal).toBe(5);
      expect(await counter('eddy_server_spool_unreplayable_total', { reason: 'torn' })).toBe(torn + 1);
      expect(await counter('eddy_server_spool_unreplayable_total', { reason: 'schema' })).toBe(foreign + 1);
      expect(await up.flush(15_000)).toBe(true);
      expect(up.publishedTotal).toBe(5);
      const seen: string[] = [];
      const tail = streams.consumer({
        group: `spool-test-${tag}`, topics: ['predictions'], fromBeginning: true,
        handler: { async handle(records) { for (const r of records) if (r.event.name === 'PredictionMade' && r.event.value.requestId.startsWith(tag)) seen.push(r.event.value.requestId); } },
      });
      await tail.start();
      await waitFor('the replayed events on the topic', () => seen.length >= 5);
      await tail.stop();
      expect(seen.sort()).toEqual(Array.from({ length: 5 }, (_, i) => `${tag}-${i}`));
      await up.close();
      // Settled segments are gone; the other topic's file and the foreign one (kept as .bad) stay.
      const leftFiles = fs.readdirSync(dir);
      expect(leftFiles).toHaveLength(2);
      expect(leftFiles).toContain(path.basename(otherTopic));
      expect(leftFiles.filter((f) => f.endsWith('.spool.bad'))).toHaveLength(1);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
