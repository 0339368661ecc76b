#!/usr/bin/env bash
# Tests of the wasm client (client-wasm/) against real servers on 127.0.0.1:
#   1. wasm-bindgen tests (client-wasm/tests/) in Node, then in headless Chromium, with
#      fault-proxy processes cutting tunnels (FIN, RST, silence) for the fault tests, and
#      (Node) one cutting random connections under 10 tunnels for PHT_WASM_CHAOS_SECS
#      seconds (default 60; less for a quick run; PHT_WASM_CHAOS_SEED seeds its draws);
#   2. the demo page (web/) in headless Chromium on scripts/run.sh's default setup
#      (scripts/demo-args.sh, on free ports): every control clicked and its result checked,
#      phts over HTTP/2 with the server's self-made CA in a throw-away NSS database, no CORS
#      preflight (client-wasm/tests/js/page.mjs). Its screenshots are saved under this
#      script's temporary folder, and copied to $PAGE_SCREENSHOTS when that is set;
#   3. HTTP/3 from a page in headless Chromium (client-wasm/tests/js/altsvc.mjs, its own
#      pht-server): one phts listener with http3=true (HTTP/3 on the same port, same
#      tunnels, Alt-Svc), the CA in a throw-away NSS database; which protocol each request
#      took, a tunnel that moves to h3 midway, and the tunnels' bytes checked;
#   4. the Node example (client-wasm/examples/forward.mjs);
#   5. Node through squid (CONNECT denied) with undici's ProxyAgent: 64 MiB each way.
# PHT_WASM_ONLY=page,example (any of node, browser, page, altsvc, example, proxy) runs only
# those.
# Starts pht-server, fault-proxy and pht-middlebox (target/debug, built by
# `cargo build --workspace --bins`) and Node target servers, and stops them on exit.
# Tools: scripts/setup.sh (--test for squid, Chromium and certutil).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

log() { printf '\033[1m[test-wasm]\033[0m %s\n' "$*" >&2; }
only=${PHT_WASM_ONLY:-node,browser,page,altsvc,example,proxy}
part() { [[ ",$only," == *",$1,"* ]]; }

server_bin=${PHT_SERVER:-$root/target/debug/pht-server}
fault_bin=$root/target/debug/fault-proxy
middlebox_bin=$root/target/debug/pht-middlebox
if [ ! -x "$server_bin" ] || [ ! -x "$fault_bin" ] || [ ! -x "$middlebox_bin" ]; then
  log "building pht-server, fault-proxy, pht-middlebox"
  cargo build --locked -p pht-server -p pht-e2e --bins
fi

# scripts/test.sh has built it already.
[ "${PHT_WASM_BUILT:-}" = 1 ] || bash scripts/build-wasm.sh
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
node client-wasm/tests/js/targets.mjs "$tmp/ports.json" 33 2>"$tmp/targets.log" &
pids+=($!)
for _ in $(seq 100); do [ -s "$tmp/ports.json" ] && break; sleep 0.1; done
[ -s "$tmp/ports.json" ] || { cat "$tmp/targets.log" >&2; log "target servers did not start"; exit 1; }
port() { node -p "const p = require('$tmp/ports.json'); String($1)"; }
echo_port=$(port p.echo)
bulk_port=$(port p.bulk)
bye_port=$(port p.bye)
eof_port=$(port p.eof)
late_port=$(port p.late)
chaos_echo_port=$(port p.chaos)
http_port=$(port p.http)
stats_port=$(port p.stats)
dead_port=$(port p.dead)
reset_port=$(port p.reset)
read -r -a free <<<"$(port "p.free.join(' ')")"

fwd_echo=${free[0]} fwd_bye=${free[1]}
http=${free[2]} http_auth=${free[3]}
socks5=${free[4]} socks5_auth=${free[5]}
relay=${free[6]} relay_auth=${free[7]}
page_file=${free[8]} page_pht=${free[9]} page_phts=${free[28]} page_relay=${free[29]}
page_forward=${free[30]} page_echo=${free[31]}
example_listen=${free[10]} fwd_dead=${free[11]}
fwd_bulk=${free[12]}
# The fault proxies' ports, in this order (see start_faults): PHT/2 then PHT/1 tests.
faults=(cut:pull:fin cut:pull:rst cut:pull:silent cut:push:fin cut:push:rst cut:push:silent
  v1_cut:pull:fin v1_cut:pull:rst v1_cut:pull:silent v1_cut:push:fin v1_cut:push:rst v1_cut:push:silent)
