#!/usr/bin/env bash
# IMAP stress benchmark: Dovecot's imaptest in stress mode (its default profile of
# LOGIN, LIST, STATUS, SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT with its own
# consistency checks) against Dovecot (Debian package, Maildir) and against Agora, in
# the same run, same 100 users, same mbox, with 10 and then 100 concurrent clients.
#   usage: bench/imap_stress.sh IMAPTEST [seconds=30]
# IMAPTEST is an imaptest binary built from its public source by whoever runs this
# (it is not part of the project). With a Dovecot 2.3 from Debian, imaptest's
# release-2.3 branch builds against the dovecot-dev package.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
IMAPTEST=$(realpath "${1:?usage: bench/imap_stress.sh IMAPTEST [seconds]}"); SECS=${2:-30}; USERS=100
MBOX=$(realpath "${MBOX:-../shared/imaptest/tests/default.mbox}")
dovecot_imap_bench
ulimit -n "$(ulimit -Hn)"

# One imaptest run; prints "<totals per command...> <errors>" for the summary.
stress() { # port clients label
  "$IMAPTEST" host=127.0.0.1 port="$1" user='user%d@example.org' pass=pw users=$USERS \
    clients="$2" mbox="$MBOX" secs="$SECS" >"$work/$3.txt" 2>&1 || true
  local errors; errors=$(grep -c '^Error' "$work/$3.txt" || true)
  echo "$(grep -A4 '^Totals:' "$work/$3.txt" | tail -1) $errors"
}

# --- Dovecot ---
dovecot_imap_stress "$work/dovecot" $USERS 31143
dovecot -F -c "$work/dovecot/dovecot.conf" &
sleep 2
d10=$(stress 31143 10 dovecot-10)
d100=$(stress 31143 100 dovecot-100)
kill %1; wait %1 2>/dev/null || true

# --- Agora ---
mkdir -p "$work/agora"
cat > "$work/agora/agora.toml" <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[auth]
plaintext_without_tls = true
[limits]
max_connections_per_ip = 1000
CONF
start_quiet_dns 29053
start_agora "$bin" "$work/agora" --port-offset 30000 --bind 127.0.0.1
add_users "$bin" "$work/agora" pw $(seq -f "user%g@example.org" 1 $USERS)
a10=$(stress 30143 10 agora-10)
a100=$(stress 30143 100 agora-100)

python3 - "$SECS" "$d10" "$a10" "$d100" "$a100" <<'PY'
import sys
secs = float(sys.argv[1])
names = "Logi List Stat Sele Fetc Fet2 Stor Dele Expu Appe Logo".split()
def parse(s):
    v = [int(x) for x in s.split()]
    return v[:-1], v[-1]
for clients, d, a in ((10, sys.argv[2], sys.argv[3]), (100, sys.argv[4], sys.argv[5])):
    (dv, de), (av, ae) = parse(d), parse(a)
    print(f"clients={clients}  ({secs:.0f} s each; commands per second)")
    print("          " + " ".join(f"{n:>6}" for n in names) + "   total  errors")
    print("dovecot   " + " ".join(f"{x / secs:6.0f}" for x in dv) + f" {sum(dv) / secs:7.0f} {de:7d}")
    print("agora     " + " ".join(f"{x / secs:6.0f}" for x in av) + f" {sum(av) / secs:7.0f} {ae:7d}")
    print("ratio     " + " ".join(f"{(x / y if y else 0):6.2f}" for x, y in zip(av, dv)) + f" {sum(av) / sum(dv):7.2f}")
    print()
PY
