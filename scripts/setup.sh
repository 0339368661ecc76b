#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Safe to run again: each step
# checks first. Nothing is downloaded from outside the package registries.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if ! command -v cargo >/dev/null; then
  log "cargo not found: this project needs a Rust toolchain (rustup, stable >= 1.85)"
  exit 1
fi

log "fetching crates"
cargo fetch --locked >/dev/null
