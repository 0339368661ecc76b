#!/usr/bin/env bash
# Installs what building and testing need on a fresh machine. Safe to run again: each step
# checks first. Nothing is downloaded from outside the package registries.
#   scripts/setup.sh          Rust crates, the wasm toolchain (target, wasm-bindgen-cli, wasm-opt)
#   scripts/setup.sh --test   also what only the tests use: Chromium + ChromeDriver, curl,
#                             certutil (NSS tools), nginx and squid (installed without
#                             starting their services)
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

# Packages whose install would start a system service (nginx on :80, squid on :3128): the
# tests run their own instances on free loopback ports, so none is started. A temporary
# policy-rc.d (exit 101 = "action forbidden") keeps invoke-rc.d from starting them; an
# existing one (as in many container images) is left alone.
apt_install_no_start() {
  local policy=/usr/sbin/policy-rc.d ours=false
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# written by pht scripts/setup.sh while installing packages\nexit 101\n' |
      as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    ours=true
  fi
  local rc=0
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" || rc=$?
  if $ours; then as_root rm -f "$policy"; fi
  # Started anyway (no invoke-rc.d, or a policy that allows it): stop, as in a container
  # without systemd; with systemd, also keep them from starting at boot.
  local svc
  for svc in nginx squid; do
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
      as_root systemctl disable --now "$svc" >/dev/null 2>&1 || true
    elif [ -x "/etc/init.d/$svc" ]; then
      as_root "/etc/init.d/$svc" stop >/dev/null 2>&1 || true
    fi
  done
  return $rc
}

if $FOR_TESTS; then
  missing=()
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
  command -v curl >/dev/null || missing+=(curl)
  # certutil: the page test trusts the server's self-made CA in a throw-away NSS database,
  # the store Chromium reads, to open phts tunnels from the page.
  command -v certutil >/dev/null || missing+=(libnss3-tools)
  services=()
  # nginx and squid: middleboxes of tests/tests/field.rs (run by tests/src/middlebox.rs).
  [ -x /usr/sbin/nginx ] || services+=(nginx)
  [ -x /usr/sbin/squid ] || services+=(squid)
  if [ ${#missing[@]} -gt 0 ] || [ ${#services[@]} -gt 0 ]; then
    as_root apt-get update
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} (apt)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
  if [ ${#services[@]} -gt 0 ]; then
    pkgs=()
    for p in "${services[@]}"; do
      if [ "$p" = nginx ]; then
        # Debian's `nginx` (bookworm and later); older releases only have the flavours.
        # (Not `apt-cache ... | grep -q`: with pipefail, grep quitting early fails the pipe.)
        policy=$(apt-cache policy nginx 2>/dev/null || true)
        if [[ "$policy" == *"Candidate: "[0-9]* ]]; then
          pkgs+=(nginx)
        else
          pkgs+=(nginx-light)
        fi
      else
        pkgs+=("$p")
      fi
    done
    log "installing ${pkgs[*]} (apt, services not started)"
    apt_install_no_start "${pkgs[@]}"
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
