/** The processors' public surface: what the CLI and benchmarks use (the rest of processors/ is internal). */
export { parseProcessorNames, PROCESSOR_NAMES, startProcessors, type ProcessorName, type RunningProcessors } from './run.ts';
export { PROCESSORS, type ProcessorSpec } from './registry.ts';
export { replay } from './replay.ts';
