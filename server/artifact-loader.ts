import { parentPort, type Worker } from 'node:worker_threads';
import { EddyError, errorMessage } from '../common/errors.ts';
import type { Logger } from '../common/log.ts';
import { startThread } from '../common/threads.ts';
import type { ModelArtifact } from '../models/artifact.ts';
import { loadPredictor } from '../models/predictor.ts';
import { FsModelStore } from '../models/store.ts';
import type { ArtifactLoader } from './model-manager.ts';

/**
 * Model artifacts are read, verified (sha256) and decoded in a loader thread, so that a reload
 * (a new version of every hot model, as when a thousand clients retrain at once) does not take
 * turns with requests on the request thread. The decoded sections come back as transferred
 * ArrayBuffers (moved, not copied), whatever the model kind; building the predictor over them is
 * left here (~6 µs).
 * Errors keep their EddyError code (ARTIFACT_CORRUPT, ARTIFACT_NOT_FOUND), so the model manager
 * treats them exactly as before.
 */

type LoadRequest = { id: number; uri: string; sha256: string };
type LoadReply =
  | { id: number; artifact: ModelArtifact }
  | { id: number; error: { code: string; message: string; retriable: boolean } };

interface Pending {
  resolve(artifact: ModelArtifact): void;
  reject(err: Error): void;
}

export class ArtifactLoaderThread {
  private worker: Worker | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;

  constructor(private readonly storeDir: string, private readonly logger: Logger) {
    // Started now: the first cold load should not wait for a thread to boot (~0.3 s).
    this.start();
  }

  /** The loader the model manager uses. */
  readonly loader: ArtifactLoader = async (_clientId, info) => loadPredictor(await this.read(info.artifactUri, info.artifactSha256));

  /** Reads, verifies and decodes one artifact in the loader thread. */
  read(uri: string, sha256: string): Promise<ModelArtifact> {
    if (this.closed) return Promise.reject(new EddyError('SERVER_CLOSING', 'the artifact loader is closed'));
    const worker = this.worker ?? this.start();
    const id = this.nextId++;
    return new Promise<ModelArtifact>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      worker.postMessage({ id, uri, sha256 } satisfies LoadRequest);
    });
  }

  private start(): Worker {
    const worker = startThread(import.meta.url, 'runArtifactLoaderThread', { storeDir: this.storeDir }, 'eddy-artifact-loader');
    worker.on('message', (m: LoadReply) => {
      const p = this.pending.get(m.id);
      if (!p) return;
      this.pending.delete(m.id);
      if ('artifact' in m) p.resolve(m.artifact);
      else p.reject(new EddyError(m.error.code, m.error.message, { retriable: m.error.retriable }));
    });
    worker.on('error', (err) => this.logger.error({ err: errorMessage(err) }, 'artifact loader thread failed'));
    worker.on('exit', (code) => {
      if (this.worker === worker) this.worker = undefined;
      // Loads in flight fail (the manager logs them and retries after its failure TTL); the
      // next load starts a new thread.
      for (const [id, p] of this.pending) {
        this.pending.delete(id);
        p.reject(new EddyError('ARTIFACT_LOADER_FAILED', `the artifact loader thread exited (code ${code}) during the load`, { retriable: true }));
      }
      if (!this.closed) this.logger.error({ code }, 'artifact loader thread exited; the next load starts a new one');
    });
    this.worker = worker;
    return worker;
  }

  async close(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = undefined;
    await worker?.terminate();
  }
}

/** Body of the loader thread: answers load requests with transferred weights, concurrently. */
export function runArtifactLoaderThread(data: { storeDir: string }): void {
  const port = parentPort;
  if (!port) throw new Error('runArtifactLoaderThread must run in a worker thread');
  const store = new FsModelStore(data.storeDir);
  port.on('message', (req: LoadRequest) => {
    store.get(req.uri, req.sha256).then(
      (artifact) => {
        // Each section is its own ArrayBuffer (decodeArtifact copies), so moving them is safe.
        const buffers = Object.values(artifact.sections).map((a) => a.buffer as ArrayBuffer);
        port.postMessage({ id: req.id, artifact } satisfies LoadReply, buffers);
      },
      (err: unknown) => {
        const e = err instanceof EddyError ? err : undefined;
        port.postMessage({ id: req.id, error: { code: e?.code ?? 'ARTIFACT_CORRUPT', message: errorMessage(err), retriable: e?.retriable ?? false } } satisfies LoadReply);
      },
    );
  });
}
