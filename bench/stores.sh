#!/usr/bin/env bash
# SQLite against PostgreSQL ([store]) on this machine, same run, interleaved:
# site creations per second through the admin API (bench/sitesload.rs) and
# syslog lines per second into storage (bench/syslogload.rs), ROUNDS rounds,
# each round SQLite then PostgreSQL. Two `mgnt serve` processes with the same
# config but for [store]; a throwaway PostgreSQL cluster (Debian's server,
# default durability: fsync and synchronous_commit on, as SQLite's
# synchronous=FULL) as `postgres` on a free loopback port. Run as root.
#
#   cargo build --release --bin mgnt --example sitesload --example syslogload
#   bench/stores.sh [ROUNDS] [SITES] [LINES]
set -euo pipefail
ROUNDS=${1:-3}
SITES=${2:-2000}
LINES=${3:-500000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MGNT=${MGNT:-$ROOT/target/release/mgnt}
EX=$ROOT/target/release/examples
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
WORK=$(mktemp -d /tmp/mgnt-stores.XXXXXX)
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
  --auth-host=scram-sha-256 >/dev/null
runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/pg.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -c unix_socket_directories=$WORK" start >/dev/null
psql() { runuser -u postgres -- "$BIN/psql" -h "$WORK" -p "$PORT" -d postgres -tAc "$1" >/dev/null; }
psql "CREATE ROLE mgnt LOGIN PASSWORD 'bench'"
psql "CREATE DATABASE mgnt OWNER mgnt"

# server NAME DNS_PORT API_PORT SYSLOG_PORT [STORE]
server() {
  local d="$WORK/$1"
  mkdir -p "$d"
  cp -r "$ROOT/geoip" "$ROOT/zones" "$d/"
  sed -e "s/127.0.0.1:5300/127.0.0.1:$2/; s/\[::1\]:5300/[::1]:$2/; s/127.0.0.1:8053/127.0.0.1:$3/; s/127.0.0.1:5514/127.0.0.1:$4/" \
    "$ROOT/mgnt.toml" > "$d/mgnt.toml"
  printf '\n[[vpnlog.servers]]\nhost = "vpn-fra-1"\nregion = "europe1"\naddresses = ["127.0.0.1"]\n\n[provision]\npool = "100.64.0.0/10"\n' >> "$d/mgnt.toml"
  if [ -n "${5:-}" ]; then
    echo bench > "$d/db.password"
    chmod 600 "$d/db.password"
    printf '\n[store]\nurl = "postgres://mgnt@127.0.0.1:%s/mgnt"\npassword_file = "db.password"\n' "$PORT" >> "$d/mgnt.toml"
  fi
  (cd "$d" && exec "$MGNT" serve --config mgnt.toml >"$d/out" 2>"$d/err") &
  PIDS+=($!)
  for _ in $(seq 100); do
    curl -sf "127.0.0.1:$3/healthz" >/dev/null && [ -s "$d/state/admin.token" ] && return
    sleep 0.1
  done
  echo "server $1 did not start:" >&2; cat "$d/err" >&2; exit 1
}
server sqlite 25491 28491 25591
server postgresql 25492 28492 25592 store
sites() { "$EX/sitesload" "127.0.0.1:$1" "$WORK/$2/state/admin.token" "$SITES" 8; }
lines() { "$EX/syslogload" "127.0.0.1:$1" "127.0.0.1:$2" "$WORK/$3/state/admin.token" "$LINES" 4; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
printf '| round | store | sites/s | p50 ms | p99 ms | lines/s into storage |\n|---:|---|---:|---:|---:|---:|\n'
for r in $(seq "$ROUNDS"); do
  for s in sqlite postgresql; do
    if [ "$s" = sqlite ]; then api=28491; syslog=25591; else api=28492; syslog=25592; fi
    made=$(sites "$api" "$s")
    fed=$(lines "$syslog" "$api" "$s")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$r" "$s" "$(field per_s <<<"$made")" \
      "$(field p50_ms <<<"$made")" "$(field p99_ms <<<"$made")" "$(field lines_per_s <<<"$fed")"
  done
done
