import fs from 'node:fs/promises';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { EddyError, errorMessage } from '../common/errors.ts';
import { nextVersion, versionNumber } from '../common/ids.ts';
import { decodeArtifact, encodeArtifact, sha256Hex, type ArtifactSection, type ModelArtifact, type ModelManifest, type ModelSelection } from './artifact.ts';

/** What the store knows about one published version of a client's model (small; no weights). */
export interface ModelVersionRef {
  clientId: string;
  modelVersion: string;
  uri: string;
  sha256: string;
  sizeBytes: number;
  createdAt: string;
  labels: string[];
  featurizerId: string;
  metrics: Record<string, number>;
  parentVersion: string | null;
  retrainEventId: string | null;
  trainingDataSha256: string;
  trainingExamples: number;
  backend: string;
  trainingMs: number;
  /** The model search's choice the version was trained with (absent in refs written by older builds). */
  selection?: ModelSelection;
}

export interface PrunePolicy {
  clientId: string;
  /** Keep the newest N versions (rollback needs at least 2). */
  keepLast: number;
  /** Never remove these (e.g. the live and canary versions), however old. */
  keepVersions?: string[];
}

export interface ModelStore {
  /** Stores an artifact (sections as its kind writes them); refuses (VERSION_EXISTS) a version that already exists with other content. */
  put(manifest: Omit<ModelManifest, 'weights'>, sections: readonly ArtifactSection[]): Promise<{ uri: string; sha256: string; sizeBytes: number }>;
  /** Loads and verifies an artifact; ARTIFACT_CORRUPT when its bytes do not hash to expectedSha256 or do not parse. */
  get(uri: string, expectedSha256: string): Promise<ModelArtifact>;
  /** Versions of a client, oldest first. */
  list(clientId: string): Promise<ModelVersionRef[]>;
  /** Removes old versions by policy; returns the removed version names. */
  prune(policy: PrunePolicy): Promise<string[]>;
}

const URI_PREFIX = 'eddy-store://sha256/';

/**
 * A model store on a file system, safe on a volume shared by trainers and servers:
 * - blobs are content-addressed (`blobs/<ab>/<sha256>.eddymodel`) and written atomically (temp
 *   file in the same directory, fsync, rename), so a reader sees a whole file or none;
 * - version refs (`clients/<client>/<version>.json`) are created with link(2), which fails if the
 *   name exists: two trainers racing for the same version cannot overwrite each other;
 * - URIs name the content, not a path (`eddy-store://sha256/<hex>`), so servers may mount the
 *   volume anywhere.
 */
export class FsModelStore implements ModelStore {
  constructor(readonly root: string) {}

  private blobPath(sha256: string): string {
    return path.join(this.root, 'blobs', sha256.slice(0, 2), `${sha256}.eddymodel`);
  }

  private clientDir(clientId: string): string {
    // Any client id maps to one safe directory name; long ids fall back to their hash.
    const safe = encodeURIComponent(clientId).replace(/\./g, '%2E').replace(/\*/g, '%2A');
    return path.join(this.root, 'clients', safe.length <= 180 ? safe : `sha256-${sha256Hex(clientId)}`);
  }

