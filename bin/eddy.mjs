#!/usr/bin/env node
// Eddy's command line. The sources are TypeScript run through tsx, so there is no build step
// between editing and running; `npm run typecheck` keeps them honest.
import { register } from 'tsx/esm/api';

register();
await import('../cli/main.ts');