fault_ports=("${free[@]:13:12}")
fwd_eof=${free[25]} chaos_server=${free[26]} chaos_proxy=${free[27]} fwd_late=${free[32]}
chaos_secs=${PHT_WASM_CHAOS_SECS:-60}
# Diagnosis only: a resumeTimeout (ms) for the random-cuts tunnels instead of the default.
chaos_resume=${PHT_WASM_CHAOS_RESUME_MS:+,chaos_resume_ms=$PHT_WASM_CHAOS_RESUME_MS}
chaos_seed=${PHT_WASM_CHAOS_SEED:-1}
auth="alice:s3cret@"
lo=127.0.0.1

# The servers the wasm tests and the example use.
"$server_bin" \
  -L "forward+pht://$lo:$fwd_echo/$lo:$echo_port?cors=*" \
  -L "forward+pht://$lo:$fwd_bye/$lo:$bye_port?cors=*" \
  -L "forward+pht://$lo:$fwd_eof/$lo:$eof_port?cors=*" \
  -L "forward+pht://$lo:$fwd_late/$lo:$late_port?cors=*&pushTimeout=1s&pushWait=300ms" \
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
# scripts/run.sh's default setup on free ports: the demo page and what it uses, in one
# process; -D logs every CORS preflight. Its HOME is here, so the phts listener makes its
# CA here and nothing under the real home is read or written.
demo_out=$(bash scripts/demo-args.sh page="$page_file" pht="$page_pht" phts="$page_phts" \
  relay="$page_relay" forward="$page_forward" echo="$page_echo")
mapfile -t demo <<<"$demo_out"
mkdir -p "$tmp/server-home"
HOME="$tmp/server-home" "$server_bin" -D "${demo[@]}" >"$tmp/page-server.log" 2>&1 &
pids+=($!)
# The random-cuts test's own server: its debug log shows every tunnel opened and ended.
"$server_bin" -D \
  -L "forward+pht://$lo:$chaos_server/$lo:$chaos_echo_port?cors=*&heartbeat=1s" \
  >"$tmp/chaos-server.log" 2>&1 &
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
for p in "$fwd_echo" "$fwd_bye" "$fwd_eof" "$fwd_late" "$fwd_dead" "$fwd_bulk" "$http" "$http_auth" "$socks5" \
  "$socks5_auth" "$relay" "$relay_auth" "$page_file" "$page_pht" "$page_phts" "$page_relay" \
  "$page_forward" "$page_echo" "$chaos_server"; do
  wait_port "$p"
done
log "servers up"

