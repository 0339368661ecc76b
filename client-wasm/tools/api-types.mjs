// Prints the public API declarations (ConnectOptions, Tunnel, connect) from the generated
// TypeScript declarations, as client-wasm/README.md quotes them. scripts/test-wasm.sh
// checks that the README still matches.
//   node client-wasm/tools/api-types.mjs [client-wasm/pkg/web/pht_wasm.d.ts]
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export function apiTypes(dts) {
  const wanted = [/^export interface ConnectOptions\b/, /^export class Tunnel\b/, /^export function connect\b/];
  const out = [];
  let comment = [];
  let block = null;
  for (const line of dts.split('\n')) {
    if (block) {
      block.push(line);
      if (line === '}') {
        out.push(block.join('\n'));
        block = null;
      }
    } else if (line.startsWith('/**') || (comment.length && !comment.at(-1).endsWith('*/'))) {
      comment.push(line);
    } else if (wanted.some((w) => w.test(line))) {
      const decl = [...comment, line];
      comment = [];
      if (line.endsWith('{')) block = decl;
      else out.push(decl.join('\n'));
    } else {
      comment = [];
    }
  }
  return out.join('\n\n') + '\n';
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const here = dirname(fileURLToPath(import.meta.url));
  const file = process.argv[2] ?? join(here, '..', 'pkg', 'web', 'pht_wasm.d.ts');
  process.stdout.write(apiTypes(readFileSync(file, 'utf8')));
}
