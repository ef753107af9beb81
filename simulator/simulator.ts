import { randomUUID } from 'node:crypto';
import { errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import type { ModelPublished, QualityAlert, RetrainRequested } from '../schemas/events.ts';
import { FETCH_EACH_EVENT, type AnyEvent, type ConsumerRunner, type EventRecord, type Streams } from '../streams/index.ts';
import { ClientWorld, type ClientSpec, type Request, type TopicName } from './workload.ts';

/**
 * The upstream services of a workplace tool, simulated against the real platform:
 * - clients sign up (LabelSetChanged per team + their labelled history),
 * - users file requests, answered by the prediction server over HTTP or over Kafka
 *   (PredictionRequested -> PredictionMade),
 * - agents accept the routing or reassign the request to the right team (PredictionFeedback from
 *   the ground-truth oracle, with a small human error rate), and route some tickets by hand
 *   (LabeledExample ASSIGNMENT),
 * - the story: a client adds a team and later deletes one, a new client signs up, a drift makes a
 *   client's model wrong.
 * It also watches the platform's own topics (models, retrain-requests, alerts) to report what
 * the platform did: models per client, freshness, accuracy, the alert and the retrain after it.
 *
 * Story steps wait for what they depend on (the team change waits for the client's first model,
 * the drift waits until the client's live quality has a baseline) rather than for wall-clock
 * times: on a loaded 2-core machine training takes what it takes, and the story must still happen
 * in order.
 */

export interface SimulatorOptions {
  streams: Streams;
  /** Base URL of a prediction server (or a load balancer in front of several). */
  serverUrl: string;
  /** A key the server accepts for every client (its EDDY_SERVER_ADMIN_KEY). */
  apiKey: string;
  clients: ClientSpec[];
  /** The client that signs up mid-run (omit for no sign-up). */
  newClient?: ClientSpec;
  /** Live requests per second over all clients. */
  requestsPerSecond: number;
  /** Share of requests sent through Kafka instead of HTTP. */
  kafkaShare: number;
  /** Share of predictions an agent reacts to (accept or reassign). */
  feedbackRate: number;
  /** Share of reassignments that pick the wrong team (people make mistakes too). */
  humanErrorRate: number;
  /** How long an agent takes to react to a routing (feedback is produced this much later). */
  feedbackDelayMs: number;
  /** Tickets per second routed by hand (no prediction involved) -> LabeledExample ASSIGNMENT. */
  manualAssignmentsPerSecond: number;
  /** The demo's story; without it, only steady traffic (the benchmark's background load). */
  story?: StoryOptions;
  logger: Logger;
  /** Consumer group of the simulator's watcher (unique per run). */
  group: string;
}

export interface StoryOptions {
  /** Client that adds a team and then removes one. */
  teamChangeClient: string;
  addedTeam: { name: string; topic: TopicName; backlog: number };
  removedTeam: { name: string; heir: string };
  /** Seconds after start before the new client signs up (it also waits for the first models). */
  signUpAfterS: number;
  /** Client whose vocabulary drifts, and the team its requests get confused with. */
  driftClient: string;
  drift: { team: string; confusedWith: string };
  /** Feedback events on the drift client's live model before the drift (the monitor's baseline). */
  driftAfterFeedback: number;
}

export type StoryStepName = 'SIGNED_UP' | 'TEAM_ADDED' | 'RETRAIN_AFTER_TEAM_CHANGE' | 'TEAM_SERVED' | 'TEAM_REMOVED' | 'RETRAIN_AFTER_TEAM_REMOVED' | 'MODEL_WITHOUT_REMOVED_TEAM' | 'NEW_CLIENT_SIGNED_UP' | 'NEW_CLIENT_SERVED' | 'DRIFT' | 'ALERT' | 'RETRAIN_AFTER_ALERT' | 'MODEL_AFTER_ALERT';

export interface StoryStep {
  step: StoryStepName;
  clientId: string;
  at: number;
  detail: string;
}

export interface ClientSnapshot {
  clientId: string;
  teams: number;
  liveVersion: string | null;
  versions: number;
  lastModelAt: number | null;
  /** Share of correct routings among the last answers a model (not the baseline) gave. */
  accuracy: number | null;
  answered: number;
  baselineAnswers: number;
  feedback: number;
  retrains: number;
  /** Retrains that ended in ModelRejected, and the last one's reasons. */
  rejected: number;
  lastRejection: string | null;
  alerts: number;
}

export interface SimulatorSnapshot {
  startedAt: number;
  clients: ClientSnapshot[];
  story: StoryStep[];
  /** Labelled event produced -> first prediction served by a model trained on it, per observed case. */
  freshness: Array<{ what: string; clientId: string; ms: number }>;
  requests: { http: number; kafka: number; failed: number; pendingKafka: number };
  /** Failed requests by kind (the HTTP status and error code, a network error, a Kafka request left unanswered). */
  failures: Record<string, number>;
  lastError: string | null;
}

const ACCURACY_WINDOW = 200;

interface ClientState {
  world: ClientWorld;
  liveVersion: string | null;
  versions: Set<string>;
  lastModelAt: number | null;
  lastLabels: string[];
  recent: boolean[];
  answered: number;
  baselineAnswers: number;
  feedback: number;
  feedbackSinceModel: number;
  retrains: RetrainRequested[];
  rejected: number;
  lastRejection: string | null;
  alerts: QualityAlert[];
  signedUpAt: number;
  /**
   * The server has read the client's sign-up (its teams): requests go to it only from then on.
   * Sooner, the server answers an HTTP request 404 CLIENT_UNKNOWN, as it answers any caller that
   * asks before the client's labels reached it (a demo run counted one such failure).
   */
  known: boolean;
}

interface PendingRequest {
  clientId: string;
  truth: Request;
  sentAt: number;
}

export class Simulator {
  private readonly opts: SimulatorOptions;
  private readonly clients = new Map<string, ClientState>();
  private readonly story: StoryStep[] = [];
  private readonly freshness: SimulatorSnapshot['freshness'] = [];
  /** What we wait to see served, with when its labelled events were produced. */
  private readonly awaitingServed: Array<{ what: string; clientId: string; label: string | null; producedAt: number; step: StoryStepName }> = [];
  private readonly pendingKafka = new Map<string, PendingRequest>();
  private outbox: AnyEvent[] = [];
  /** Feedback waiting for its agent's reaction time, oldest first. */
  private readonly delayed: Array<{ due: number; event: AnyEvent }> = [];
  private readonly counters = { http: 0, kafka: 0, failed: 0 };
  private lastError: string | null = null;
  private readonly failures = new Map<string, number>();
  private watcher: ConsumerRunner | undefined;
  private running = false;
  private loops: Promise<void>[] = [];
  private startedAt = 0;
  private inflight = 0;

  constructor(opts: SimulatorOptions) {
    this.opts = opts;
  }

  /** Starts the watcher, signs up the initial clients, and starts traffic and the story. */
  async start(): Promise<void> {
    this.startedAt = Date.now();
    this.running = true;
    this.watcher = this.opts.streams.consumer({
      group: this.opts.group,
      topics: ['models', 'retrain-requests', 'alerts', 'predictions'],
      // Only what happens from now on: the story is about this run.
      fromBeginning: false,
      partitionsConsumedConcurrently: 4,
      // It times what it watches (Kafka answers, models served): each event as soon as it is there.
      fetch: FETCH_EACH_EVENT,
      handler: { handle: (records) => this.observe(records) },
    });
    const assigned = this.watcher.waitForAssignment(60_000);
    await this.watcher.start();
    await assigned;
    for (const spec of this.opts.clients) await this.signUp(spec);
    this.step('SIGNED_UP', this.opts.clients.map((c) => c.clientId).join(','), `${this.opts.clients.length} clients with their teams and history`);
    this.loops = [this.trafficLoop(), this.flushLoop()];
    if (this.opts.story) this.loops.push(this.storyLoop(this.opts.story));
  }

  /** Stops traffic and the watcher; sends what is still buffered. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    await Promise.allSettled(this.loops);
    await this.flush(true);
    await this.watcher?.stop();
  }

  /** Sends events now (the benchmark's probes), through the same producer as the traffic. */
  async produce(events: AnyEvent[]): Promise<void> {
    await this.send(events);
  }

  snapshot(): SimulatorSnapshot {
    return {
      startedAt: this.startedAt,
      clients: [...this.clients.values()].map((c) => ({
        clientId: c.world.clientId,
        teams: c.world.currentTeams().length,
        liveVersion: c.liveVersion,
        versions: c.versions.size,
        lastModelAt: c.lastModelAt,
        accuracy: c.recent.length ? c.recent.filter(Boolean).length / c.recent.length : null,
        answered: c.answered,
        baselineAnswers: c.baselineAnswers,
        feedback: c.feedback,
        retrains: c.retrains.length,
        rejected: c.rejected,
        lastRejection: c.lastRejection,
        alerts: c.alerts.length,
      })),
      story: [...this.story],
      freshness: [...this.freshness],
      requests: { ...this.counters, pendingKafka: this.pendingKafka.size },
      failures: Object.fromEntries(this.failures),
      lastError: this.lastError,
    };
  }

  hasStep(step: StoryStepName, clientId?: string): StoryStep | undefined {
    return this.story.find((s) => s.step === step && (clientId === undefined || s.clientId === clientId));
  }

  // --- upstream actions -------------------------------------------------------------------

  private async signUp(spec: ClientSpec): Promise<void> {
    const world = new ClientWorld(spec);
    const now = Date.now();
    this.clients.set(spec.clientId, {
      world, liveVersion: null, versions: new Set(), lastModelAt: null, lastLabels: [], recent: [], answered: 0,
      baselineAnswers: 0, feedback: 0, feedbackSinceModel: 0, retrains: [], rejected: 0, lastRejection: null, alerts: [], signedUpAt: now,
      known: false,
    });
    const events: AnyEvent[] = [];
    for (const team of world.currentTeams()) {
      events.push({ name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: spec.clientId, occurredAt: now, change: 'ADDED', label: team.name, previousLabel: null, description: team.description, keywords: team.keywords } });
      events.push(this.example(world, { text: team.description, label: team.name, metadata: {} }, 'DEFINITION'));
    }
    for (let i = 0; i < spec.historyExamples; i++) events.push(this.example(world, world.sample(), 'IMPORT'));
    await this.send(events);
    void this.untilKnown(spec.clientId).then(() => {
      const state = this.clients.get(spec.clientId);
      if (state) state.known = true;
    });
  }

  /**
   * Resolves once the server knows the client (GET /v1/clients/:id/model answers 200), asking every
   * 50 ms; after 60 s it resolves anyway, so that a server that never learns of the client shows
   * in the failed requests instead of in silence.
   */
  private async untilKnown(clientId: string): Promise<void> {
    const until = Date.now() + 60_000;
    while (this.running && Date.now() < until) {
      try {
        const res = await fetch(`${this.opts.serverUrl}/v1/clients/${encodeURIComponent(clientId)}/model`, {
          headers: { authorization: `Bearer ${this.opts.apiKey}` }, signal: AbortSignal.timeout(2_000),
        });
        await res.arrayBuffer();
        if (res.ok) return;
      } catch {
        // the server is restarting or slow: ask again
      }
      await sleep(50);
    }
  }

  private example(world: ClientWorld, r: Request, source: 'DEFINITION' | 'ASSIGNMENT' | 'IMPORT'): AnyEvent {
    return {
      name: 'LabeledExample',
      value: { eventId: randomUUID(), clientId: world.clientId, occurredAt: Date.now(), exampleId: world.nextExampleId(), text: r.text, label: r.label, source, metadata: r.metadata, predictionId: null },
    };
  }

  /** A client the server knows, by traffic weight; undefined while it knows none yet. */
  private pickClient(): ClientState | undefined {
    const all = [...this.clients.values()].filter((c) => c.known);
    const total = all.reduce((a, c) => a + c.world.spec.trafficWeight, 0);
    let r = Math.random() * total;
    for (const c of all) {
      r -= c.world.spec.trafficWeight;
      if (r <= 0) return c;
    }
    return all.at(-1);
  }

  private async trafficLoop(): Promise<void> {
    const tickMs = 100;
    let debt = 0;
    let manualDebt = 0;
    while (this.running) {
      const t0 = Date.now();
      debt += (this.opts.requestsPerSecond * tickMs) / 1000;
      manualDebt += (this.opts.manualAssignmentsPerSecond * tickMs) / 1000;
      while (debt >= 1) {
        debt--;
        const client = this.pickClient();
        if (!client) continue; // nobody to ask yet: the tick's requests are not owed later
        const request = client.world.sample();
        if (Math.random() < this.opts.kafkaShare) this.requestViaKafka(client, request);
        // HTTP requests run concurrently, but never more than a bounded number at once.
        else if (this.inflight < 64) void this.requestViaHttp(client, request);
      }
      while (manualDebt >= 1) {
        manualDebt--;
        const client = this.pickClient();
        if (!client) continue;
        this.outbox.push(this.example(client.world, client.world.sample(), 'ASSIGNMENT'));
      }
      this.expireKafkaRequests();
      await sleep(Math.max(0, tickMs - (Date.now() - t0)));
    }
  }

  private requestViaKafka(client: ClientState, truth: Request): void {
    const requestId = randomUUID();
    this.pendingKafka.set(requestId, { clientId: client.world.clientId, truth, sentAt: Date.now() });
    this.counters.kafka++;
    this.outbox.push({ name: 'PredictionRequested', value: { eventId: randomUUID(), clientId: client.world.clientId, occurredAt: Date.now(), requestId, text: truth.text, metadata: truth.metadata } });
  }

  private async requestViaHttp(client: ClientState, truth: Request): Promise<void> {
    this.inflight++;
    this.counters.http++;
    try {
      const res = await fetch(`${this.opts.serverUrl}/v1/clients/${encodeURIComponent(client.world.clientId)}/predict`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this.opts.apiKey}` },
        body: JSON.stringify({ text: truth.text, metadata: truth.metadata }),
        signal: AbortSignal.timeout(10_000),
      });
      const body = (await res.json()) as { requestId?: string; label?: string; modelVersion?: string | null; error?: { code: string; message: string } };
      if (!res.ok || !body.requestId || !body.label) {
        this.failed(`HTTP ${res.status} ${body.error?.code ?? ''}`.trim());
        this.lastError = `HTTP ${res.status} ${body.error?.code ?? ''} ${body.error?.message ?? ''}`.trim();
        return;
      }
      this.answered(client, truth, body.requestId, body.label, body.modelVersion ?? null);
    } catch (err) {
      this.failed(`HTTP predict: ${err instanceof Error && err.name === 'TimeoutError' ? 'no answer within 10 s' : errorMessage(err)}`);
      this.lastError = `HTTP predict failed: ${errorMessage(err)}`;
    } finally {
      this.inflight--;
    }
  }

  private failed(kind: string): void {
    this.counters.failed++;
    this.failures.set(kind, (this.failures.get(kind) ?? 0) + 1);
  }

  /** An agent looks at the routing: accepts it or reassigns it (the oracle knows the truth). */
  private answered(client: ClientState, truth: Request, requestId: string, label: string, modelVersion: string | null): void {
    client.answered++;
    const now = Date.now();
    if (modelVersion === null) client.baselineAnswers++;
    else {
      client.recent.push(label === truth.label);
      if (client.recent.length > ACCURACY_WINDOW) client.recent.shift();
      this.checkServed(client.world.clientId, label, now);
    }
    if (Math.random() >= this.opts.feedbackRate) return;
    client.feedback++;
    client.feedbackSinceModel++;
    let outcome: 'ACCEPTED' | 'REASSIGNED' = label === truth.label ? 'ACCEPTED' : 'REASSIGNED';
    let correct: string | null = outcome === 'REASSIGNED' ? truth.label : null;
    if (outcome === 'REASSIGNED' && Math.random() < this.opts.humanErrorRate) {
      const teams = client.world.currentTeams().map((t) => t.name).filter((t) => t !== truth.label && t !== label);
      if (teams.length) correct = teams[Math.floor(Math.random() * teams.length)]!;
    }
    if (correct === null) outcome = 'ACCEPTED';
    this.delayed.push({
      due: now + this.opts.feedbackDelayMs,
      event: { name: 'PredictionFeedback', value: { eventId: randomUUID(), clientId: client.world.clientId, occurredAt: now + this.opts.feedbackDelayMs, requestId, outcome, correctLabel: correct, actor: truth.metadata.requester ?? null } },
    });
  }

  private expireKafkaRequests(): void {
    const cutoff = Date.now() - 120_000;
    for (const [id, p] of this.pendingKafka) {
      if (p.sentAt >= cutoff) break;
      this.pendingKafka.delete(id);
      this.failed('Kafka request: no PredictionMade within 120 s');
      this.lastError = 'a Kafka prediction request got no PredictionMade within 120 s';
    }
  }

  private async flushLoop(): Promise<void> {
    while (this.running) {
      await sleep(250);
      await this.flush();
    }
  }

  private async flush(all = false): Promise<void> {
    const now = Date.now();
    while (this.delayed.length && (all || this.delayed[0]!.due <= now)) this.outbox.push(this.delayed.shift()!.event);
    if (this.outbox.length === 0) return;
    const batch = this.outbox;
    this.outbox = [];
    await this.send(batch);
  }

  private async send(events: AnyEvent[]): Promise<void> {
    try {
      await this.opts.streams.producer.sendAll(events);
    } catch (err) {
      // Upstream keeps its events until Kafka takes them (nothing is dropped).
      this.lastError = `produce failed, retrying: ${errorMessage(err)}`;
      this.outbox.unshift(...events);
      await sleep(1000);
    }
  }

  // --- the story --------------------------------------------------------------------------

  private async storyLoop(s: StoryOptions): Promise<void> {
    let teamAdded = false;
    let teamRemoved = false;
    let signedUp = !this.opts.newClient;
    let drifted = false;
    while (this.running) {
      await sleep(500);
      const change = this.clients.get(s.teamChangeClient);
      if (!teamAdded && change?.liveVersion) {
        teamAdded = true;
        const team = change.world.addTeam(s.addedTeam.name, s.addedTeam.topic);
        const events: AnyEvent[] = [{ name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: s.teamChangeClient, occurredAt: Date.now(), change: 'ADDED', label: team.name, previousLabel: null, description: team.description, keywords: team.keywords } }];
        events.push(this.example(change.world, { text: team.description, label: team.name, metadata: {} }, 'DEFINITION'));
        // The new team's backlog: tickets moved to it by hand when it was created.
        for (let i = 0; i < s.addedTeam.backlog; i++) {
          const r = change.world.sample();
          if (r.label === team.name) events.push(this.example(change.world, r, 'ASSIGNMENT'));
          else i--;
        }
        this.outbox.push(...events);
        this.awaitingServed.push({ what: `team "${team.name}" added`, clientId: s.teamChangeClient, label: team.name, producedAt: Date.now(), step: 'TEAM_SERVED' });
        this.step('TEAM_ADDED', s.teamChangeClient, `team "${team.name}" takes over ${s.addedTeam.topic} requests (+${s.addedTeam.backlog} backlog tickets)`);
      }
      if (teamAdded && !teamRemoved && change && this.hasStep('TEAM_SERVED', s.teamChangeClient)) {
        teamRemoved = true;
        change.world.removeTeam(s.removedTeam.name, s.removedTeam.heir);
        this.outbox.push({ name: 'LabelSetChanged', value: { eventId: randomUUID(), clientId: s.teamChangeClient, occurredAt: Date.now(), change: 'REMOVED', label: s.removedTeam.name, previousLabel: null, description: null, keywords: [] } });
        this.step('TEAM_REMOVED', s.teamChangeClient, `team "${s.removedTeam.name}" deleted; its requests now go to "${s.removedTeam.heir}"`);
      }
      const initialModels = this.opts.clients.every((c) => this.clients.get(c.clientId)?.liveVersion);
      if (!signedUp && this.opts.newClient && (Date.now() - this.startedAt >= s.signUpAfterS * 1000) && initialModels) {
        signedUp = true;
        // Freshness counts from the moment the sign-up events are handed to Kafka.
        this.awaitingServed.push({ what: 'new client signed up', clientId: this.opts.newClient.clientId, label: null, producedAt: Date.now(), step: 'NEW_CLIENT_SERVED' });
        await this.signUp(this.opts.newClient);
        this.step('NEW_CLIENT_SIGNED_UP', this.opts.newClient.clientId, `${this.opts.newClient.teams.length} teams, ${this.opts.newClient.historyExamples} tickets of history`);
      }
      const drift = this.clients.get(s.driftClient);
      if (!drifted && drift?.liveVersion && drift.feedbackSinceModel >= s.driftAfterFeedback) {
        drifted = true;
        drift.world.drift(s.drift.team, s.drift.confusedWith);
        this.step('DRIFT', s.driftClient, `"${s.drift.team}" requests now use the words of "${s.drift.confusedWith}"`);
      }
    }
  }

  private step(step: StoryStepName, clientId: string, detail: string): void {
    this.story.push({ step, clientId, at: Date.now(), detail });
    this.opts.logger.info({ step, clientId, detail }, 'story');
  }

  /** A model answered: is it the first answer that proves a labelled change was learned? */
  private checkServed(clientId: string, label: string, now: number): void {
    for (let i = 0; i < this.awaitingServed.length; i++) {
      const w = this.awaitingServed[i]!;
      if (w.clientId !== clientId || (w.label !== null && w.label !== label)) continue;
      this.awaitingServed.splice(i, 1);
      this.freshness.push({ what: w.what, clientId, ms: now - w.producedAt });
      this.step(w.step, clientId, `${w.what}: first prediction by a model trained on it after ${((now - w.producedAt) / 1000).toFixed(1)} s`);
      return;
    }
  }

  // --- watching the platform --------------------------------------------------------------

  private async observe(records: EventRecord[]): Promise<void> {
    for (const r of records) {
      const e = r.event;
      const client = this.clients.get(e.value.clientId);
      switch (e.name) {
        case 'ModelPublished':
          if (client) this.published(client, e.value);
          break;
        case 'ModelRejected':
          if (client) {
            client.rejected++;
            client.lastRejection = `${e.value.stage}: ${e.value.reasons.join(', ')}`;
          }
          break;
        case 'ModelRolledBack':
          if (client) client.liveVersion = e.value.toVersion;
          break;
        case 'RetrainRequested':
          if (!client) break;
          client.retrains.push(e.value);
          if (this.hasStep('TEAM_REMOVED', client.world.clientId) && !this.hasStep('RETRAIN_AFTER_TEAM_REMOVED', client.world.clientId)) {
            this.step('RETRAIN_AFTER_TEAM_REMOVED', client.world.clientId, `retrain requested (${e.value.reason}): ${e.value.detail}`);
          }
          if (e.value.reason === 'LABELS_CHANGED' && this.hasStep('TEAM_ADDED', client.world.clientId) && !this.hasStep('RETRAIN_AFTER_TEAM_CHANGE', client.world.clientId)) {
            this.step('RETRAIN_AFTER_TEAM_CHANGE', client.world.clientId, `retrain requested (${e.value.reason}): ${e.value.detail}`);
          }
          if (this.hasStep('ALERT', client.world.clientId) && e.value.reason === 'QUALITY_DROP' && !this.hasStep('RETRAIN_AFTER_ALERT', client.world.clientId)) {
            this.step('RETRAIN_AFTER_ALERT', client.world.clientId, `retrain requested (${e.value.reason}): ${e.value.detail}`);
          }
          break;
        case 'QualityAlert':
          if (!client) break;
          client.alerts.push(e.value);
          // The story's alert is the drifted client's first one after the drift; other alerts
          // (a team change, the baseline's skew before the first model) are counted, not the story.
          const drift = this.hasStep('DRIFT', client.world.clientId);
          if (drift && !this.hasStep('ALERT', client.world.clientId)) {
            this.step('ALERT', client.world.clientId, describeAlert(e.value));
            // The alert and the retrain it causes are on two topics: the retrain may be read first.
            const early = client.retrains.find((r) => r.reason === 'QUALITY_DROP' && r.occurredAt >= drift.at);
            if (early && !this.hasStep('RETRAIN_AFTER_ALERT', client.world.clientId)) {
              this.step('RETRAIN_AFTER_ALERT', client.world.clientId, `retrain requested (${early.reason}): ${early.detail}`);
            }
          }
          break;
        case 'PredictionMade': {
          const pending = this.pendingKafka.get(e.value.requestId);
          if (!pending || e.value.channel !== 'KAFKA') break;
          this.pendingKafka.delete(e.value.requestId);
          const c = this.clients.get(pending.clientId);
          if (c) this.answered(c, pending.truth, e.value.requestId, e.value.label, e.value.modelVersion ?? null);
          break;
        }
        default:
          break;
      }
    }
  }

  private published(client: ClientState, m: ModelPublished): void {
    client.versions.add(m.modelVersion);
    client.liveVersion = m.modelVersion;
    client.lastModelAt = m.occurredAt;
    client.lastLabels = m.labels;
    client.feedbackSinceModel = 0;
    const removed = this.opts.story?.removedTeam.name ?? '';
    if (this.hasStep('TEAM_REMOVED', client.world.clientId) && !m.labels.includes(removed) && !this.hasStep('MODEL_WITHOUT_REMOVED_TEAM', client.world.clientId)) {
      this.step('MODEL_WITHOUT_REMOVED_TEAM', client.world.clientId, `${m.modelVersion} serves ${m.labels.length} teams, without "${removed}"`);
    }
    if (this.hasStep('ALERT', client.world.clientId) && !this.hasStep('MODEL_AFTER_ALERT', client.world.clientId)) {
      this.step('MODEL_AFTER_ALERT', client.world.clientId, `${m.modelVersion} published after the alert (accuracy on its test set ${fmt(m.metrics.accuracy)})`);
    }
  }
}

function describeAlert(a: QualityAlert): string {
  if (a.kind === 'PREDICTION_BIAS') {
    return `PREDICTION_BIAS: predicted vs observed teams diverge ${a.currentValue.toFixed(3)} > ${a.previousValue.toFixed(3)}${a.label ? `, over-predicts "${a.label}"` : ''} (${a.support} judged)`;
  }
  return `${a.kind}: ${a.metric}${a.label ? ` of "${a.label}"` : ''} ${a.previousValue.toFixed(2)} -> ${a.currentValue.toFixed(2)} (-${a.dropPercent.toFixed(0)}%, ${a.support} judged)`;
}

function fmt(x: number | undefined): string {
  return x === undefined ? 'n/a' : x.toFixed(2);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
