#!/usr/bin/env bash
# Drain propagation between two `mgnt serve` nodes on one PostgreSQL
# database ([store]): the time from a drain (or undrain) answered 200 by
# node A until node B's API shows it, ROUNDS times each, reread_interval one
# hour (only the notification can carry it). A throwaway PostgreSQL cluster
# (Debian's server, run as `postgres` on a free loopback port) and both nodes
# run on this machine; everything is removed on exit. Run as root.
#
#   cargo build --release --bin mgnt && bench/propagation.sh [ROUNDS]
set -euo pipefail
command -v jq >/dev/null || { echo "bench/propagation.sh needs jq (apt-get install jq)" >&2; exit 1; }
ROUNDS=${1:-50}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MGNT=${MGNT:-$ROOT/target/release/mgnt}
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/mgnt-propagation.XXXXXX)
chown postgres "$WORK"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
PORT=$(( 20000 + RANDOM % 20000 ))
runuser -u postgres -- "$BIN/initdb" -D "$WORK/data" -U postgres --auth-local=trust \
  --auth-host=scram-sha-256 --no-sync >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK" start >/dev/null
psql() { runuser -u postgres -- "$BIN/psql" -h "$WORK" -p "$PORT" -d postgres -tAc "$1" >/dev/null; }
psql "CREATE ROLE mgnt LOGIN PASSWORD 'bench'"
psql "CREATE DATABASE mgnt OWNER mgnt"

# node NAME DNS_PORT API_PORT
node() {
  local d="$WORK/$1"
  mkdir -p "$d"
  cp -r "$ROOT/geoip" "$ROOT/zones" "$d/"
  echo bench > "$d/db.password"
  chmod 600 "$d/db.password"
  sed -e "s/127.0.0.1:5300/127.0.0.1:$2/; s/\[::1\]:5300/[::1]:$2/; s/127.0.0.1:8053/127.0.0.1:$3/; /^\[vpnlog\]/,\$d" \
    "$ROOT/mgnt.toml" > "$d/mgnt.toml"
  printf '\n[node]\nname = "%s"\n\n[store]\nurl = "postgres://mgnt@127.0.0.1:%s/mgnt"\npassword_file = "db.password"\nreread_interval = "1h"\n' \
    "$1" "$PORT" >> "$d/mgnt.toml"
  (cd "$d" && exec "$MGNT" serve --config mgnt.toml >"$d/out" 2>"$d/err") &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$3/healthz" >/dev/null && [ -s "$d/state/admin.token" ] && return
    sleep 0.1
  done
  echo "node $1 did not start:" >&2; cat "$d/err" >&2; exit 1
}
node a 25391 28391
node b 25392 28392
TA=$(cat "$WORK/a/state/admin.token"); TB=$(cat "$WORK/b/state/admin.token")

# Milliseconds from A's 200 until B shows `want` ("drained" or "undrained");
# each look at B (curl + jq) costs a few milliseconds, so the figure is an
# upper bound to within one look.
measure() {
  local action=$1 want=$2
  curl -sf -X POST -H "Authorization: Bearer $TA" -H 'Content-Type: application/json' \
    -d '{"reason":"bench"}' "127.0.0.1:28391/v1/regions/europe1/$action" >/dev/null
  local start=$(date +%s%N)
  while :; do
    local body
    body=$(curl -sf -H "Authorization: Bearer $TB" 127.0.0.1:28392/v1/regions)
    local drained
    drained=$(jq -r '.regions[] | select(.name == "europe1") | if .drain then "drained" else "undrained" end' <<<"$body")
    [ "$drained" = "$want" ] && break
  done
  echo $(( ($(date +%s%N) - start) / 1000000 ))
}
drains=(); undrains=()
for _ in $(seq "$ROUNDS"); do
  drains+=("$(measure drain drained)")
  undrains+=("$(measure undrain undrained)")
done
stats() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {printf "median %d ms, p90 %d ms, max %d ms (n=%d)", a[int((NR+1)/2)], a[int(NR*0.9+0.5)], a[NR], NR}'; }
echo "drain on A -> seen on B:   $(stats "${drains[@]}")"
echo "undrain on A -> seen on B: $(stats "${undrains[@]}")"
