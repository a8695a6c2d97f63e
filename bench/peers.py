#!/usr/bin/env python3
"""Runs the same workloads against a zero-work reflector, gdnsd, Knot and mgnt.

Each server is pinned to CPU 1 and each load generator to CPU 0; all servers
run throughout. With MGNT_BASELINE=/path/to/an/older/mgnt, that build runs too
(as mgnt-prev, same config) and the report adds an A/B table. The batched generator loads them in turns of 250 ms within one
run (so slow drifts of a shared machine hit all alike); dnsperf runs against
each in turn. The order rotates across rounds. Everything listens on 127.0.0.1. Prints a Markdown table (medians over the rounds) and mgnt's ratios.
Usage: peers.py ROUNDS SECONDS
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REL = os.path.join(ROOT, "target", "release")
EX = os.path.join(REL, "examples")
ZONE = open(os.path.join(ROOT, "zones", "mkcld.io.zone")).read()
REGIONS = [("europe1", 50.11, 8.68, "192.0.2.11"), ("us1", 39.04, -77.49, "192.0.2.21"),
           ("asia1", 1.35, 103.82, "192.0.2.31"), ("sa1", -23.55, -46.63, "192.0.2.41")]
PORTS = {"reflector": 5399, "gdnsd": 5301, "knot": 5302, "mgnt": 5303}
BASELINE = os.environ.get("MGNT_BASELINE")
if BASELINE:
    PORTS["mgnt-prev"] = 5305
WORKLOADS = ["geo", "geo-ecs", "static"]
OUTSTANDING = 200
TICK = os.sysconf("SC_CLK_TCK")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def configure(d):
    db, prefixes = f"{d}/bench.mmdb", f"{d}/prefixes.txt"
    subprocess.run([f"{EX}/mkgeodb", db, prefixes, f"{d}/knot-geo.conf", "4000"], check=True,
                   stderr=subprocess.DEVNULL)
    coords = "\n".join(f"          {n} => [ {la}, {lo} ]" for n, la, lo, _ in REGIONS)
    dcmap = "\n".join(f"          {n} => {a}" for n, _, _, a in REGIONS)
    write(f"{d}/gdnsd/config", f"""options => {{
  listen => [ 127.0.0.1:{PORTS['gdnsd']} ]
  udp_threads => 1
  tcp_threads => 1
  edns_client_subnet => true
}}
plugins => {{ geoip => {{
  maps => {{ mgnt => {{
    geoip2_db => {db}
    datacenters => [{", ".join(n for n, *_ in REGIONS)}]
    auto_dc_coords => {{
{coords}
    }}
  }} }}
  resources => {{ mgnt => {{
    map => mgnt
    dcmap => {{
{dcmap}
    }}
  }} }}
}} }}
""")
    write(f"{d}/gdnsd/zones/mkcld.io", ZONE + "mgnt 60 DYNA geoip!mgnt\n")
    write(f"{d}/knot/mkcld.io.zone", ZONE)
    os.makedirs(f"{d}/knot/run", exist_ok=True)
    write(f"{d}/knot/knot.conf", f"""server:
    listen: 127.0.0.1@{PORTS['knot']}
    rundir: {d}/knot/run
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    edns-client-subnet: on
database:
    storage: {d}/knot/db
log:
  - target: stderr
    any: error
mod-geoip:
  - id: geo
    config-file: {d}/knot-geo.conf
    ttl: 60
    mode: geodb
    geodb-file: {db}
    geodb-key: country/iso_code
zone:
  - domain: mkcld.io
    storage: {d}/knot
    file: mkcld.io.zone
    module: mod-geoip/geo
""")
    regions = "\n".join(f'[regions.{n}]\nhost = "{n}.mkcld.io"\nlocation = [{la}, {lo}]\n'
                        for n, la, lo, _ in REGIONS)
    for name in [n for n in PORTS if n.startswith("mgnt")]:
        write(f"{d}/{name}/zones/mkcld.io.zone", ZONE)
        write(f"{d}/{name}/mgnt.toml", mgnt_config(PORTS[name], db, regions))
    return prefixes


def mgnt_config(port, db, regions):
    return f"""[dns]
