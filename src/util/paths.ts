// Where the repository is: every module that needs a path inside it starts here.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is src/util/paths.ts). */
export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
