#!/usr/bin/env bash
# DNS benchmark: dnsperf (UDP) against Agora, NSD and Knot serving the same zone (the
# one Agora makes for its domain, exported with `agora dns show`), in the same run.
# The query mix: MX, TXT (SPF, DMARC, DKIM), SRV, A, and names that do not exist.
#   usage: bench/dns.sh [seconds=20] [clients=4]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${1:-20}; CLIENTS=${2:-4}

scripts/install-test-deps --bench >/dev/null
export DEBIAN_FRONTEND=noninteractive
for p in nsd knot dnsperf; do dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends "$p" >/dev/null; done
for s in nsd knot; do service "$s" stop >/dev/null 2>&1 || true; done
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
start_quiet_dns 27353

# --- Agora: rate limiting off for the load generator's one address (disclosed) ---
mkdir -p "$work/agora"
printf '[dns]\naddresses = ["192.0.2.25", "2001:db8::25"]\nrate_limit = 0\n' > "$work/agora/agora.toml"
start_agora "$bin" "$work/agora" --domain example.org --hostname mx.example.org --port-offset 20000 --bind 127.0.0.1
"$bin" --data "$work/agora" dns show example.org --hostname mx.example.org --port-offset 20000 > "$work/example.org.zone"

# --- The queries: each name the zone has, and as many that do not exist ---
python3 - "$work/example.org.zone" "$work/queries" <<'PY'
import random, sys
zone, out = sys.argv[1], sys.argv[2]
names = []
for line in open(zone):
    parts = line.split("\t")
    if len(parts) >= 4 and parts[3] != "SOA":
        names.append((parts[0], parts[3]))
random.seed(7)
with open(out, "w") as f:
    for i in range(20000):
        if i % 5 == 4:
            f.write(f"nx{random.randrange(10**6)}.example.org. A\n")
        else:
            n, t = random.choice(names)
            f.write(f"{n} {t}\n")
PY

# --- NSD and Knot, as their users run them for speed: logging quiet, rate limiting off ---
mkdir -p "$work/nsd"
cat > "$work/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@21053
  username: ""
  zonesdir: "$work"
  database: ""
  pidfile: "$work/nsd/nsd.pid"
  xfrdfile: "$work/nsd/xfrd.state"
  zonelistfile: "$work/nsd/zone.list"
  verbosity: 0
  server-count: 2
  rrl-ratelimit: 0
zone:
  name: example.org
  zonefile: example.org.zone
CONF
nsd -c "$work/nsd/nsd.conf" -d 2>"$work/nsd/log" &
mkdir -p "$work/knot/db"
cat > "$work/knot/knot.conf" <<CONF
server:
  listen: 127.0.0.1@22053
  rundir: "$work/knot"
  udp-workers: 2
  tcp-workers: 1
log:
  - target: stderr
    any: error
database:
  storage: "$work/knot/db"
zone:
  - domain: example.org
    storage: "$work"
    file: example.org.zone
CONF
knotd -c "$work/knot/knot.conf" 2>"$work/knot/log" &
for port in 20053 21053 22053; do
  for _ in $(seq 100); do dig @127.0.0.1 -p $port +short +time=1 +tries=1 example.org SOA >/dev/null 2>&1 && break; sleep 0.1; done
  dig @127.0.0.1 -p $port +short example.org MX | grep -q "mx.example.org" || { echo "server on $port does not answer" >&2; cat "$work"/*/log >&2; exit 1; }
done

run() { # PORT -> "qps lost"
  dnsperf -s 127.0.0.1 -p "$1" -d "$work/queries" -l "$SECS" -c "$CLIENTS" -T 2 -q 200 2>&1 |
    awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3} END {print q, l}'
}
read -r a_qps a_lost < <(run 20053)
read -r n_qps n_lost < <(run 21053)
read -r k_qps k_lost < <(run 22053)
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
echo "dnsperf: $SECS s, $CLIENTS clients, 2 threads, 200 outstanding; 20,000 queries (80% existing names of every type, 20% NXDOMAIN)"
printf '%-8s %12s %10s %16s\n' server "queries/s" lost "Agora / server"
printf '%-8s %12s %10s %16s\n' Agora "$a_qps" "$a_lost" "-"
printf '%-8s %12s %10s %16s\n' NSD "$n_qps" "$n_lost" "$(ratio "$a_qps" "$n_qps")"
printf '%-8s %12s %10s %16s\n' Knot "$k_qps" "$k_lost" "$(ratio "$a_qps" "$k_qps")"
