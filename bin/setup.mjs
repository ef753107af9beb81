#!/usr/bin/env node
// First-run set-up used by `npm test` and `npm run demo`: installs dependencies when
// node_modules is missing or older than package-lock.json or a file in patches/ (npm ci's
// postinstall applies those to node_modules with patch-package). Plain Node (no dependencies),
// so it runs on a fresh clone. No dependency needs an install script, a native build or a system
// package (see README, "Install scripts"): the Kafka client, @platformatic/kafka, is pure
// JavaScript, so npm's own cache (~/.npm) is all a second clone reuses.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const lock = path.join(root, 'package-lock.json');
const marker = path.join(root, 'node_modules', '.package-lock.json');
const patches = path.join(root, 'patches');
const newest = Math.max(
  fs.statSync(lock).mtimeMs,
  ...(fs.existsSync(patches) ? fs.readdirSync(patches).map((name) => fs.statSync(path.join(patches, name)).mtimeMs) : []),
);
const stale = !fs.existsSync(marker) || fs.statSync(marker).mtimeMs < newest;
if (stale) {
  process.stderr.write('[setup] installing dependencies (npm ci)…\n');
  const r = spawnSync('npm', ['ci', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: root, stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write('[setup] npm ci failed; see the output above\n');
    process.exit(r.status ?? 1);
  }
}
