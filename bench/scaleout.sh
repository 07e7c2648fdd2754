#!/usr/bin/env bash
# Scale-out benchmark: Dovecot's imaptest in stress mode (its default profile of LOGIN,
# LIST, STATUS, SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT with its own consistency
# checks), same users, mbox and clients, in one run against:
#   dovecot     Dovecot (Debian package, Maildir; its high-performance login mode)
#   sqlite      one Agora node on its embedded SQLite store
#   postgres    one Agora node on PostgreSQL
#   2 back-ends two Agora back-ends on that PostgreSQL behind one Agora front-end
#               (users homed half on each)
#   usage: bench/scaleout.sh IMAPTEST [seconds=30] [clients=50]
# IMAPTEST: an imaptest binary built from its public source (not part of the project);
# with Debian's Dovecot 2.3 it runs with LD_LIBRARY_PATH=/usr/lib/dovecot.
# PostgreSQL (Debian package) runs as `nobody` in a private directory with the
# settings below; everything shares this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
IMAPTEST=$(realpath "${1:?usage: bench/scaleout.sh IMAPTEST [seconds] [clients]}"); SECS=${2:-30}; CLIENTS=${3:-50}; USERS=100
MBOX=$(realpath "${MBOX:-../shared/imaptest/tests/default.mbox}")
dovecot_imap_bench
ulimit -n "$(ulimit -Hn)"

stress() { # host port label
  "$IMAPTEST" host="$1" port="$2" user='user%d@example.org' pass=pw users=$USERS \
    clients="$CLIENTS" mbox="$MBOX" secs="$SECS" >"$work/$3.txt" 2>&1 || true
  local errors; errors=$(grep -c '^Error' "$work/$3.txt" || true)
  echo "$(grep -A4 '^Totals:' "$work/$3.txt" | tail -1) $errors"
}

# --- Dovecot ---
dovecot_imap_stress "$work/dovecot" $USERS 31143
dovecot -F -c "$work/dovecot/dovecot.conf" &
DOVECOT_PID=$!
sleep 2
dovecot=$(stress 127.0.0.1 31143 dovecot)
kill $DOVECOT_PID; wait $DOVECOT_PID 2>/dev/null || true

agora_conf() { # extra configuration lines
  cat <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[auth]
plaintext_without_tls = true
[limits]
max_connections_per_ip = 1000
max_sessions_per_user = 1000
$1
CONF
}
start_quiet_dns 29053

# --- Agora on SQLite ---
mkdir -p "$work/sqlite"
agora_conf "" > "$work/sqlite/agora.toml"
start_agora "$bin" "$work/sqlite" --port-offset 30000 --bind 127.0.0.1
add_users "$bin" "$work/sqlite" pw $(seq -f "user%g@example.org" 1 $USERS)
sqlite=$(stress 127.0.0.1 30143 sqlite)
kill $AGORA_PID; wait $AGORA_PID 2>/dev/null || true

# --- PostgreSQL, as its users run it on a machine like this: a quarter of memory at
# most for shared buffers (1 GiB here), durable commits (synchronous_commit on, fsync
# on), connections enough for three nodes' pools.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
mkdir -p "$work/pg"; chown nobody:nogroup "$work/pg"
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PGBIN/initdb" -D "$work/pg/data" -U agora --auth=trust -E UTF8 --locale=C >/dev/null
setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PGBIN/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p 35432 -k $work/pg -c max_connections=300 -c shared_buffers=1GB -c effective_cache_size=8GB -c wal_buffers=16MB" start >/dev/null
trap 'setpriv --reuid=nobody --regid=nogroup --clear-groups -- "$PGBIN/pg_ctl" -D "$work/pg/data" -m fast stop >/dev/null 2>&1; kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
psql -h 127.0.0.1 -p 35432 -U agora -d postgres -qc "CREATE DATABASE one" -c "CREATE DATABASE two"

# --- Agora, one node on PostgreSQL ---
mkdir -p "$work/pg1"
agora_conf "[store]
url = \"postgres://agora@127.0.0.1:35432/one\"" > "$work/pg1/agora.toml"
start_agora "$bin" "$work/pg1" --port-offset 30000 --bind 127.0.0.1
add_users "$bin" "$work/pg1" pw $(seq -f "user%g@example.org" 1 $USERS)
postgres=$(stress 127.0.0.1 30143 postgres)
kill $AGORA_PID; wait $AGORA_PID 2>/dev/null || true

# --- Two back-ends and a front-end on PostgreSQL ---
for n in a b f; do mkdir -p "$work/n$n"; done
agora_conf "[store]
url = \"postgres://agora@127.0.0.1:35432/two\"
[cluster]
node = \"a\"
role = \"back-end\"" > "$work/na/agora.toml"
agora_conf "[store]
url = \"postgres://agora@127.0.0.1:35432/two\"
[cluster]
node = \"b\"
role = \"back-end\"" > "$work/nb/agora.toml"
agora_conf "[store]
url = \"postgres://agora@127.0.0.1:35432/two\"
[cluster]
node = \"f\"
role = \"front-end\"" > "$work/nf/agora.toml"
start_agora "$bin" "$work/na" --port-offset 30000 --bind 127.0.0.21
start_agora "$bin" "$work/nb" --port-offset 30000 --bind 127.0.0.22
start_agora "$bin" "$work/nf" --port-offset 30000 --bind 127.0.0.23
for i in $(seq 1 $USERS); do
  home=$([[ $((i % 2)) == 0 ]] && echo a || echo b)
  echo pw | "$bin" --data "$work/na" user add "user$i@example.org" --home $home --password-stdin >/dev/null
done
sleep 3
two=$(stress 127.0.0.23 30143 two-backends)

python3 - "$SECS" "$CLIENTS" "$dovecot" "$sqlite" "$postgres" "$two" <<'PY'
import sys
secs, clients = float(sys.argv[1]), sys.argv[2]
names = "Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo".split()
rows = [("dovecot", sys.argv[3]), ("sqlite", sys.argv[4]), ("postgres", sys.argv[5]), ("2 back-ends", sys.argv[6])]
def parse(s):
    v = [int(x) for x in s.split()]
    return v[:-1], v[-1]
print(f"clients={clients}  ({secs:.0f} s each; commands per second)")
print("             " + " ".join(f"{n:>6}" for n in names) + "   total  errors  vs dovecot")
d = sum(parse(rows[0][1])[0])
for label, s in rows:
    v, e = parse(s)
    print(f"{label:<12} " + " ".join(f"{x / secs:6.0f}" for x in v) + f" {sum(v) / secs:7.0f} {e:7d}  {sum(v) / d:6.2f}")
one, two = sum(parse(rows[2][1])[0]), sum(parse(rows[3][1])[0])
print(f"two back-ends / one PostgreSQL node: {two / one:.2f}")
PY
