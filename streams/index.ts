/** Everything Kafka: the catalogue, the serde, the producer, the consumer runtime and followers. */
export * from './codec.ts';
export * from './consumer.ts';
export * from './producer.ts';
export * from './topics.ts';
export type { Admin, GroupDescription, GroupOffsets, KafkaClient, NewTopic, OutgoingMessage, PartitionOffsets, TopicMessages } from './client.ts';
export { createKafkaClient } from './kafka.ts';
export { LogFollower, type FollowerOptions } from './follower.ts';
export { LagCollector, type LagSample } from './lag.ts';
export { connectStreams, type Streams } from './connect.ts';
