import { DependencyUnavailableError, EddyError } from '../common/errors.ts';
import type { EventHandler, ProcessorContext } from '../streams/index.ts';
import type { PredictionMade } from '../schemas/events.ts';
import type { ServerConfig } from '../common/config.ts';
import { checkInputLimits, type PredictRequest, type PredictionService } from './prediction-service.ts';

/** How long a batch with a request for an unknown client waits for the registry to catch up with the log. */
export const CATCH_UP_TIMEOUT_MS = 10_000;

/**
 * The Kafka predict path: PredictionRequested in, PredictionMade out, through the same
 * PredictionService as HTTP. Replicas share one consumer group, so each request is answered once
 * (at least once: a redelivered request yields events with the same derived eventIds, so
 * consumers of `predictions` dedupe it). A request that fails validation the HTTP API would
 * refuse is not retriable: the runner dead-letters it with the reason.
 *
 * A request for a client this server does not know is dead-lettered (CLIENT_UNKNOWN) only once the
 * server's registry has read the models and labels topics up to their end as of that moment
 * (`catchUp`, once per batch): a client that signed up a second before its first request has its
 * labels on the way, and dead-lettering that request answered nothing (`npm run bench` counted
 * one such request per run). When the registry cannot catch up in time, the batch waits and is
 * retried like any other unavailable dependency, uncommitted.
 */
export function kafkaPredictHandler(
  service: PredictionService,
  limits: Pick<ServerConfig, 'maxTextChars' | 'maxMetadataEntries' | 'maxMetadataBytes'>,
  catchUp?: (timeoutMs: number) => Promise<boolean>,
): EventHandler {
  let emit: ProcessorContext['emit'] | undefined;
  /** Per partition of prediction-requests, the highest offset read before a catch-up finished. */
  const covered = new Map<number, bigint>();
  return {
    async init(ctx) {
      emit = ctx.emit;
    },
    async handle(records) {
      // Every request is checked first, in order (a refusal throws for the call; the runner then
      // calls again record by record to dead-letter the refused one), then the requests of each
      // client are predicted together: the client's model borrowed once and their real-time
      // features read in one go (PredictionService.predictMany), as /predict/batch does.
      const requests: PredictRequest[] = [];
      for (const r of records) {
        if (r.event.name !== 'PredictionRequested') continue;
        const e = r.event.value;
        if (catchUp && !service.isKnown(e.clientId) && BigInt(r.offset) > (covered.get(r.partition) ?? -1n)) {
          if (!(await catchUp(CATCH_UP_TIMEOUT_MS))) {
            throw new DependencyUnavailableError('kafka', `the model registry did not catch up with the log within ${CATCH_UP_TIMEOUT_MS / 1000} s; a request for client '${e.clientId}', unknown so far, waits`);
          }
          // Every record of this call was read before the registry caught up: none needs asking
          // again (the runner calls again record by record to dead-letter the unknown ones).
          for (const x of records) if (BigInt(x.offset) > (covered.get(x.partition) ?? -1n)) covered.set(x.partition, BigInt(x.offset));
        }
        if (e.text.length === 0) throw new EddyError('INVALID_REQUEST', `PredictionRequested ${e.eventId}: text is empty`);
        checkInputLimits(limits, e.text, e.metadata);
        requests.push({ clientId: e.clientId, text: e.text, metadata: e.metadata, requestId: e.requestId, sourceEventId: e.eventId });
      }
      const byClient = new Map<string, number[]>();
      for (let i = 0; i < requests.length; i++) {
        const clientId = requests[i]!.clientId;
        const of = byClient.get(clientId);
        if (of) of.push(i);
        else byClient.set(clientId, [i]);
      }
      const answers: PredictionMade[][] = new Array(requests.length);
      for (const [clientId, indexes] of byClient) {
        const answered = await service.predictMany(clientId, indexes.map((i) => requests[i]!), 'KAFKA');
        for (let j = 0; j < indexes.length; j++) answers[indexes[j]!] = answered[j]!.events;
      }
      // In request order. Answers are written before the requests are committed: a crash in between re-answers (same ids).
      const out: Array<{ name: 'PredictionMade'; value: PredictionMade }> = [];
      for (const events of answers) for (const value of events) out.push({ name: 'PredictionMade', value });
      await emit!(out);
    },
  };
}
