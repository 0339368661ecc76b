#!/usr/bin/env bash
# Tests of the wasm client (client-wasm/) against real servers on 127.0.0.1:
#   1. wasm-bindgen tests (client-wasm/tests/) in Node, then in headless Chromium, with
#      fault-proxy processes cutting tunnels (FIN, RST, silence) for the fault tests;
#   2. the demo page (web/) in headless Chromium, cross-origin, with no CORS preflight;
#   3. the Node example (client-wasm/examples/forward.mjs);
#   4. Node through squid (CONNECT denied) with undici's ProxyAgent: 64 MiB each way.
# Starts pht-server, fault-proxy and pht-middlebox (target/debug, built by
# `cargo build --workspace --bins`) and Node target servers, and stops them on exit.
# Tools: scripts/setup.sh (--test for squid and Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\033[1m[test-wasm]\033[0m %s\n' "$*" >&2; }

server_bin=${PHT_SERVER:-$root/target/debug/pht-server}
fault_bin=$root/target/debug/fault-proxy
middlebox_bin=$root/target/debug/pht-middlebox
if [ ! -x "$server_bin" ] || [ ! -x "$fault_bin" ] || [ ! -x "$middlebox_bin" ]; then
  log "building pht-server, fault-proxy, pht-middlebox"
  cargo build --locked -p pht-server -p pht-e2e --bins
fi

bash scripts/build-wasm.sh
log "cargo clippy -p pht-wasm --target wasm32-unknown-unknown"
cargo clippy --locked -p pht-wasm --target wasm32-unknown-unknown --all-targets -- -D warnings

tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

# Target servers and free ports for our own servers.
node client-wasm/tests/js/targets.mjs "$tmp/ports.json" 19 2>"$tmp/targets.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/ports.json" ] && break; sleep 0.1; done
[ -s "$tmp/ports.json" ] || { cat "$tmp/targets.log" >&2; log "target servers did not start"; exit 1; }
port() { node -p "const p = require('$tmp/ports.json'); String($1)"; }
echo_port=$(port p.echo)
bulk_port=$(port p.bulk)
bye_port=$(port p.bye)
http_port=$(port p.http)
stats_port=$(port p.stats)
dead_port=$(port p.dead)
read -r -a free <<<"$(port "p.free.join(' ')")"

fwd_echo=${free[0]} fwd_bye=${free[1]}
http=${free[2]} http_auth=${free[3]}
socks5=${free[4]} socks5_auth=${free[5]}
relay=${free[6]} relay_auth=${free[7]}
page_file=${free[8]} page_pht=${free[9]}
example_listen=${free[10]} fwd_dead=${free[11]}
fwd_bulk=${free[12]}
# The fault proxies' ports, in this order (see start_faults).
faults=(pull:fin pull:rst pull:silent push:fin push:rst push:silent)
fault_ports=("${free[@]:13:6}")
auth="alice:s3cret@"
lo=127.0.0.1

# The servers the wasm tests and the example use.
"$server_bin" \
  -L "forward+pht://$lo:$fwd_echo/$lo:$echo_port?cors=*" \
  -L "forward+pht://$lo:$fwd_bye/$lo:$bye_port?cors=*" \
  -L "forward+pht://$lo:$fwd_dead/$lo:$dead_port?cors=*" \
  -L "forward+pht://$lo:$fwd_bulk/$lo:$bulk_port?cors=*&heartbeat=1s" \
  -L "http+pht://$lo:$http?cors=*" \
  -L "http+pht://$auth$lo:$http_auth?cors=*" \
  -L "socks5+pht://$lo:$socks5?cors=*" \
  -L "socks5+pht://$auth$lo:$socks5_auth?cors=*" \
  -L "relay+pht://$lo:$relay?cors=*" \
  -L "relay+pht://$auth$lo:$relay_auth?cors=*" \
  >"$tmp/server.log" 2>&1 &
pids+=($!)
# One process serves the demo page and the tunnels it opens; -D logs every CORS preflight.
"$server_bin" -D \
  -L "file://$lo:$page_file?dir=web" \
  -L "http+pht://$lo:$page_pht?cors=*" \
  >"$tmp/page-server.log" 2>&1 &
pids+=($!)

wait_port() {
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/$lo/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  cat "$tmp/server.log" "$tmp/page-server.log" >&2
  log "nothing listens on port $1"
  exit 1
}
for p in "$fwd_echo" "$fwd_bye" "$fwd_dead" "$fwd_bulk" "$http" "$http_auth" "$socks5" "$socks5_auth" \
  "$relay" "$relay_auth" "$page_file" "$page_pht"; do
  wait_port "$p"
done
log "servers up"

