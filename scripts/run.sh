#!/usr/bin/env bash
# Installs what is needed, builds pht-server, pht-client and the wasm package (release),
# and runs pht-server. With no arguments it serves the demo (scripts/demo-args.sh), all on
# 127.0.0.1: the web/ page on http://127.0.0.1:8080/, which opens tunnels from the browser,
# and what its controls use: gost's auto handler (HTTP and SOCKS proxy) over PHT on :8443
# and over PHTS (TLS, HTTP/2; self-made certificate) on :8444, a relay handler on :8445, a
# forward handler on :8446 to an echo target on :7007 (CORS open for the page).
# Arguments replace the default: scripts/run.sh -L "pht://:8443/127.0.0.1:22"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked --release -p pht-server -p pht-client
bash scripts/build-wasm.sh
if [ $# -eq 0 ]; then
  demo_out=$(bash scripts/demo-args.sh)
  mapfile -t demo <<<"$demo_out"
  echo "pht-server: the demo page on http://127.0.0.1:8080/ (PHT on 127.0.0.1:8443; for phts" \
    "from the page, trust the CA it logs: README, \"The demo page over phts\")" >&2
  set -- "${demo[@]}"
fi
exec ./target/release/pht-server "$@"
