// Types of bin/build.mjs (plain JavaScript: it runs before anything is compiled), for the tests.
export declare const ROOT: string;
export declare const ENTRY_POINTS: string[];
/** Throws an error with code EDDY_BUILD_FAILED when the sources do not build. */
export declare function currentBuild(opts?: { root?: string; entryPoints?: string[]; cacheDir?: string }): Promise<{
  /** The build's directory. */
  dir: string;
  /** Each entry point's source URL → its built file's URL. */
  files: Record<string, string>;
  /** Whether this call built it (false: an existing build matched the sources). */
  built: boolean;
}>;
