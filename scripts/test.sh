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
# tests/tests/scale_out.rs runs the wasm client under Node beside the native clients.
bash scripts/build-wasm.sh
export PHT_WASM_BUILT=1

# Every runner's summary lines are kept, to print one total at the end.
log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "[test] running tests" >&2
cargo test --locked --workspace --no-fail-fast 2>&1 | tee -a "$log"

echo "[test] the wasm client: Node, headless Chromium, the web page" >&2
bash scripts/test-wasm.sh 2>&1 | tee -a "$log"

# One closing line for the whole run: the sum of every "test result:" line above.
awk '/test result: /{for(i=1;i<=NF;i++){if($i~/^passed;?/)p+=$(i-1);if($i~/^failed;?/)f+=$(i-1)}} END{printf "all tests: %d passed, %d failed\n",p,f}' "$log"
