import { defineConfig } from 'vitest/config';

// Tests run against the real stack (Kafka, registry, Redis, ClickHouse); test/global-setup.ts
// starts it when needed. Each test file isolates itself with unique topic/key/database names.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default'],
  },
});
