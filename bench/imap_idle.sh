#!/usr/bin/env bash
# Held IMAP sessions: SESSIONS IMAPS sessions (TLS, logged in, INBOX selected, IDLE)
# spread over 100 users, against Agora and then against Dovecot (Debian package, whose
# default high-security mode runs an imap-login and an imap process per TLS session),
# reporting each server's memory per idle session (RSS growth / sessions).
#   usage: bench/imap_idle.sh [agora sessions=10000] [dovecot sessions=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; ND=${2:-1000}; USERS=100

command -v dovecot >/dev/null || { apt-get update -qq && apt-get install -y -qq dovecot-imapd >/dev/null; }
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"   # 10,000 sessions need as many descriptors on each side

# --- Agora ---
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
start_quiet_dns 30053
start_agora "$bin" "$work/agora" --port-offset 30000 --bind 127.0.0.1
add_users "$bin" "$work/agora" pw $(seq -f "user%g@example.org" 1 $USERS)
pid=$AGORA_PID
echo "== Agora (pid $pid), $N sessions"
python3 bench/imap_idle.py 127.0.0.1 30993 "$USERS" "$N" "$pid"
kill "$pid"; wait "$pid" 2>/dev/null || true

# --- Dovecot ---
mkdir -p "$work/dovecot/run" "$work/dovecot/state" "$work/dovecot/mail"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/dovecot/key.pem" -out "$work/dovecot/cert.pem" 2>/dev/null
: > "$work/dovecot/passwd"
for i in $(seq 1 $USERS); do echo "user$i@example.org:{PLAIN}pw" >> "$work/dovecot/passwd"; done
chown -R nobody:nogroup "$work/dovecot/mail"
{ dovecot_conf "$work/dovecot" imap; cat <<CONF
ssl = required
ssl_cert = <$work/dovecot/cert.pem
ssl_key = <$work/dovecot/key.pem
auth_mechanisms = plain
mail_max_userip_connections = $((ND / USERS + 10))
default_process_limit = $((ND + 100))
default_client_limit = $((2 * ND + 100))
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    port = 31993
    ssl = yes
  }
}
CONF
} > "$work/dovecot/dovecot.conf"
dovecot -F -c "$work/dovecot/dovecot.conf" &
sleep 2
echo "== Dovecot, $ND sessions"
python3 bench/imap_idle.py 127.0.0.1 31993 "$USERS" "$ND" dovecot
