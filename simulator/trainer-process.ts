import { loadConfig } from '../common/config.ts';
import { createLogger } from '../common/log.ts';
import { connectStreams, onShutdownSignal } from '../streams/index.ts';
import { startTrainer } from '../trainer/consumer.ts';

/**
 * The trainer's retrain consumer as a process, for the demo, the demo test and the platform
 * benchmark while the CLI has no command that runs it (`eddy train` trains one client once).
 * It runs exactly what such a command would: trainer/consumer.ts `startTrainer` on the
 * configuration from the environment, stopped gracefully by SIGTERM/SIGINT.
 * simulator/platform.ts prefers `eddy trainer run` as soon as the CLI has it.
 */
const config = loadConfig();
const logger = createLogger('trainer', config.logLevel);
const streams = await connectStreams(config, 'eddy-trainer');
const trainer = await startTrainer(streams, config);
logger.info('retrain consumer running');
onShutdownSignal(async () => {
  await trainer.stop();
  await streams.close();
}, logger);
