import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSession, type Session } from '../simulator/session.ts';
import type { StoryStepName } from '../simulator/simulator.ts';
import { waitFor } from './helpers.ts';

/**
 * The demo's story against the real platform (processors, trainer and a server as child
 * processes of the real CLI, on the real stack), in a namespace of its own: every client gets a
 * model, the new client's first model is created automatically, the team change causes a
 * retrain, the drift causes an alert and a retrain. Each step waits for what it depends on, so a
 * loaded 2-core machine only makes it slower; the thresholds are the small ones of
 * FAST_PLATFORM_ENV (simulator/session.ts).
 */

const STORY_TIMEOUT_MS = 8 * 60_000;

describe('demo story (simulator against the real platform)', () => {
  let session: Session;

  beforeAll(async () => {
    session = await startSession({
      simulator: { requestsPerSecond: 12, story: { signUpAfterS: 10, driftAfterFeedback: 80 } },
    });
  }, 180_000);

  afterAll(async () => {
    await session?.stop();
  }, 120_000);

  /**
   * Waits for a story step, within the test's own deadline: a test's steps share its time, so a
   * step that never comes fails with its name here, before vitest's timeout could cut it short.
   */
  const step = async (name: StoryStepName, clientId: string, deadline: number) => {
    const found = await waitFor(`story step ${name} of ${clientId} (component logs: ${session.platform.logDir})`,
      () => (session.platform.crashed().length ? 'crashed' : session.simulator!.hasStep(name, clientId)), Math.max(1_000, deadline - Date.now()), 500);
    // A component that died fails the test at once (waitFor would only see a missing step).
    if (found === 'crashed') throw new Error(`components exited: ${session.platform.crashed().map((c) => `${c.spec.name} (${c.exited?.code ?? c.exited?.signal})`).join(', ')}; logs in ${session.platform.logDir}`);
    return found;
  };

  it('creates a model for every client, including the one that signs up mid-run', async () => {
    const deadline = Date.now() + STORY_TIMEOUT_MS;
    const served = await step('NEW_CLIENT_SERVED', 'umbrella', deadline);
    const signedUp = session.simulator!.hasStep('NEW_CLIENT_SIGNED_UP', 'umbrella')!;
    expect(served.at).toBeGreaterThan(signedUp.at);
    const snap = session.simulator!.snapshot();
    for (const c of snap.clients) expect(c.liveVersion, `${c.clientId} has a live model`).toMatch(/^v\d+$/);
    expect(snap.clients.map((c) => c.clientId).sort()).toEqual(['acme', 'globex', 'hooli', 'initech', 'umbrella']);
    // Both request paths were answered.
    expect(snap.requests.http).toBeGreaterThan(0);
    expect(snap.requests.kafka).toBeGreaterThan(0);
    expect(snap.clients.reduce((a, c) => a + c.answered, 0)).toBeGreaterThan(snap.requests.pendingKafka);
    // Traffic goes to a client once the server knows it: no request was refused as for an unknown
    // client (before, a request right after umbrella's sign-up could race the server's registry).
    expect(Object.keys(snap.failures).filter((kind) => kind.includes('CLIENT_UNKNOWN'))).toEqual([]);
  }, STORY_TIMEOUT_MS + 10_000);

  it('retrains after the team change: the added team is served, the deletion asks for a retrain', async () => {
    const deadline = Date.now() + STORY_TIMEOUT_MS;
    const retrain = await step('RETRAIN_AFTER_TEAM_CHANGE', 'acme', deadline);
    const added = session.simulator!.hasStep('TEAM_ADDED', 'acme')!;
    expect(retrain.at).toBeGreaterThanOrEqual(added.at);
    expect(retrain.detail).toContain('(LABELS_CHANGED)');
    await step('TEAM_SERVED', 'acme', deadline);
    // Deleting a team asks for a retrain too. (Whether that candidate passes the trainer's gate
    // is the trainer's decision, see docs/simulator.md; the story asserts the platform reacted.)
    const removed = await step('RETRAIN_AFTER_TEAM_REMOVED', 'acme', deadline);
    expect(removed.at).toBeGreaterThanOrEqual(session.simulator!.hasStep('TEAM_REMOVED', 'acme')!.at);
  }, STORY_TIMEOUT_MS + 10_000);

  it('raises a quality alert after the drift, and retrains because of it', async () => {
    const deadline = Date.now() + STORY_TIMEOUT_MS;
    const alert = await step('ALERT', 'globex', deadline);
    const drift = session.simulator!.hasStep('DRIFT', 'globex')!;
    expect(alert.at).toBeGreaterThan(drift.at);
    const retrain = await step('RETRAIN_AFTER_ALERT', 'globex', deadline);
    expect(retrain.at).toBeGreaterThanOrEqual(alert.at);
    expect(retrain.detail).toContain('(QUALITY_DROP)');
  }, STORY_TIMEOUT_MS + 10_000);
});
