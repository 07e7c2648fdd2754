#!/usr/bin/env bash
# Relay benchmark: messages accepted from a trusted client and delivered onwards to
# smtp-sink, by Postfix (Debian package, a private instance with relayhost = the sink)
# and by Agora (trusted_networks, smarthost = the sink), in the same run with the same
# load: smtp-source sends N messages over S sessions; the clock stops when smtp-sink
# has received all N. Both servers make each message durable before accepting it.
#   usage: bench/transport.sh [messages=5000] [sessions=20] [bytes=1024]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-5000}; S=${2:-20}; L=${3:-1024}

scripts/install-test-deps >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  postfix -c "$work/postfix/etc" stop >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
now() { date +%s.%N; }

# smtp-sink counts completed DATA commands (-c) on stdout.
sink() { # port -> starts a sink, its counter in $work/sink.$1
  smtp-sink -u nobody -c "127.0.0.1:$1" 1024 >"$work/sink.$1" 2>/dev/null &
  sleep 0.5
}
count() { tr '\r' '\n' <"$work/sink.$1" | grep -Eo '[0-9]+' | tail -1 || echo 0; }
wait_for() { # port -> waits until the sink has N messages
  for _ in $(seq 6000); do [[ $(count "$1") -ge $N ]] && return 0; sleep 0.05; done
  echo "error: only $(count "$1") of $N messages reached the sink" >&2; return 1
}
src() { smtp-source -s "$S" -l "$L" -m "$N" -f bench@example.org -t someone@remote.test "$1"; }

# --- Postfix ---
sink 21031
mkdir -p "$work/postfix/etc" "$work/postfix/queue" "$work/postfix/data"
chown postfix "$work/postfix/data"
d=$work/postfix
cat > "$d/etc/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $d/queue
data_directory = $d/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = relay.bench.test
mydestination =
relayhost = [127.0.0.1]:21031
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
alias_maps =
alias_database =
local_recipient_maps =
maillog_file = $d/maillog
maillog_file_prefixes = $d
CONF
cat > "$d/etc/master.cf" <<CONF
127.0.0.1:21032 inet n - n - - smtpd
pickup unix n - n 60 1 pickup
cleanup unix n - n - 0 cleanup
qmgr unix n - n 300 1 qmgr
rewrite unix - - n - - trivial-rewrite
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
flush unix n - n 1000? 0 flush
proxymap unix - - n - - proxymap
smtp unix - - n - - smtp
relay unix - - n - - smtp
showq unix n - n - - showq
error unix - - n - - error
retry unix - - n - - error
discard unix - - n - - discard
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
postlog unix-dgram n - n - 1 postlogd
CONF
postfix -c "$d/etc" start >/dev/null
sleep 1
t0=$(now); src 127.0.0.1:21032; wait_for 21031; t1=$(now)
postfix -c "$d/etc" stop >/dev/null

# --- Agora ---
sink 21033
mkdir -p "$work/agora"
cat > "$work/agora/agora.toml" <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[smtp]
trusted_networks = ["127.0.0.0/8"]
[transport]
smarthost = "127.0.0.1:21033"
poll_secs = 1
CONF
AGORA_LOG=warn "$bin" --data "$work/agora" serve --port-offset 20000 --bind 127.0.0.1 >"$work/agora.out" 2>"$work/agora.log" &
for _ in $(seq 100); do grep -q "agora: ready" "$work/agora.out" && break; sleep 0.1; done
t2=$(now); src 127.0.0.1:20025; wait_for 21033; t3=$(now)

python3 - "$N" "$t0" "$t1" "$t2" "$t3" <<'PY'
import sys
n, t0, t1, t2, t3 = map(float, sys.argv[1:])
p, a = n / (t1 - t0), n / (t3 - t2)
print(f"messages={n:.0f}: postfix {p:.0f} msg/s ({t1 - t0:.1f} s), agora {a:.0f} msg/s ({t3 - t2:.1f} s)")
print(f"ratio agora/postfix: {a / p:.2f}")
PY
