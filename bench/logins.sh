#!/usr/bin/env bash
# Logins at once: CLIENTS OpenVPN clients (default 200) start together against a
# real OpenVPN server; the time until every one holds its site's address, with
# the logins answered by `mgnt agent` (management interface,
# --management-client-auth) or by the via-file hook (`mgnt auth-verify`), in
# interleaved rounds (agent, via-file, agent, via-file, ...) against the same
# control plane and the same sites.
#
#   cargo build --release --bin mgnt
#   bench/logins.sh [ROUNDS] [CLIENTS]        # as root; default 3 rounds, 200 clients
#
# MGNT=FILE runs another build (a copy keeps a rebuild from swapping the binary
# mid-run: the agent and the hook are started anew every round and every login).
#
# Needs root, iproute2 (`ip netns`), openvpn 2.6, openssl, jq, curl, nft (the
# agent's firewall). Everything runs in two network namespaces made here (link-local
# 169.254.71.0/24 between them); they, their processes and the work directory
# are removed on exit, also on failure (KEEP=1 keeps the work directory).
set -euo pipefail

ROUNDS=${1:-3}
CLIENTS=${2:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MGNT=${MGNT:-$ROOT/target/release/mgnt}
NET=169.254.71
ID=$$
NS_S=mgnt-logins-s-$ID # control plane, OpenVPN server, agent
NS_C=mgnt-logins-c-$ID # the clients
VETH_S=blgs$ID
VETH_C=blgc$ID
TIMEOUT=${TIMEOUT:-300} # seconds a round may take before it counts as failed

die() {
	echo "logins.sh: $*" >&2
	exit 1
}
[[ $(id -u) == 0 ]] || die "needs root (network namespaces)"
for t in ip openvpn openssl jq nft curl; do
	command -v "$t" >/dev/null || die "\`$t\` is not installed"
done
[[ -x $MGNT ]] || die "no $MGNT: cargo build --release --bin mgnt"

WORK=$(mktemp -d /tmp/mgnt-logins.XXXXXX)

# Ends every process in a namespace of ours (only ours are in them). With TERM
# the launching shell is spared: it reaps its clients and exits by itself.
kill_ns() {
	local ns=$1 sig=${2:-TERM} pid pids=()
	for pid in $(ip netns pids "$ns" 2>/dev/null || true); do
		[[ $sig == TERM && $(cat "/proc/$pid/comm" 2>/dev/null) == bash ]] && continue
		pids+=("$pid")
	done
	((${#pids[@]} == 0)) || kill "-$sig" "${pids[@]}" 2>/dev/null || true
}

# Waits up to $2 seconds (default 10) until namespace $1 runs nothing, then kills what is left.
drain_ns() {
	local ns=$1 secs=${2:-10} i
	for ((i = 0; i < secs * 10; i++)); do
		[[ -z $(ip netns pids "$ns" 2>/dev/null || true) ]] && return 0
		sleep 0.1
	done
	kill_ns "$ns" KILL
	sleep 0.5
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for ns in "$NS_C" "$NS_S"; do
		if ip netns list | grep -qw "$ns"; then
			kill_ns "$ns" TERM
			drain_ns "$ns" 5
			ip netns del "$ns" 2>/dev/null || true
		fi
	done
	wait 2>/dev/null || true
	if [[ ${KEEP:-0} == 1 ]]; then
		echo "work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- namespaces -------------------------------------------------------------
ip netns add "$NS_S"
ip netns add "$NS_C"
ip link add "$VETH_S" type veth peer name "$VETH_C"
ip link set "$VETH_S" netns "$NS_S"
ip link set "$VETH_C" netns "$NS_C"
ip -n "$NS_S" addr add "$NET.1/24" dev "$VETH_S"
ip -n "$NS_C" addr add "$NET.2/24" dev "$VETH_C"
for pair in "$NS_S $VETH_S" "$NS_C $VETH_C"; do
	set -- $pair
	ip -n "$1" link set lo up
	ip -n "$1" link set "$2" up
done

# --- PKI (a CA and the server's certificate, EC keys) -----------------------
mkdir -p "$WORK/vpn"
(
	cd "$WORK/vpn"
	ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
	openssl req -x509 $ec -keyout ca.key -out ca.crt -days 2 -subj /CN=mgnt-bench-ca 2>/dev/null
	openssl req $ec -keyout server.key -out server.csr -subj /CN=mgnt-bench-server 2>/dev/null
	printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\nextendedKeyUsage=serverAuth\n' >ext.cnf
	openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out server.crt \
		-days 2 -extfile ext.cnf 2>/dev/null
)

# --- the control plane ------------------------------------------------------
AGENT_TOKEN=agent-token-for-vpn1-0123456789
echo "vpn1:$AGENT_TOKEN" >"$WORK/agents.token"
echo "$AGENT_TOKEN" >"$WORK/vpn/agent.token"
echo "management-pw-0123" >"$WORK/vpn/management.pw"
CONFIG=$WORK/mgnt.toml
cat >"$CONFIG" <<EOF
[dns]
listen = ["127.0.0.1:15300"]
zones_dir = "$ROOT/zones"

[api]
listen = "127.0.0.1:18053"
token_file = "$WORK/state/admin.token"
audit_log = "$WORK/state/audit.log"
agent_token_file = "$WORK/agents.token"

[geoip]
database = "$ROOT/geoip/geo-whois-asn-country.mmdb"
centroids = "$ROOT/geoip/country-centroids.csv"

[[geo]]
name = "mgnt.mkcld.io"
ttl = 60
regions = ["europe1", "us1"]

[regions.europe1]
host = "europe1.mkcld.io"
location = [50.11, 8.68]
[regions.us1]
host = "us1.mkcld.io"
location = [39.04, -77.49]

[provision]
data_dir = "$WORK/state"
pool = "100.64.0.0/10"
auth = "sha1"
hook_token_file = "$WORK/state/hook.token"

[vpnlog]
listen = "127.0.0.1:15514"
data_dir = "$WORK/state"
[[vpnlog.servers]]
host = "vpn1"
region = "europe1"
EOF

RUST_LOG=error ip netns exec "$NS_S" "$MGNT" serve --config "$CONFIG" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVE=$!
for ((i = 0; i < 300; i++)); do
	grep -q '^listening api ' "$WORK/serve.out" 2>/dev/null && break
	kill -0 $! 2>/dev/null || die "mgnt serve exited: $(cat "$WORK/serve.err")"
	sleep 0.1
done
grep -q '^listening api ' "$WORK/serve.out" || die "mgnt serve did not listen"

cli() { ip netns exec "$NS_S" "$MGNT" "$@" --config "$CONFIG"; }

# --- the sites, created once; each client gets its own credentials -------------
mkdir -p "$WORK/clients"
echo "creating $CLIENTS sites" >&2
for ((i = 0; i < CLIENTS; i++)); do
	cli site create >"$WORK/clients/$i.json"
	jq -r '.site.username, .secret' "$WORK/clients/$i.json" >"$WORK/clients/$i.creds"
	jq -r '.site.address' "$WORK/clients/$i.json" >"$WORK/clients/$i.addr"
	cat >"$WORK/clients/$i.ovpn" <<EOF
client
dev tun$i
proto tcp-client
remote $NET.1 8443
nobind
ca $WORK/vpn/ca.crt
auth-user-pass $WORK/clients/$i.creds
auth-nocache
auth-retry none
data-ciphers AES-256-CBC
cipher AES-256-CBC
auth SHA1
connect-retry 1 1
machine-readable-output
verb 3
EOF
done
[[ $(sort -u "$WORK"/clients/*.addr | wc -l) == "$CLIENTS" ]] || die "sites share addresses"

# --- the two OpenVPN servers' configs (one runs at a time, on the same port) ---
# via-file: the fragment and ccd files `mgnt site export` writes (the hook is
# `mgnt --config ... auth-verify`, asking the control plane on its loopback).
cli site export "$WORK/export" --region europe1 >/dev/null
grep -q 'auth-user-pass-verify' "$WORK/export/server.conf" || die "no verify hook in the export"
cat >"$WORK/vpn/server-viafile.ovpn" <<EOF
local $NET.1
ca $WORK/vpn/ca.crt
cert $WORK/vpn/server.crt
key $WORK/vpn/server.key
dh none
config $WORK/export/server.conf
machine-readable-output
verb 3
EOF
# agent: logins over the management interface, no script, no ccd files.
cat >"$WORK/vpn/server-agent.ovpn" <<EOF
local $NET.1
port 8443
proto tcp-server
dev tun
mode server
tls-server
topology subnet
ifconfig 100.64.0.1 255.192.0.0
push "topology subnet"
push "route-gateway 100.64.0.1"
data-ciphers AES-256-CBC
data-ciphers-fallback AES-256-CBC
auth SHA1
username-as-common-name
verify-client-cert none
keepalive 10 60
ca $WORK/vpn/ca.crt
cert $WORK/vpn/server.crt
key $WORK/vpn/server.key
dh none
management 127.0.0.1 7506 $WORK/vpn/management.pw
management-client-auth
machine-readable-output
verb 3
EOF
cat >"$WORK/vpn/agent.toml" <<EOF
[agent]
management = "127.0.0.1:7506"
management_password_file = "$WORK/vpn/management.pw"
control = "http://127.0.0.1:18053"
token_file = "$WORK/vpn/agent.token"
cache_dir = "$WORK/agent-cache"
openvpn_config = "$WORK/vpn/server-agent.ovpn"
metrics = "127.0.0.1:9105"
EOF

# One value from the agent's metrics (0 when absent).
agent_metric() {
	ip netns exec "$NS_S" curl -s --max-time 5 http://127.0.0.1:9105/metrics |
		awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }'
}

# Waits until file $1 has a line matching $2 (process $3 alive), $4 seconds at most.
wait_line() {
	local file=$1 pattern=$2 pid=$3 secs=${4:-30} i
	for ((i = 0; i < secs * 10; i++)); do
		grep -q -- "$pattern" "$file" 2>/dev/null && return 0
		kill -0 "$pid" 2>/dev/null || die "process for $file exited: $(tail -5 "$file")"
		sleep 0.1
	done
	die "no '$pattern' in $file within $secs s: $(tail -5 "$file")"
}

# CPU seconds of process $1: its own, or ("children") that of the children it waited for.
TICK=$(getconf CLK_TCK)
cpu() {
	awk -v t="$TICK" -v c="${2:-self}" '{ print (c == "self" ? $14 + $15 : $16 + $17) / t }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# The server namespace's TcpExt counter $1 (ListenDrops: SYNs and connections
# its listening sockets dropped, their backlog full).
tcpext() {
	ip netns exec "$NS_S" awk -v k="$1" '$1 == "TcpExt:" { if (!n) { for (i = 2; i <= NF; i++) col[$i] = i; n = 1 } else print $col[k] }' /proc/net/netstat
}

RESULTS=$WORK/results.tsv
: >"$RESULTS"

# One round: the server (and the agent) started and ready, then all clients at once.
round() {
	local n=$1 mode=$2 dir=$WORK/round-$1-$2 server agent=
	mkdir -p "$dir"
	ip netns exec "$NS_S" openvpn --config "$WORK/vpn/server-$mode.ovpn" >"$dir/server.log" 2>&1 &
	server=$!
	wait_line "$dir/server.log" "Initialization Sequence Completed" "$server" 20
	if [[ $mode == agent ]]; then
		RUST_LOG=info NO_COLOR=1 ip netns exec "$NS_S" "$MGNT" agent --config "$WORK/vpn/agent.toml" \
			>/dev/null 2>"$dir/agent.log" &
		agent=$!
		wait_line "$dir/agent.log" "credentials read in full" "$agent" 30
		wait_line "$dir/agent.log" "answering OpenVPN logins" "$agent" 30
	fi
	sleep 1

	# All clients at once: one shell in the clients' namespace starts them back to back.
	local t0 got i serve0 drops0
	serve0=$(cpu "$SERVE")
	drops0=$(tcpext ListenDrops)
	t0=$(date +%s.%N)
	ip netns exec "$NS_C" bash -c '
		for ((i = 0; i < $1; i++)); do
			openvpn --config "$2/clients/$i.ovpn" --log "$3/$i.log" >/dev/null 2>&1 &
		done
		date +%s.%N >"$3/launched"
		wait' logins "$CLIENTS" "$WORK" "$dir" &
	local launcher=$!
	local deadline=$((SECONDS + TIMEOUT))
	while :; do
		got=$(grep -l "Initialization Sequence Completed" "$dir"/[0-9]*.log 2>/dev/null | wc -l || true)
		((got == CLIENTS)) && break
		if grep -q "AUTH_FAILED" "$dir"/[0-9]*.log 2>/dev/null; then
			die "round $n ($mode): a client was refused: $(grep -l AUTH_FAILED "$dir"/[0-9]*.log | head -3)"
		fi
		((SECONDS < deadline)) || die "round $n ($mode): $got of $CLIENTS clients up after $TIMEOUT s"
		sleep 0.2
	done

	# Every client holds exactly its site's address (checked on the interface itself).
	ip -n "$NS_C" -4 -o addr show >"$dir/addrs"
	for ((i = 0; i < CLIENTS; i++)); do
		grep -q " tun$i \+inet $(cat "$WORK/clients/$i.addr")/10 " "$dir/addrs" ||
			die "round $n ($mode): tun$i lacks $(cat "$WORK/clients/$i.addr"): $(grep " tun$i " "$dir/addrs")"
	done
	[[ $(grep -c ' tun[0-9]* \+inet ' "$dir/addrs") == "$CLIENTS" ]] || die "round $n ($mode): extra tunnels"

	# Times from OpenVPN's own microsecond timestamps (--machine-readable-output).
	local stats
	stats=$(
		for ((i = 0; i < CLIENTS; i++)); do
			awk '/Initialization Sequence Completed/ { print $1; exit }' "$dir/$i.log"
		done | sort -n | awk -v t0="$t0" -v n="$CLIENTS" '
			{ t[NR] = $1 - t0 }
			END { printf "%.3f\t%.3f\t%.3f\t%.1f", t[1], t[int((n + 1) / 2)], t[n], n / t[n] }'
	)
	# The agent answered every one of these logins.
	if [[ -n $agent ]]; then
		got=$(agent_metric 'mgnt_agent_logins_total{result="allowed"}')
		[[ $got == "$CLIENTS" ]] || die "round $n (agent): the agent allowed $got logins, not $CLIENTS"
	fi

	local drops
	drops=$(($(tcpext ListenDrops) - drops0))
	ip netns exec "$NS_S" ss -Hltn "sport = :8443" | awk '{ print $3 }' >"$dir/backlog"

	# CPU seconds spent on the round: the OpenVPN server, the hook processes it
	# ran and waited for (via-file), the agent, the control plane, the clients.
	local cpu_server cpu_hooks cpu_agent=0 cpu_serve cpu_clients=0 pid
	cpu_server=$(cpu "$server")
	cpu_hooks=$(cpu "$server" children)
	[[ -n $agent ]] && cpu_agent=$(cpu "$agent")
	cpu_serve=$(awk -v a="$(cpu "$SERVE")" -v b="$serve0" 'BEGIN { print a - b }')
	for pid in $(ip netns pids "$NS_C"); do
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == openvpn ]] || continue
		cpu_clients=$(awk -v a="$cpu_clients" -v b="$(cpu "$pid")" 'BEGIN { print a + b }')
	done
	# Where each client's time went (means): TCP connect (with SYN retries),
	# TLS handshake up to "Peer Connection Initiated", and from there (the
	# login decided, the address pushed) to "Initialization Sequence Completed".
	local phases
	phases=$(
		for ((i = 0; i < CLIENTS; i++)); do
			awk '/Attempting to establish TCP/ && !a { a = $1 } /TCP connection established/ { b = $1 }
				/Peer Connection Initiated/ { c = $1 } /Initialization Sequence Completed/ { d = $1 }
				END { print b - a, c - b, d - c }' "$dir/$i.log"
		done | awk '{ x += $1; y += $2; z += $3 } END { printf "%.3f\t%.3f\t%.3f", x / NR, y / NR, z / NR }'
	)
	# Clients that had to try again (a TCP connect or handshake that failed first).
	local retried
	retried=$(grep -l -E "Restart pause|SIGUSR1\[soft" "$dir"/[0-9]*.log 2>/dev/null | wc -l || true)
	local launched
	launched=$(awk -v t0="$t0" '{ printf "%.3f", $1 - t0 }' "$dir/launched")
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$n" "$mode" "$stats" "$launched" "$retried" \
		"$phases" "$cpu_server" "$cpu_hooks" "$cpu_agent" "$cpu_serve" "$cpu_clients" "$drops" | tee -a "$RESULTS" >&2

	# Tear down: clients, then the agent and the server; let the control plane settle.
	kill_ns "$NS_C" TERM
	drain_ns "$NS_C" 20
	wait "$launcher" 2>/dev/null || true
	if [[ -n $agent ]]; then
		# Its reports (200 sessions, their ends) reach the control plane before it stops.
		for ((i = 0; i < 100; i++)); do
			[[ $(agent_metric mgnt_agent_reports_buffered) == 0 ]] && break
			sleep 0.1
		done
		kill "$agent" 2>/dev/null || true
	fi
	kill "$server" 2>/dev/null || true
	wait "$server" 2>/dev/null || true
	[[ -n $agent ]] && { wait "$agent" 2>/dev/null || true; }
	sleep 3
}

echo "$(openvpn --version | head -1)" >&2
printf 'round\tmode\tfirst_s\tmedian_s\tall_s\tlogins_per_s\tlaunched_s\tclients_retried\tconnect_s\ttls_s\tlogin_to_address_s\tcpu_openvpn\tcpu_hooks\tcpu_agent\tcpu_control_plane\tcpu_clients\tlisten_drops\n' >&2
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= ROUNDS; r++)); do
	round "$r" agent
	round "$r" viafile
done

# --- summary ------------------------------------------------------------------
echo
echo "$(openvpn --version | head -1 | cut -d' ' -f1-2), $CLIENTS clients, $ROUNDS rounds per mode, $(nproc) cores shared by clients and server"
echo "OpenVPN's listen backlog (ss Send-Q): $(cat "$WORK"/round-1-agent/backlog)"
echo "load average before: $LOAD0; after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
echo "| round | mode | all $CLIENTS up (s) | logins/s | first up (s) | half up (s) | clients launched (s) | TCP connect (s, mean) | SYNs dropped (backlog full) | TLS (s, mean) | login → address (s, mean) | CPU s: OpenVPN server / hooks / agent / control plane / clients |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
awk -F'\t' '{ m = ($2 == "agent") ? "agent" : "via-file"
	printf "| %s | %s | **%.2f** | %.0f | %.2f | %.2f | %.2f | %.2f | %s | %.2f | %.2f | %.2f / %.2f / %.2f / %.2f / %.2f |\n",
		$1, m, $5, $6, $3, $4, $7, $9, $17, $10, $11, $12, $13, $14, $15, $16 }' "$RESULTS"
echo
awk -F'\t' -v rounds="$ROUNDS" '
	$2 == "agent" { a[$1] = $5; na++; sa[na] = $5 }
	$2 == "viafile" { v[$1] = $5; nv++; sv[nv] = $5 }
	function median(x, n,   i, j, t) {
		for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
		return (n % 2) ? x[(n + 1) / 2] : (x[n / 2] + x[n / 2 + 1]) / 2
	}
	END {
		ma = median(sa, na); mv = median(sv, nv)
		printf "median time until all up: agent %.2f s, via-file %.2f s; ratio via-file/agent %.2f\n", ma, mv, mv / ma
		printf "per round (via-file / agent of the same round):"
		for (r = 1; r <= rounds; r++) if ((r in a) && (r in v)) { printf " %s:%.2f", r, v[r] / a[r]; np++; p[np] = v[r] / a[r] }
		lo = hi = p[1]
		for (i = 1; i <= np; i++) { if (p[i] < lo) lo = p[i]; if (p[i] > hi) hi = p[i] }
		printf "\nmedian of the per-round ratios %.2f (range %.2f-%.2f)\n", median(p, np), lo, hi
	}' "$RESULTS"
