import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pidAlive } from '../common/shutdown.ts';

/**
 * The `group.instance.id` of a consumer (static membership, KIP-345). A member that comes back with
 * the id of one that died replaces it at once and gets its partitions without a rebalance; without
 * it the dead member holds them until the session timeout. The id must be stable across a restart
 * and unique among the live members of the group (a second member with the same id fences the first).
 *
 * - EDDY_INSTANCE_ID set (a pod name, a container name): that id, as it is.
 * - otherwise: the host name and the lowest slot not held by a live process of this host, claimed
 *   with a pid file per group under the temp directory. A process restarted after a crash finds its
 *   slot's holder dead and takes the slot (so its old id) back; two processes of one group on one
 *   host (scaling out on a laptop, tests) get different slots. Hand-written because what is claimed
 *   is "the lowest free slot whose holder is dead", which lock-file libraries (one lock, held or not)
 *   do not offer; a pid that the system reused only costs a new slot (recovery after the session
 *   timeout, as without static membership).
 */
export interface InstanceClaim {
  id: string;
  /** Frees the slot (a graceful stop); a crash leaves it to the next process of the group on this host. */
  release(): void;
}

const heldHere = new Set<string>();

const safe = (s: string) => s.replace(/[^A-Za-z0-9._-]/g, '_');

export function claimInstanceId(configured: string, groupId: string, dir = path.join(os.tmpdir(), 'eddy-instances')): InstanceClaim {
  if (configured) return { id: configured, release: () => undefined };
  const groupDir = path.join(dir, safe(groupId));
  fs.mkdirSync(groupDir, { recursive: true });
  const host = safe(os.hostname());
  for (let slot = 0; ; slot++) {
    const file = path.join(groupDir, String(slot));
    if (heldHere.has(file)) continue;
    try {
      fs.writeFileSync(file, String(process.pid), { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const holder = Number(fs.readFileSync(file, 'utf8').trim());
      if (Number.isInteger(holder) && holder > 0 && pidAlive(holder) && holder !== process.pid) continue;
      // The holder died (or is this process, from a runner that was never stopped): take the slot over.
      fs.writeFileSync(file, String(process.pid));
    }
    heldHere.add(file);
    return {
      id: `${host}-${slot}`,
      release() {
        if (!heldHere.delete(file)) return;
        try {
          if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.rmSync(file, { force: true });
          // The group's folder goes with its last slot (tests make thousands of short-lived groups).
          fs.rmdirSync(groupDir);
        } catch {
          // already gone, or other slots are still held
        }
      },
    };
  }
}