  private async writeAtomic(file: string, data: Buffer | string, exclusive: boolean): Promise<boolean> {
    await fs.mkdir(path.dirname(file), { recursive: true });
    const tmp = `${file}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
    const handle = await fs.open(tmp, 'w');
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    try {
      if (exclusive) {
        try {
          await fs.link(tmp, file);
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
          throw err;
        }
      } else {
        await fs.rename(tmp, file);
      }
      return true;
    } finally {
      if (exclusive) await fs.rm(tmp, { force: true });
    }
  }

  async put(manifest: Omit<ModelManifest, 'weights'>, sections: readonly ArtifactSection[]): Promise<{ uri: string; sha256: string; sizeBytes: number }> {
    if (versionNumber(manifest.modelVersion) === undefined) {
      throw new EddyError('INVALID_VERSION', `model version '${manifest.modelVersion}' is not v<N>`);
    }
    const bytes = encodeArtifact(manifest, sections);
    const sha256 = sha256Hex(bytes);
    const uri = `${URI_PREFIX}${sha256}`;
    try {
      await this.writeAtomic(this.blobPath(sha256), bytes, false);
      const ref: ModelVersionRef = {
        clientId: manifest.clientId, modelVersion: manifest.modelVersion, uri, sha256, sizeBytes: bytes.length,
        createdAt: manifest.createdAt, labels: manifest.labels, featurizerId: manifest.featurizer.id,
        metrics: manifest.metrics, parentVersion: manifest.parentVersion, retrainEventId: manifest.retrainEventId ?? null,
        trainingDataSha256: manifest.trainingDataSha256, trainingExamples: manifest.trainingExamples, backend: manifest.backend,
        trainingMs: manifest.trainingMs ?? 0, ...(manifest.selection ? { selection: manifest.selection } : {}),
      };
      const refFile = path.join(this.clientDir(manifest.clientId), `${manifest.modelVersion}.json`);
      const created = await this.writeAtomic(refFile, JSON.stringify(ref, null, 1), true);
      if (!created) {
        const existing = JSON.parse(await fs.readFile(refFile, 'utf8')) as ModelVersionRef;
        if (existing.sha256 !== sha256) {
          throw new EddyError('VERSION_EXISTS', `${manifest.clientId} ${manifest.modelVersion} already exists with other content (${existing.sha256.slice(0, 12)})`);
        }
      }
    } catch (err) {
      if (err instanceof EddyError) throw err;
      // A full or unmounted volume is an infrastructure problem: the request is retried later.
      throw new EddyError('MODEL_STORE_UNAVAILABLE', `cannot write to model store ${this.root}: ${errorMessage(err)}`, { retriable: true, cause: err });
    }
    return { uri, sha256, sizeBytes: bytes.length };
  }

  async get(uri: string, expectedSha256: string): Promise<ModelArtifact> {
    if (!uri.startsWith(URI_PREFIX)) throw new EddyError('ARTIFACT_CORRUPT', `'${uri}' is not a model store URI (${URI_PREFIX}<sha256>)`);
    const named = uri.slice(URI_PREFIX.length);
    if (!/^[0-9a-f]{64}$/.test(named)) throw new EddyError('ARTIFACT_CORRUPT', `'${uri}' does not name a sha256`);
    let bytes: Buffer;
    try {
      bytes = await fs.readFile(this.blobPath(named));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new EddyError('ARTIFACT_NOT_FOUND', `no artifact ${uri} in ${this.root}`, { cause: err });
      throw new EddyError('ARTIFACT_CORRUPT', `cannot read ${uri}: ${errorMessage(err)}`, { cause: err });
    }
    const actual = sha256Hex(bytes);
    if (actual !== expectedSha256 || actual !== named) {
      throw new EddyError('ARTIFACT_CORRUPT', `artifact ${uri} hashes to ${actual}, expected ${expectedSha256}`);
    }
    return decodeArtifact(bytes);
  }

  async list(clientId: string): Promise<ModelVersionRef[]> {
    let names: string[];
    try {
      names = await fs.readdir(this.clientDir(clientId));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw new EddyError('MODEL_STORE_UNAVAILABLE', `cannot list ${clientId} in ${this.root}: ${errorMessage(err)}`, { retriable: true, cause: err });
    }
    const refs: ModelVersionRef[] = [];
    for (const name of names) {
      const m = /^(v\d+)\.json$/.exec(name);
      if (!m) continue;
      try {
        refs.push(JSON.parse(await fs.readFile(path.join(this.clientDir(clientId), name), 'utf8')) as ModelVersionRef);
      } catch {
        // A ref removed by a concurrent prune between readdir and read: not an error.
      }
    }
    return refs.sort((a, b) => versionNumber(a.modelVersion)! - versionNumber(b.modelVersion)!);
  }

  /** The next version name for a client: max existing + 1 (v1 for a new client). */
  async nextVersion(clientId: string): Promise<string> {
    return nextVersion((await this.list(clientId)).map((r) => r.modelVersion));
  }

  async prune(policy: PrunePolicy): Promise<string[]> {
    const refs = await this.list(policy.clientId);
    const keep = new Set(policy.keepVersions ?? []);
    const keepLast = Math.max(1, policy.keepLast);
    const doomed = refs.slice(0, Math.max(0, refs.length - keepLast)).filter((r) => !keep.has(r.modelVersion));
    const kept = new Set(refs.filter((r) => !doomed.includes(r)).map((r) => r.sha256));
    for (const r of doomed) {
      await fs.rm(path.join(this.clientDir(policy.clientId), `${r.modelVersion}.json`), { force: true });
      if (!kept.has(r.sha256)) await fs.rm(this.blobPath(r.sha256), { force: true });
    }
    return doomed.map((r) => r.modelVersion);
  }
}
