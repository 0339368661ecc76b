#!/usr/bin/env bash
# Installs what is needed, builds pht-server, pht-client and the wasm package (release),
# and runs pht-server. With no arguments it serves the default: a PHT tunnel endpoint on
# 127.0.0.1:8443 (gost's auto handler: HTTP and SOCKS proxy; CORS open for the page) and
# the web/ demo page on http://127.0.0.1:8080/, which opens tunnels from the browser.
# Arguments replace the default: scripts/run.sh -L "pht://:8443/127.0.0.1:22"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked --release -p pht-server -p pht-client
bash scripts/build-wasm.sh
if [ $# -eq 0 ]; then
  echo "pht-server: PHT on 127.0.0.1:8443, demo page on http://127.0.0.1:8080/" >&2
  set -- -L "pht://127.0.0.1:8443?cors=*" -L "file://127.0.0.1:8080?dir=web"
fi
exec ./target/release/pht-server "$@"
