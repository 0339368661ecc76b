// Writes the package manifest of the generated pht-wasm package (client-wasm/pkg/):
// package.json with conditional exports (browsers and bundlers get the `web` build, Node
// the `nodejs` build), one package.json per build telling Node its module format, and the
// README. Run by scripts/build-wasm.sh after wasm-bindgen; version from Cargo.toml.
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const crate = join(here, '..');
const pkg = join(crate, 'pkg');

const cargo = readFileSync(join(crate, '..', 'Cargo.toml'), 'utf8');
const section = cargo.split(/^\[workspace\.package\]$/m)[1] ?? '';
const version = section.match(/^version\s*=\s*"([^"]+)"/m)?.[1];
if (!version) throw new Error('no version in [workspace.package] of Cargo.toml');

const web = { types: './web/pht_wasm.d.ts', default: './web/pht_wasm.js' };
const node = { types: './node/pht_wasm.d.ts', default: './node/pht_wasm.js' };
const manifest = {
  name: 'pht-wasm',
  version,
  description: "gost's Plain HTTP Tunnel (PHT) client for browsers and Node: TCP-like byte streams over plain HTTP GET/POST",
  license: 'MIT OR Apache-2.0',
  keywords: ['gost', 'pht', 'tunnel', 'proxy', 'wasm', 'socks5'],
  type: 'module',
  main: './node/pht_wasm.js',
  module: './web/pht_wasm.js',
  browser: './web/pht_wasm.js',
  types: './web/pht_wasm.d.ts',
  exports: {
    '.': {
      browser: web,
      node: node,
      import: web,
      require: node,
      default: web,
    },
    './web': web,
    './node': node,
    './package.json': './package.json',
  },
  files: ['web/', 'node/', 'README.md'],
  engines: { node: '>=20' },
};
writeFileSync(join(pkg, 'package.json'), JSON.stringify(manifest, null, 2) + '\n');
// Node reads each build's module format from the nearest package.json.
writeFileSync(join(pkg, 'web', 'package.json'), JSON.stringify({ type: 'module' }) + '\n');
writeFileSync(join(pkg, 'node', 'package.json'), JSON.stringify({ type: 'commonjs' }) + '\n');
copyFileSync(join(crate, 'README.md'), join(pkg, 'README.md'));
console.error(`[build-wasm] wrote pkg/package.json (pht-wasm ${version})`);
