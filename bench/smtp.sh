#!/usr/bin/env bash
# SMTP delivery benchmark: Postfix's smtp-source sends the same load, in the same run,
#   1. to smtp-sink, which acknowledges and stores nothing (the ceiling), and
#   2. to Agora, which fsyncs every message into a mailbox before its 250.
# A new connection per message, as smtp-source does by default.
#   usage: bench/smtp.sh [messages=10000] [sessions=20] [bytes=1024]
# AGORA_BIN=PATH measures that build instead of building this tree (to compare two).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; S=${2:-20}; L=${3:-1024}

scripts/install-test-deps >/dev/null
if [[ -z ${AGORA_BIN:-} ]]; then cargo build --release -q -p agora; fi
bin=${AGORA_BIN:-target/release/agora}
work=$(mktemp -d)
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

now() { date +%s.%N; }
rate() { python3 -c "import sys; n,a,b=map(float,sys.argv[1:]); print(round(n/(b-a)))" "$@"; }
src() { smtp-source -s "$S" -l "$L" -m "$N" -f bench@remote.test -t admin@bench.test "$1"; }

# 1. smtp-sink on loopback (it must drop root privileges to run)
smtp-sink -u nobody 127.0.0.1:21025 1024 &
sleep 0.5
t0=$(now); src 127.0.0.1:21025; t1=$(now)
kill %1; wait %1 2>/dev/null || true

# 2. Agora on its embedded store
start_quiet_dns 27353
AGORA_LOG=info start_agora "$bin" "$work/data" --domain bench.test --hostname mx.bench.test \
  --port-offset 20000 --bind 127.0.0.1
t2=$(now); src 127.0.0.1:20025; t3=$(now)
stored=$("$bin" --data "$work/data" user show admin@bench.test | awk '/mailbox: +INBOX/ {gsub(/\(/,""); print $3}')

sink=$(rate "$N" "$t0" "$t1"); agora=$(rate "$N" "$t2" "$t3")
echo "messages=$N sessions=$S size=$L stored_in_agora=$stored"
echo "smtp-sink: $sink msg/s"
echo "agora:     $agora msg/s (durable)"
python3 -c "import sys; a,s=map(float,sys.argv[1:]); print(f'ratio agora/smtp-sink: {a/s:.2f}')" "$agora" "$sink"
[[ $stored == "$N" ]] || { echo "error: $stored of $N messages stored"; exit 1; }
