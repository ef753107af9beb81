import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';

function eddy(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['bin/eddy.mjs', ...args], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('eddy CLI', () => {
  it('--help lists the subcommands and how to configure them', () => {
    const r = eddy(['--help']);
    expect(r.code).toBe(0);
    for (const cmd of ['stack', 'topics', 'events', 'config', 'demo']) expect(r.stdout).toMatch(new RegExp(`^  ${cmd}\\b`, 'm'));
    expect(r.stdout).toContain('EDDY_');
  });

  it("processors run --help names every processor of the registry (the CLI writes them without loading the processors)", async () => {
    const { PROCESSOR_NAMES } = await import('../processors/registry.ts');
    const { PROCESSOR_NAMES_HELP } = await import('../cli/processors-commands.ts');
    expect(PROCESSOR_NAMES_HELP.split(',')).toEqual([...PROCESSOR_NAMES]);
    const r = eddy(['processors', 'run', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(PROCESSOR_NAMES_HELP);
  });

  it('an unknown command exits 2 with a hint, the commander convention', () => {
    const r = eddy(['frobnicate']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown command 'frobnicate'/);
  });

  it('a bad variable is reported in one line naming it, without a stack trace', () => {
    const r = eddy(['stack', 'status'], { EDDY_KAFKA_BROKERS: 'nonsense' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('eddy: invalid configuration: EDDY_KAFKA_BROKERS="nonsense" must match pattern "^[^,\\s:]+:\\d+(,[^,\\s:]+:\\d+)*$"');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('stack status shows every service up with version and endpoint', () => {
    const r = eddy(['stack', 'status', '--json']);
    expect(r.code).toBe(0);
    const rows = JSON.parse(r.stdout) as Array<{ name: string; up: boolean; version: string; endpoint: string }>;
    expect(rows.map((x) => x.name)).toEqual(['redis', 'clickhouse', 'kafka', 'registry']);
    for (const row of rows) expect(row.up, row.name).toBe(true);
    expect(rows.find((x) => x.name === 'kafka')!.version).toMatch(/^Apache Kafka 4\./);
    expect(rows.find((x) => x.name === 'registry')!.version).toMatch(/^Apicurio Registry 3\./);
    expect(rows.find((x) => x.name === 'clickhouse')!.version).toMatch(/^ClickHouse \d+\./);
    expect(rows.find((x) => x.name === 'redis')!.version).toMatch(/^Redis \d+\./);
  });

  it('stack up is idempotent: a second run finds everything up and starts nothing', () => {
    const r = eddy(['stack', 'up']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('(all already running)');
  });

  it('events send validates: an invalid event is refused with the field named and nothing is sent', () => {
    const r = eddy(['events', 'send', 'LabeledExample', '{"clientId":"acme","exampleId":"e1","text":7,"label":"x","source":"IMPORT"}'],
      { EDDY_TOPIC_PREFIX: `clitest${Date.now()}.` , EDDY_LOG_LEVEL: 'error' });
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toBe('eddy: invalid LabeledExample: text: expected string, got number 7');
  });
});
