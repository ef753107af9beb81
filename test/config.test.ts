import { describe, expect, it } from 'vitest';
import { loadConfig, describeConfig } from '../common/config.ts';
import { ConfigError } from '../common/errors.ts';

describe('configuration', () => {
  it('has working defaults for the local stack', () => {
    const c = loadConfig({});
    expect(c.kafkaBrokers).toEqual(['127.0.0.1:9092']);
    expect(c.schemaRegistryUrl).toBe('http://127.0.0.1:8081/apis/ccompat/v7');
    expect(c.redisUrl).toBe('redis://127.0.0.1:6379');
    expect(c.clickhouseUrl).toBe('http://127.0.0.1:8123');
    expect(c.topicPrefix).toBe('eddy.');
    expect(c.partitions).toBe(6);
  });

  it('parses and types the variables it is given', () => {
    const c = loadConfig({ EDDY_KAFKA_BROKERS: 'a:1,b:2', EDDY_PARTITIONS: '12', EDDY_TOPIC_PREFIX: 'x-' });
    expect(c.kafkaBrokers).toEqual(['a:1', 'b:2']);
    expect(c.partitions).toBe(12);
    expect(c.topicPrefix).toBe('x-');
  });

  it('names every bad variable in one error', () => {
    let error: unknown;
    try {
      loadConfig({ EDDY_KAFKA_BROKERS: 'no-port', EDDY_PARTITIONS: 'many', EDDY_REDIS_URL: 'http://x' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(ConfigError);
    const message = (error as Error).message;
    expect(message).toContain('EDDY_KAFKA_BROKERS="no-port"');
    expect(message).toContain('EDDY_PARTITIONS="many"');
    expect(message).toContain('EDDY_REDIS_URL="http://x"');
  });

  it('refuses topic prefixes that could escape the namespace', () => {
    expect(() => loadConfig({ EDDY_TOPIC_PREFIX: 'a b' })).toThrow(/EDDY_TOPIC_PREFIX/);
    expect(() => loadConfig({ EDDY_CLICKHOUSE_DATABASE: 'x;drop' })).toThrow(/EDDY_CLICKHOUSE_DATABASE/);
  });

  it('describes every variable it reads', () => {
    const names = describeConfig().map((v) => v.name);
    expect(names).toContain('EDDY_KAFKA_BROKERS');
    for (const v of describeConfig()) expect(v.description.length).toBeGreaterThan(10);
  });
});

describe('configuration reference', () => {
  it('docs/configuration.md is generated from the schema and up to date', async () => {
    const fs = await import('node:fs');
    const { configurationMarkdown } = await import('../common/config.ts');
    expect(fs.readFileSync('docs/configuration.md', 'utf8')).toBe(configurationMarkdown());
  });
});

describe('configuration errors never print secrets', () => {
  it('hides key values and URL credentials', () => {
    let message = '';
    try {
      loadConfig({ EDDY_SERVER_ADMIN_KEY: 'short', EDDY_REDIS_URL: 'http://user:hunter2@redis:6379' });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain('EDDY_REDIS_URL="http://***@redis:6379"');
    expect(message).not.toContain('hunter2');
    expect(message).toContain('EDDY_SERVER_ADMIN_KEY=<5 characters, hidden>');
    expect(message).not.toContain('"short"');
  });
});