# One fault-proxy per (kind, mode) in front of the bulk server, each cutting the first pull
# or push connection after 4 MB. A proxy cuts one connection only, so every test run gets
# a fresh set, on the same ports (they reach the tests at compile time).
fault_pids=()
start_faults() {
  local i kind mode
  for i in "${!faults[@]}"; do
    kind=${faults[$i]%:*} mode=${faults[$i]#*:}
    "$fault_bin" --upstream "$lo:$fwd_bulk" --kind "$kind" --mode "$mode" --after 4000000 \
      --listen "$lo:${fault_ports[$i]}" >"$tmp/fault-$kind-$mode.out" 2>>"$tmp/faults.log" &
    fault_pids+=($!)
    pids+=($!)
  done
  for i in "${!faults[@]}"; do
    kind=${faults[$i]%:*} mode=${faults[$i]#*:}
    for _ in $(seq 100); do grep -q '^port ' "$tmp/fault-$kind-$mode.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^port ' "$tmp/fault-$kind-$mode.out" || { cat "$tmp/faults.log" >&2; log "fault-proxy $kind $mode did not start"; exit 1; }
  done
}
stop_faults() {
  local p
  for p in "${fault_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${fault_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  fault_pids=()
}

cuts=""
for i in "${!faults[@]}"; do
  kind=${faults[$i]%:*} mode=${faults[$i]#*:}
  cuts+=",cut_${kind}_$mode=${fault_ports[$i]}"
done
export PHT_WASM_TEST="echo=$echo_port,bye=$bye_port,http_target=$http_port,stats=$stats_port,dead=$dead_port,fwd_echo=$fwd_echo,fwd_bye=$fwd_bye,fwd_dead=$fwd_dead,http=$http,http_auth=$http_auth,socks5=$socks5,socks5_auth=$socks5_auth,relay=$relay,relay_auth=$relay_auth,bulk=$bulk_port,fwd_bulk=$fwd_bulk$cuts"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
export WASM_BINDGEN_TEST_TIMEOUT=120

log "wasm-bindgen tests in Node"
start_faults
timeout 1200 cargo test --locked --target wasm32-unknown-unknown -p pht-wasm -- --nocapture
stop_faults

log "wasm-bindgen tests in headless Chromium"
start_faults
WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER=/usr/bin/chromedriver \
  timeout 900 cargo test --locked --target wasm32-unknown-unknown -p pht-wasm -- --nocapture
stop_faults

log "the demo page in headless Chromium"
timeout 300 node client-wasm/tests/js/page.mjs \
  --page "http://$lo:$page_file/" --server "http://$lo:$page_pht" \
  --target "$lo:$http_port" --echo "$lo:$echo_port" --mib 16 \
  ${PAGE_SCREENSHOT:+--screenshot "$PAGE_SCREENSHOT"}
if ! grep -q 'GET /pkg/pht_wasm_bg.wasm 200' "$tmp/page-server.log"; then
  cat "$tmp/page-server.log" >&2
  log "the page server's debug log does not show the page being served"
  exit 1
fi
preflights=$(grep -c 'CORS preflight' "$tmp/page-server.log" || true)
if [ "$preflights" != 0 ]; then
  grep 'CORS preflight' "$tmp/page-server.log" >&2
  log "the page caused $preflights CORS preflights; expected none"
  exit 1
fi
log "the page server answered 0 CORS preflights"

log "client-wasm/README.md quotes the generated TypeScript declarations"
node --input-type=module -e "
  import { readFileSync } from 'node:fs';
  import { apiTypes } from './client-wasm/tools/api-types.mjs';
  const types = apiTypes(readFileSync('client-wasm/pkg/web/pht_wasm.d.ts', 'utf8'));
  if (!readFileSync('client-wasm/README.md', 'utf8').includes(types)) {
    console.error('client-wasm/README.md is out of date; its API block should read:\\n' + types);
    process.exit(1);
  }"

log "the Node example: client-wasm/examples/forward.mjs"
timeout 300 node client-wasm/tests/js/example.mjs \
  --server "forward+pht://$lo:$fwd_echo" --listen "$lo:$example_listen" --mib 16

log "Node through squid (CONNECT denied), undici ProxyAgent with proxyTunnel: false"
"$middlebox_bin" squid --host pht-server.test=$lo >"$tmp/squid.out" 2>"$tmp/squid.log" &
pids+=($!)
for _ in $(seq 300); do grep -q '^port ' "$tmp/squid.out" 2>/dev/null && break; sleep 0.1; done
squid_port=$(sed -n 's/^port //p' "$tmp/squid.out")
[ -n "$squid_port" ] || { cat "$tmp/squid.log" >&2; log "squid did not start"; exit 1; }
timeout 300 node client-wasm/tests/js/proxy.mjs --proxy "http://$lo:$squid_port" \
  --bulk "forward+pht://pht-server.test:$fwd_bulk" --echo "forward+pht://pht-server.test:$fwd_echo" --mib 64

log "all wasm tests passed"
