/** The trainer's public surface: what the CLI and benchmarks use (the rest of trainer/ is internal). */
export { startTrainer, RetrainHandler, type Trainer } from './consumer.ts';
export { loadTrainingSet, type TrainingSet, type TrainingExample } from './dataset.ts';
export type { Evaluation } from './evaluate.ts';
export { trainClient, trainerSettings, type TrainerSettings, type TrainOutcome, type TrainStage } from './pipeline.ts';
