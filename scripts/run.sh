#!/usr/bin/env bash
# Builds pht-server (release) and runs it. With no arguments it serves the embedded default:
# a PHT tunnel on 127.0.0.1:8443. Any arguments are passed on: scripts/run.sh -L "pht://:8443/:22"
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --locked --release -p pht-server -p pht-client
exec ./target/release/pht-server "$@"
