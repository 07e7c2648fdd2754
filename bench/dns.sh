#!/usr/bin/env bash
# DNS benchmark: dnsperf (UDP) against Agora, NSD and Knot serving the same zone (the
# one Agora makes for its domain, exported with `agora dns show`), in the same run.
# The query mix: MX, TXT (SPF, DMARC, DKIM), SRV, A, and names that do not exist.
# Twice: unsigned, and signed (DO set; NSD and Knot serve the zone Agora signed, taken
# by AXFR). Each server runs ROUNDS times, interleaved; the median counts.
#   usage: bench/dns.sh [seconds=20] [clients=4] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${1:-20}; CLIENTS=${2:-4}; ROUNDS=${3:-3}

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
printf '[dns]\naddresses = ["192.0.2.25", "2001:db8::25"]\nrate_limit = 0\nsecondaries = ["127.0.0.1"]\n' > "$work/agora/agora.toml"
start_agora "$bin" "$work/agora" --domain example.org --hostname mx.example.org --port-offset 20000 --bind 127.0.0.1
"$bin" --data "$work/agora" dns show example.org --hostname mx.example.org --port-offset 20000 > "$work/example.org.zone"
# The same zone as Agora signs it (the benchmark's address may transfer it).
mkdir -p "$work/signed"
dig @127.0.0.1 -p 20053 example.org AXFR +onesoa +nocmd +nostats +nocomments > "$work/signed/example.org.zone"
grep -q RRSIG "$work/signed/example.org.zone" || { echo "no signed zone from Agora" >&2; exit 1; }

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
# start_peers ZONEDIR: both serving ZONEDIR/example.org.zone (stopped first if running).
start_peers() {
  local zd=$1
  [[ -n ${NSD_PID:-} ]] && { kill "$NSD_PID" "$KNOT_PID" 2>/dev/null || true; wait "$NSD_PID" "$KNOT_PID" 2>/dev/null || true; }
  rm -rf "$work/nsd" "$work/knot"; mkdir -p "$work/nsd" "$work/knot/db"
  cat > "$work/nsd/nsd.conf" <<CONF
server:
  ip-address: 127.0.0.1@21053
  username: ""
  zonesdir: "$zd"
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
  nsd -c "$work/nsd/nsd.conf" -d 2>"$work/nsd/log" & NSD_PID=$!
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
    storage: "$zd"
    file: example.org.zone
CONF
  knotd -c "$work/knot/knot.conf" 2>"$work/knot/log" & KNOT_PID=$!
  for port in 20053 21053 22053; do
    for _ in $(seq 100); do dig @127.0.0.1 -p $port +short +time=1 +tries=1 example.org SOA >/dev/null 2>&1 && break; sleep 0.1; done
    dig @127.0.0.1 -p $port +short example.org MX | grep -q "mx.example.org" || { echo "server on $port does not answer" >&2; cat "$work"/*/log >&2; exit 1; }
  done
}

run() { # PORT [dnsperf flags] -> "qps lost"
  local port=$1; shift
  dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$SECS" -c "$CLIENTS" -T 2 -q 200 "$@" 2>&1 |
    awk '/Queries per second/ {q=$4} /Queries lost/ {l=$3} END {print q, l}'
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.0f}')" "$@"; }
ratio() { python3 -c "print(f'{float($1)/float($2):.2f}')"; }
# measure LABEL [dnsperf flags]: ROUNDS rounds of Agora, NSD, Knot in turn; prints the table.
measure() {
  local label=$1; shift
  local a=() n=() k=() al=0 nl=0 kl=0 q l
  for _ in $(seq "$ROUNDS"); do
    read -r q l < <(run 20053 "$@"); a+=("$q"); al=$((al + l))
    read -r q l < <(run 21053 "$@"); n+=("$q"); nl=$((nl + l))
    read -r q l < <(run 22053 "$@"); k+=("$q"); kl=$((kl + l))
  done
  local am nm km; am=$(median "${a[@]}"); nm=$(median "${n[@]}"); km=$(median "${k[@]}")
  echo "$label: dnsperf $SECS s x $ROUNDS rounds, $CLIENTS clients, 2 threads, 200 outstanding; median queries/s (lost, all rounds)"
  printf '%-8s %12s %10s %16s\n' server "queries/s" lost "Agora / server"
  printf '%-8s %12s %10s %16s\n' Agora "$am" "$al" "-"
  printf '%-8s %12s %10s %16s\n' NSD "$nm" "$nl" "$(ratio "$am" "$nm")"
  printf '%-8s %12s %10s %16s\n' Knot "$km" "$kl" "$(ratio "$am" "$km")"
}

start_peers "$work"
measure "unsigned"
start_peers "$work/signed"
measure "signed (DO set)" -D
