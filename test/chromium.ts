import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';

/** Flags for a headless Chromium that never reaches out to the network by itself. */
export const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

/**
 * Makes sure Debian's chromium is installed (a fresh CI machine lacks it): installs it once with
 * apt-get, under a lock so that parallel test files do not run apt twice. Fails with a message
 * that says what to do when it cannot.
 */
export function ensureChromium(): string {
  if (fs.existsSync(CHROMIUM)) return CHROMIUM;
  const script = `test -x ${CHROMIUM} || { (apt-get update -qq || true) && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }`;
  try {
    execFileSync('flock', [path.join(os.tmpdir(), 'eddy-chromium-install.lock'), 'sh', '-c', script], { stdio: ['ignore', 'ignore', 'pipe'], timeout: 900_000 });
  } catch (err) {
    const stderr = (err as { stderr?: Buffer }).stderr?.toString().trim().split('\n').slice(-3).join(' | ') ?? '';
    throw new Error(`the dashboard test needs Debian's chromium at ${CHROMIUM} and could not install it with apt-get (run as root: apt-get install -y chromium): ${stderr || (err as Error).message}`);
  }
  if (!fs.existsSync(CHROMIUM)) throw new Error(`apt-get install chromium finished but ${CHROMIUM} is missing`);
  return CHROMIUM;
}
