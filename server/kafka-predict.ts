import { EddyError } from '../common/errors.ts';
import type { EventHandler, ProcessorContext } from '../streams/index.ts';
import type { PredictionMade } from '../schemas/events.ts';
import type { ServerConfig } from '../common/config.ts';
import { checkInputLimits, type PredictionService } from './prediction-service.ts';

/**
 * The Kafka predict path: PredictionRequested in, PredictionMade out, through the same
 * PredictionService as HTTP. Replicas share one consumer group, so each request is answered once
 * (at least once: a redelivered request yields events with the same derived eventIds, so
 * consumers of `predictions` dedupe it). A request that fails validation the HTTP API would
 * refuse, or names an unknown client, is not retriable: the runner dead-letters it with the reason.
 */
export function kafkaPredictHandler(
  service: PredictionService,
  limits: Pick<ServerConfig, 'maxTextChars' | 'maxMetadataEntries' | 'maxMetadataBytes'>,
): EventHandler {
  let emit: ProcessorContext['emit'] | undefined;
  return {
    async init(ctx) {
      emit = ctx.emit;
    },
    async handle(records) {
      const out: PredictionMade[] = [];
      for (const r of records) {
        if (r.event.name !== 'PredictionRequested') continue;
        const e = r.event.value;
        if (e.text.length === 0) throw new EddyError('INVALID_REQUEST', `PredictionRequested ${e.eventId}: text is empty`);
        checkInputLimits(limits, e.text, e.metadata);
        const { events } = await service.predict(
          { clientId: e.clientId, text: e.text, metadata: e.metadata, requestId: e.requestId, sourceEventId: e.eventId },
          'KAFKA',
        );
        out.push(...events);
      }
      // Answers are written before the requests are committed: a crash in between re-answers (same ids).
      await emit!(out.map((value) => ({ name: 'PredictionMade' as const, value })));
    },
  };
}
