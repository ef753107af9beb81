import { loadConfig } from '../common/config.ts';
import { stackUp } from '../cli/stack.ts';

/** Makes sure the real stack is running before any test (idempotent and fast when it already is). */
export default async function setup(): Promise<void> {
  const { ms, started } = await stackUp(loadConfig().home, (line) => process.stderr.write(`[stack] ${line}\n`));
  if (started.length > 0) process.stderr.write(`[stack] started ${started.join(', ')} in ${(ms / 1000).toFixed(1)} s\n`);
}
