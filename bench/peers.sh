#!/usr/bin/env bash
# Benchmarks mgnt against gdnsd and Knot DNS on this machine (loopback only).
# Installs the peers and dnsperf from Debian, builds mgnt and the generators,
# then runs bench/peers.py, which prints the table for bench/README.md.
#   bench/peers.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v gdnsd >/dev/null || ! command -v knotd >/dev/null || ! command -v dnsperf >/dev/null \
   || [ ! -e /usr/lib/x86_64-linux-gnu/knot/modules-3.2/geoip.so ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends gdnsd knot knot-module-geoip dnsperf >/dev/null
fi
cargo build --release --bin mgnt --examples
exec python3 bench/peers.py "${1:-3}" "${2:-5}"
