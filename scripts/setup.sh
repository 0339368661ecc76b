#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Safe to run again: each step
# checks first. Nothing is downloaded from outside the package registries.
#   scripts/setup.sh          Rust crates, the wasm toolchain (target, wasm-bindgen-cli, wasm-opt)
#   scripts/setup.sh --test   also what only the tests use: Chromium + ChromeDriver, curl
set -euo pipefail
cd "$(dirname "$0")/.."
FOR_TESTS=false
[ "${1:-}" = "--test" ] && FOR_TESTS=true

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
  log "cargo not found: this project needs a Rust toolchain (rustup, stable >= 1.85)"
  exit 1
fi

log "fetching crates"
cargo fetch --locked >/dev/null

# The wasm client (client-wasm/, web/, scripts/test-wasm.sh).
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi

# Must equal the wasm-bindgen crate version pinned in Cargo.toml.
WASM_BINDGEN_VERSION=0.2.130
if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $WASM_BINDGEN_VERSION"; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION (a few minutes)"
  # The CLI's own lock can pin crates the registry no longer has: fall back to resolving.
  cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --locked ||
    cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION"
fi

if $FOR_TESTS; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  command -v curl >/dev/null || missing+=(curl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
fi

if ! command -v npm >/dev/null; then
  log "npm not found: the wasm client needs Node >= 20 with npm"
  exit 1
fi
# binaryen (wasm-opt) and playwright-core, as locked in client-wasm/package-lock.json.
if [ ! client-wasm/node_modules/.package-lock.json -nt client-wasm/package-lock.json ]; then
  log "installing the npm tools of client-wasm (binaryen, playwright-core)"
  (cd client-wasm && npm ci --no-audit --no-fund)
fi