listen = ["127.0.0.1:{port}"]
zones_dir = "zones"
udp_sockets = 1
[api]
listen = "127.0.0.1:0"
[geoip]
database = "{db}"
centroids = "{ROOT}/geoip/country-centroids.csv"
[[geo]]
name = "mgnt.mkcld.io"
ttl = 60
answer = "address"
regions = ["europe1", "us1", "asia1", "sa1"]
{regions}"""


def start(name, d):
    pin = ["taskset", "-c", "1"]
    if name == "reflector":
        cmd = pin + [f"{EX}/reflector", f"127.0.0.1:{PORTS[name]}"]
    elif name == "gdnsd":
        cmd = pin + ["gdnsd", "-c", f"{d}/gdnsd", "start"]
    elif name == "knot":
        cmd = pin + ["knotd", "-c", f"{d}/knot/knot.conf"]
    elif name == "mgnt-prev":
        cmd = pin + [BASELINE, "serve", "--config", f"{d}/{name}/mgnt.toml"]
    else:
        cmd = pin + [f"{REL}/mgnt", "serve", "--config", f"{d}/mgnt/mgnt.toml"]
    env = dict(os.environ, RUST_LOG="error")
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    for _ in range(100):
        r = subprocess.run(["dig", "@127.0.0.1", "-p", str(PORTS[name]), "+time=1", "+tries=1",
                            "ns1.mkcld.io"], capture_output=True, text=True)
        if "status:" in r.stdout:
            return p
        time.sleep(0.1)
    p.kill()
    raise RuntimeError(f"{name} did not start")


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def dnsperf_input(d, workload):
    path = f"{d}/dnsperf-{workload}.txt"
    name = "ns1.mkcld.io" if workload == "static" else "mgnt.mkcld.io"
    write(path, f"{name} A\n")
    return path


def run_dnsperf(d, port, workload, seconds):
    cmd = ["taskset", "-c", "0", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-c", "4",
           "-q", "200", "-l", str(seconds), "-d", dnsperf_input(d, workload)]
    if workload == "geo-ecs":
        cmd += ["-E", "8:0001180051f007"]  # family 1, /24, 81.240.7.0
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    res = {"qps": 0.0, "lost": 0, "mean_latency_ms": 0.0, "answered": 0}
    for line in out.splitlines():
        s = line.strip()
        if s.startswith("Queries per second:"):
            res["qps"] = float(s.split()[-1])
        elif s.startswith("Queries lost:"):
            res["lost"] = int(s.split()[2])
        elif s.startswith("Queries completed:"):
            res["answered"] = int(s.split()[2])
        elif s.startswith("Average Latency (s):"):
            res["mean_latency_ms"] = float(s.split()[3]) * 1000
    return res


def run_batched(ports, workload, seconds, prefixes):
    """Loads each server for `seconds` in turns of 250 ms; results by port."""
    cmd = ["taskset", "-c", "0", f"{EX}/udpload", ",".join(f"127.0.0.1:{p}" for p in ports), workload,
           str(seconds), str(OUTSTANDING), prefixes]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    results = [json.loads(line) for line in out.splitlines()]
    return {int(r["server"].rsplit(":", 1)[1]): r for r in results}


def shipped_rss(d):
    """mgnt's RSS with the shipped config and GeoIP database, at rest and under load."""
    cfg = open(os.path.join(ROOT, "mgnt.toml")).read()
    cfg = (cfg.replace('listen = ["127.0.0.1:5300", "[::1]:5300"]', 'listen = ["127.0.0.1:5304"]')
              .replace('listen = "127.0.0.1:8053"', 'listen = "127.0.0.1:0"')
              .replace('zones_dir = "zones"', f'zones_dir = "{ROOT}/zones"')
              .replace('"geoip/', f'"{ROOT}/geoip/')
              .replace('"state/', f'"{d}/shipped/state/'))
    write(f"{d}/shipped/mgnt.toml", cfg)
    p = subprocess.Popen(["taskset", "-c", "1", f"{REL}/mgnt", "serve", "--config", f"{d}/shipped/mgnt.toml"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    PORTS["shipped"] = 5304
    for _ in range(100):
        r = subprocess.run(["dig", "@127.0.0.1", "-p", "5304", "+time=1", "+tries=1", "ns1.mkcld.io"],
                           capture_output=True, text=True)
        if "status:" in r.stdout:
            break
        time.sleep(0.1)
    del PORTS["shipped"]
    rest = rss_kib(p.pid)
    # Real-world prefixes: the benchmark's /24s also exist in the shipped database.
    run_batched([5304], "geo-ecs", 3, f"{d}/prefixes.txt")
    load = rss_kib(p.pid)
    p.terminate()
    p.wait()
    return rest, load


def main():
    rounds, seconds = int(sys.argv[1]), int(sys.argv[2])
    d = tempfile.mkdtemp(prefix="mgnt-bench-")
    prefixes = configure(d)
    results = {}  # (server, generator, workload) -> list of runs
    rss = {}
    servers = list(PORTS)
    # Every server runs for the whole benchmark (idle ones cost nothing), so
    # each measurement of a workload is followed at once by the same
    # measurement of the other servers: slow drifts of this shared machine hit
    # all of them alike instead of whichever server happened to be running.
    procs = {}
    for name in servers:
        procs[name] = start(name, d)
        time.sleep(0.3)
        rss[name] = {"rest": rss_kib(procs[name].pid)}
    def record(name, gen, workload, res, ticks):
        res["cpu_us_per_q"] = ticks / TICK / (res.get("answered") or 1) * 1e6
        results.setdefault((name, gen, workload), []).append(res)

    for r in range(rounds):
        for workload in WORKLOADS:
            order = servers[r % len(servers):] + servers[:r % len(servers)]
            order = [n for n in order if n != "reflector" or workload == "geo-ecs"]
            # Batched: one generator loads every server in turns of 250 ms.
            before = {n: cpu_ticks(procs[n].pid) for n in order}
            res = run_batched([PORTS[n] for n in order], workload, seconds, prefixes)
            for n in order:
                record(n, "batched", workload, res[PORTS[n]], cpu_ticks(procs[n].pid) - before[n])
            # dnsperf: one server after the other.
            for n in order:
                before = cpu_ticks(procs[n].pid)
                res = run_dnsperf(d, PORTS[n], workload, seconds)
                record(n, "dnsperf", workload, res, cpu_ticks(procs[n].pid) - before)
    for name, p in procs.items():
        rss[name]["load"] = rss_kib(p.pid)
        p.terminate()
        p.wait()
    shipped = shipped_rss(d)
    shutil.rmtree(d, ignore_errors=True)
    report(results, rss, rounds, seconds)
    print(f"mgnt with the shipped config and GeoIP database: RSS {shipped[0]:,} KiB at rest, "
          f"{shipped[1]:,} KiB after 3 s of geo+ECS load")


def med(runs, key):
    return statistics.median(r[key] for r in runs)


def paired(a_runs, b_runs, key):
    """Round-by-round ratios of `key` (a over b): their median and range."""
    r = [a[key] / b[key] for a, b in zip(a_runs, b_runs) if b[key]]
    return f"{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})"


def report(results, rss, rounds, seconds):
    print(f"{rounds} rounds x {seconds} s, server on CPU 1, generator on CPU 0, loopback; medians.\n")
    print("| generator | workload | server | qps | mean latency ms | lost | server CPU µs/query |")
    print("|---|---|---|---:|---:|---:|---:|")
    for gen in ["batched", "dnsperf"]:
        for workload in WORKLOADS:
            for name in PORTS:
                runs = results.get((name, gen, workload))
                if not runs:
                    continue
                label = "ceiling (reflector)" if name == "reflector" else name
                print(f"| {gen} | {workload} | {label} | {med(runs, 'qps'):,.0f} | "
                      f"{med(runs, 'mean_latency_ms'):.3f} | {max(r['lost'] for r in runs)} | "
                      f"{med(runs, 'cpu_us_per_q'):.2f} |")
    print("\nmgnt's ratios (qps; CPU per query, lower is better); the last column pairs mgnt with gdnsd "
          "round by round and gives the median and range of those ratios:\n")
    print("| generator | workload | vs gdnsd | vs Knot | vs ceiling | CPU/q vs gdnsd | per round vs gdnsd |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for gen in ["batched", "dnsperf"]:
        for workload in WORKLOADS:
            m = results.get(("mgnt", gen, workload))
            g = results.get(("gdnsd", gen, workload))
            k = results.get(("knot", gen, workload))
            c = results.get(("reflector", gen, "geo-ecs"))
            if not (m and g and k and c):
                continue
            q = med(m, "qps")
            print(f"| {gen} | {workload} | {q / med(g, 'qps'):.2f} | {q / med(k, 'qps'):.2f} | "
                  f"{q / med(c, 'qps'):.2f} | {med(m, 'cpu_us_per_q') / med(g, 'cpu_us_per_q'):.2f} | "
                  f"{paired(m, g, 'qps')} |")
    if BASELINE:
        print("\nThis build against the previous one (MGNT_BASELINE), same run; the last column pairs "
              "them round by round (median and range of CPU/q ratios):\n")
        print("| generator | workload | qps vs previous | CPU/q vs previous | per round CPU/q |")
        print("|---|---|---:|---:|---:|")
        for gen in ["batched", "dnsperf"]:
            for workload in WORKLOADS:
                m = results.get(("mgnt", gen, workload))
                p = results.get(("mgnt-prev", gen, workload))
                if not (m and p):
                    continue
                print(f"| {gen} | {workload} | {med(m, 'qps') / med(p, 'qps'):.2f} | "
                      f"{med(m, 'cpu_us_per_q') / med(p, 'cpu_us_per_q'):.2f} | "
                      f"{paired(m, p, 'cpu_us_per_q')} |")
    print("\nRSS (KiB) at rest / after load:", ", ".join(
        f"{n} {v.get('rest', 0):,} / {v.get('load', 0):,}" for n, v in rss.items()))


if __name__ == "__main__":
    main()
