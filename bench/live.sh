#!/usr/bin/env bash
# The live view with many routers: one `mgnt serve` (release build, the
# shipped config plus [provision], [routers] and [live]) and
# bench/liveload.rs, which makes ROUTERS sites, serves a RouterOS API
# stand-in on each site's tunnel address, opens two WebSocket viewers per
# router and measures the server's CPU and memory at rest and streaming,
# ROUNDS times over WINDOW seconds (see bench/README.md, "Live view").
#
# Everything runs in a throwaway network namespace (unshare -n) whose
# loopback takes 100.64.0.0/10 as local addresses: nothing leaves the
# machine, and the namespace goes away with the script. Run as root.
#
#   bench/live.sh [ROUNDS] [ROUTERS] [WINDOW] [KEY=VALUE ...]
#
# Extra KEY=VALUE arguments go to the driver (viewers, interval_ms,
# log_every, opening). MGNT and LIVELOAD name other builds; NO_BUILD=1 skips
# the build.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
MGNT=${MGNT:-$TARGET/release/mgnt}
LIVELOAD=${LIVELOAD:-$TARGET/release/examples/liveload}
MGNT=$(realpath -m "$MGNT"); LIVELOAD=$(realpath -m "$LIVELOAD")

if [ -z "${MGNT_LIVE_BENCH_NETNS:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "bench/live.sh needs root (a network namespace)" >&2; exit 1; }
  if [ -z "${NO_BUILD:-}" ]; then
    (cd "$ROOT" && cargo build --release --bin mgnt --example liveload)
  fi
  exec env MGNT_LIVE_BENCH_NETNS=1 unshare --net -- "$0" "$@"
fi

ROUNDS=${1:-3}
ROUTERS=${2:-1000}
WINDOW=${3:-20}
shift $(( $# < 3 ? $# : 3 ))

# In the namespace: loopback only, the sites' pool local on it.
ip link set lo up
ip route add local 100.64.0.0/10 dev lo

WORK=$(mktemp -d /tmp/mgnt-live.XXXXXX)
PID=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# A thousand routers and two thousand viewers hold some 3,000 sockets in
# each process.
ulimit -n "$(ulimit -Hn)"

cp -r "$ROOT/geoip" "$ROOT/zones" "$WORK/"
sed -e '/^\[vpnlog\]/,$d' "$ROOT/mgnt.toml" > "$WORK/mgnt.toml"
cat >> "$WORK/mgnt.toml" <<EOF

[provision]
data_dir = "state"
pool = "100.64.0.0/22"
auth = "sha1"

[routers]
listen = "127.0.0.1:8090"

[live]
# Every ticket made with the admin token is one user's.
max_streams_per_user = $(( ROUTERS * 4 ))
linger = "2s"
EOF
(cd "$WORK" && RUST_LOG=warn exec "$MGNT" serve --config mgnt.toml >"$WORK/out" 2>"$WORK/err") &
PID=$!
for _ in $(seq 200); do
  curl -sf 127.0.0.1:8053/healthz >/dev/null 2>&1 && [ -s "$WORK/state/admin.token" ] && break
  sleep 0.1
done
[ -s "$WORK/state/admin.token" ] || { echo "mgnt did not start:" >&2; cat "$WORK/err" >&2; exit 1; }
echo "mgnt $($MGNT --version 2>/dev/null || echo) pid $PID, open files up to $(ulimit -n); $(nproc) cores" >&2

status=0
"$LIVELOAD" 127.0.0.1:8053 127.0.0.1:8090 "$WORK/state/admin.token" "$PID" \
  routers="$ROUTERS" rounds="$ROUNDS" window="$WINDOW" "$@" || status=$?
if [ -s "$WORK/err" ]; then
  echo "mgnt's log (warnings and errors):" >&2
  tail -n 20 "$WORK/err" >&2
fi
exit "$status"
