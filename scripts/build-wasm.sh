#!/usr/bin/env bash
# Builds the pht-wasm package for browsers and Node:
#   client-wasm/pkg/web/   wasm-bindgen --target web     (ES module; `await init()` first)
#   client-wasm/pkg/node/  wasm-bindgen --target nodejs  (CommonJS, importable from ESM)
#   client-wasm/pkg/package.json  exports: browser/import -> web, node/require -> node
# and copies the web build to web/pkg/ for the demo page. wasm-opt -Oz comes from the npm
# package binaryen (client-wasm/node_modules); scripts/setup.sh installs the tools.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[build-wasm]\033[0m %s\n' "$*" >&2; }

WASM_BINDGEN_VERSION=0.2.130
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WASM_BINDGEN_VERSION"; then
  log "wasm-bindgen $WASM_BINDGEN_VERSION is missing: run scripts/setup.sh"
  exit 1
fi
if [ ! -x client-wasm/node_modules/.bin/wasm-opt ]; then
  log "installing the npm tools of client-wasm (binaryen)"
  (cd client-wasm && npm ci --no-audit --no-fund >&2)
fi

# The wasm-release profile (Cargo.toml) is tuned for size: opt-level "z", fat LTO, one
# codegen unit. Panic locations name their source files: without the registry's absolute
# prefix they are 1.2 KB shorter, and the same on every machine.
remap=
for src in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
  # (RUSTFLAGS splits on spaces: a path with one is left as it is.)
  if [ -d "$src" ] && [[ $src != *" "* ]]; then remap+=" --remap-path-prefix=$src="; fi
done
log "cargo build --profile wasm-release --target wasm32-unknown-unknown -p pht-wasm"
RUSTFLAGS="${RUSTFLAGS:-}$remap" \
  cargo build --locked --profile wasm-release --target wasm32-unknown-unknown -p pht-wasm
target_dir="${CARGO_TARGET_DIR:-target}"
wasm="$target_dir/wasm32-unknown-unknown/wasm-release/pht_wasm.wasm"

pkg=client-wasm/pkg
rm -rf "$pkg/web" "$pkg/node"
mkdir -p "$pkg"
for t in web nodejs; do
  out="$pkg/${t%js}"
  wasm-bindgen --target "$t" --out-dir "$out" "$wasm"
  # --converge runs -Oz until it stops shrinking; the producers and target-features
  # sections only name the tools and the wasm features, which nothing reads at run time.
  client-wasm/node_modules/.bin/wasm-opt -Oz --converge --strip-producers --strip-target-features \
    "$out/pht_wasm_bg.wasm" -o "$out/pht_wasm_bg.wasm"
done
node client-wasm/tools/make-package.mjs

# The demo page imports ./pkg/pht_wasm.js; Node scripts in client-wasm/ import `pht-wasm`.
rm -rf web/pkg
cp -R "$pkg/web" web/pkg
ln -sfn ../pkg client-wasm/node_modules/pht-wasm

size=$(wc -c < "$pkg/web/pht_wasm_bg.wasm")
gz=$(gzip -9c "$pkg/web/pht_wasm_bg.wasm" | wc -c)
log "done: $pkg (wasm $size bytes after wasm-opt, $gz gzipped), web/pkg"
