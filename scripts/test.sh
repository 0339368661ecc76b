#!/usr/bin/env bash
# Installs what the tests need, then runs every test of the project.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh --test

echo "[test] formatting and lints" >&2
cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings

echo "[test] building binaries for the end-to-end tests" >&2
cargo build --locked --workspace --bins

echo "[test] running tests" >&2
cargo test --locked --workspace --no-fail-fast

echo "[test] the wasm client: Node, headless Chromium, the web page" >&2
bash scripts/test-wasm.sh
