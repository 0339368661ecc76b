#!/usr/bin/env bash
# Prints pht-server's arguments for the demo, one per line: what scripts/run.sh serves with
# no arguments, and what the page test (scripts/test-wasm.sh) serves on free ports. Every
# address is on loopback. web/app.mjs's defaults are these ports; `?ports=` moves them.
#   bash scripts/demo-args.sh [name=port ...]   names: page pht phts relay forward echo
set -euo pipefail
declare -A port=([page]=8080 [pht]=8443 [phts]=8444 [relay]=8445 [forward]=8446 [echo]=7007)
for a in "$@"; do
  name=${a%%=*} value=${a#*=}
  if [ -z "${port[$name]+x}" ] || ! [[ "$value" =~ ^[0-9]{1,5}$ ]]; then
    echo "demo-args.sh: \"$a\" is not one of: ${!port[*]} (as name=port)" >&2
    exit 2
  fi
  port[$name]=$value
done
lo=127.0.0.1
# cors=*: the page (another origin: another port) opens the tunnels.
printf '%s\n' \
  -L "pht://$lo:${port[pht]}?cors=*" \
  -L "phts://$lo:${port[phts]}?cors=*" \
  -L "relay+pht://$lo:${port[relay]}?cors=*" \
  -L "forward+pht://$lo:${port[forward]}/$lo:${port[echo]}?cors=*" \
  -L "echo://$lo:${port[echo]}" \
  -L "file://$lo:${port[page]}?dir=web"
