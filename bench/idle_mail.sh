#!/usr/bin/env bash
# Mail arriving while many IMAPS sessions idle: SESSIONS sessions (TLS, logged in,
# INBOX selected, IDLE) over 100 users, then MESSAGES messages to one of them over SMTP.
# Reports the delivery rate, the server's CPU time, and when every idle session of that
# user had seen the last message (bench/imap_idle.py does the work).
#   usage: bench/idle_mail.sh [sessions=10000] [messages=2000] [agora binary]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; M=${2:-2000}; USERS=100
if [[ -n ${3:-} ]]; then bin=$(realpath "$3"); else cargo build --release -q -p agora; bin=$PWD/target/release/agora; fi
scripts/install-test-deps >/dev/null
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
mkdir -p "$work/agora"
cat > "$work/agora/agora.toml" <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[limits]
max_connections = $((N + 100))
max_connections_per_ip = $((N + 100))
max_sessions_per_user = $((N / USERS + 10))
CONF
start_quiet_dns 29053
start_agora "$bin" "$work/agora" --port-offset 30000 --bind 127.0.0.1
add_users "$bin" "$work/agora" pw $(seq -f "user%g@example.org" 1 $USERS)
pid=$AGORA_PID
MAIL=$M SMTP=127.0.0.1:30025 python3 bench/imap_idle.py 127.0.0.1 30993 "$USERS" "$N" "$pid"