# One fault-proxy per (test set, kind, mode) in front of the bulk server, each cutting the
# first pull or push connection after 4 MB. A proxy cuts one connection only, so every test
# run gets a fresh set, on the same ports (they reach the tests at compile time).
fault_pids=()
fault_name() { local f=${faults[$1]}; echo "${f//:/_}"; }
start_faults() {
  local i f kind mode name
  for i in "${!faults[@]}"; do
    f=${faults[$i]#*:} kind=${f%:*} mode=${f#*:} name=$(fault_name "$i")
    "$fault_bin" --upstream "$lo:$fwd_bulk" --kind "$kind" --mode "$mode" --after 4000000 \
      --listen "$lo:${fault_ports[$i]}" >"$tmp/$name.out" 2>"$tmp/$name.log" &
    fault_pids+=($!)
    pids+=($!)
  done
  for i in "${!faults[@]}"; do
    name=$(fault_name "$i")
    for _ in $(seq 100); do grep -q '^port ' "$tmp/$name.out" 2>/dev/null && break; sleep 0.1; done
    grep -q '^port ' "$tmp/$name.out" || { cat "$tmp/$name.log" >&2; log "fault-proxy $name did not start"; exit 1; }
  done
}
# Stops the fault proxies; each must have made its cut (a test that survives a cut that
# never happened proves nothing).
stop_faults() {
  local p i name
  for p in "${fault_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${fault_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  fault_pids=()
  for i in "${!faults[@]}"; do
    name=$(fault_name "$i")
    if ! grep -q ': cut (' "$tmp/$name.log"; then
      cat "$tmp/$name.log" >&2
      log "fault-proxy $name never cut its connection"
      exit 1
    fi
  done
}

# The random cuts: a draw every 200 to 600 ms (see tests/src/fault.rs, RandomCuts).
chaos_pid=
start_chaos() {
  "$fault_bin" --upstream "$lo:$chaos_server" --mode random --every 200..600 --seed "$chaos_seed" \
    --listen "$lo:$chaos_proxy" >"$tmp/chaos.out" 2>"$tmp/chaos.log" &
  chaos_pid=$!
  pids+=($!)
  for _ in $(seq 100); do grep -q '^port ' "$tmp/chaos.out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^port ' "$tmp/chaos.out" || { cat "$tmp/chaos.log" >&2; log "the random fault-proxy did not start"; exit 1; }
}
# Stops it and checks what the random-cuts test went through: cuts (at least one a
# second), and on the server (its debug log counts its open tunnels) 10 tunnels opened and
# closed in order, none reset, none left open.
stop_chaos() {
  kill "$chaos_pid" 2>/dev/null || true
  wait "$chaos_pid" 2>/dev/null || true
  local cuts events opened closed reset open_now
  cuts=$(sed -n 's/^cuts //p' "$tmp/chaos.out")
  events=$(grep -E ' [A-Z]+ tunnel (opened|closed|reset) service=' "$tmp/chaos-server.log" || true)
  opened=$(grep -c ' tunnel opened ' <<<"$events" || true)
  closed=$(grep -c ' tunnel closed ' <<<"$events" || true)
  reset=$(grep -c ' tunnel reset ' <<<"$events" || true)
  open_now=$(tail -n 1 <<<"$events" | sed -n 's/.* tunnels=\([0-9]*\).*/\1/p')
  log "random cuts: $cuts connections cut in ${chaos_secs} s (seed $chaos_seed); server: $opened tunnels opened, $closed closed, $reset reset, ${open_now:-?} open"
  if [ -z "$cuts" ] || [ "$cuts" -lt "$chaos_secs" ]; then
    log "too few random cuts (want at least one a second)"
    exit 1
  fi
  if [ "$opened" != 10 ] || [ "$closed" != 10 ] || [ "$reset" != 0 ] || [ "$open_now" != 0 ]; then
    printf '%s\n' "$events" >&2
    log "the server's tunnels did not all close in order (want 10 opened, 10 closed, 0 reset, 0 open)"
    exit 1
  fi
}

cuts=""
for i in "${!faults[@]}"; do
  f=${faults[$i]#*:}
  cuts+=",${faults[$i]%%:*}_${f%:*}_${f#*:}=${fault_ports[$i]}"
done
export PHT_WASM_TEST="echo=$echo_port,bye=$bye_port,http_target=$http_port,stats=$stats_port,dead=$dead_port,fwd_echo=$fwd_echo,fwd_bye=$fwd_bye,fwd_eof=$fwd_eof,fwd_late=$fwd_late,fwd_dead=$fwd_dead,http=$http,http_auth=$http_auth,socks5=$socks5,socks5_auth=$socks5_auth,relay=$relay,relay_auth=$relay_auth,bulk=$bulk_port,fwd_bulk=$fwd_bulk,chaos=$chaos_proxy,chaos_secs=$chaos_secs$chaos_resume$cuts"
export CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner
# Browsers: the whole suite's limit (Node has none; `timeout` bounds both).
export WASM_BINDGEN_TEST_TIMEOUT=300

if part node; then
  log "wasm-bindgen tests in Node"
  start_faults
  start_chaos
  timeout 1200 cargo test --locked --target wasm32-unknown-unknown -p pht-wasm -- --nocapture
  stop_faults
  stop_chaos
fi

if part browser; then
  log "wasm-bindgen tests in headless Chromium"
  start_faults
  WASM_BINDGEN_USE_BROWSER=1 CHROMEDRIVER=/usr/bin/chromedriver \
    timeout 900 cargo test --locked --target wasm32-unknown-unknown -p pht-wasm -- --nocapture
  stop_faults
fi

if part page; then
  log "the demo page in headless Chromium, on scripts/run.sh's default setup"
  command -v certutil >/dev/null || { log "certutil is missing: bash scripts/setup.sh --test"; exit 1; }
  # The browser trusts the server's self-made CA through a throw-away NSS database in its
  # own HOME (Chromium reads $HOME/.pki/nssdb); no certificate error is ignored.
  ca="$tmp/server-home/.gost/auto-ca-cert.pem"
  [ -s "$ca" ] || { cat "$tmp/page-server.log" >&2; log "the phts listener made no CA at $ca"; exit 1; }
  nssdb="$tmp/browser-home/.pki/nssdb"
  mkdir -p "$nssdb"
  certutil -N -d "sql:$nssdb" --empty-password
  certutil -A -d "sql:$nssdb" -n "pht-server test CA" -t "C,," -i "$ca"
  shots="$tmp/page-screenshots"
  page_rc=0
  timeout 400 node client-wasm/tests/js/page.mjs \
    --page "http://$lo:$page_file/" \
    --ports "pht:$page_pht,phts:$page_phts,relay:$page_relay,forward:$page_forward,echo:$page_echo" \
    --home "$tmp/browser-home" --bare-home "$tmp/bare-browser-home" \
    --reset "$lo:$reset_port" --dead "$lo:$dead_port" --shots "$shots" --mib 16 || page_rc=$?
  if [ -n "${PAGE_SCREENSHOTS:-}" ]; then
    mkdir -p "$PAGE_SCREENSHOTS"
    cp "$shots"/*.png "$PAGE_SCREENSHOTS"/ 2>/dev/null || true
    log "the page test's screenshots: $PAGE_SCREENSHOTS"
  fi
  if [ "$page_rc" != 0 ]; then
    tail -n 50 "$tmp/page-server.log" >&2
    log "the page test failed (exit $page_rc)"
    exit 1
  fi
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
fi

if part altsvc; then
  log "HTTP/3 from the page: phts with http3=true, the CA trusted in NSS"
  command -v certutil >/dev/null || { log "certutil is missing: bash scripts/setup.sh --test"; exit 1; }
  # What Chromium does with Alt-Svc as it comes (QUIC refused for a locally-installed
  # root: h2), with that root allowed for QUIC (h2, then h3 in the middle of the first
  # tunnel, which carries on), with QUIC forced.
  timeout 300 node client-wasm/tests/js/altsvc.mjs --server "$server_bin"
fi

log "client-wasm/README.md quotes the generated TypeScript declarations"
node --input-type=module -e "
  import { readFileSync } from 'node:fs';
  import { apiTypes } from './client-wasm/tools/api-types.mjs';
  const types = apiTypes(readFileSync('client-wasm/pkg/web/pht_wasm.d.ts', 'utf8'));
  if (!readFileSync('client-wasm/README.md', 'utf8').includes(types)) {
    console.error('client-wasm/README.md is out of date; its API block should read:\\n' + types);
    process.exit(1);
  }"

if part example; then
  log "the Node example: client-wasm/examples/forward.mjs"
  timeout 300 node client-wasm/tests/js/example.mjs \
    --server "forward+pht://$lo:$fwd_echo" --listen "$lo:$example_listen" --mib 16
fi

if part proxy; then
  log "Node through squid (CONNECT denied), undici ProxyAgent with proxyTunnel: false"
  "$middlebox_bin" squid --host pht-server.test=$lo >"$tmp/squid.out" 2>"$tmp/squid.log" &
  pids+=($!)
  for _ in $(seq 300); do grep -q '^port ' "$tmp/squid.out" 2>/dev/null && break; sleep 0.1; done
  squid_port=$(sed -n 's/^port //p' "$tmp/squid.out")
  [ -n "$squid_port" ] || { cat "$tmp/squid.log" >&2; log "squid did not start"; exit 1; }
  timeout 300 node client-wasm/tests/js/proxy.mjs --proxy "http://$lo:$squid_port" \
    --bulk "forward+pht://pht-server.test:$fwd_bulk" --echo "forward+pht://pht-server.test:$fwd_echo" --mib 64
fi

if [ "$only" = node,browser,page,altsvc,example,proxy ]; then
  log "all wasm tests passed"
else
  log "passed: the parts asked for ($only)"
fi
