#!/usr/bin/env bash
# POP3 download benchmark: the same maildrops (USERS users x MSGS messages of about
# 2 KiB) served by Dovecot's POP3 (Debian package, Maildir) and by Agora, in the same
# run; bench/pop3_load.py logs every user in at once, RETRs every message, QUITs.
#   usage: bench/pop3.sh [users=20] [messages=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS=${1:-20}; MSGS=${2:-1000}

scripts/install-test-deps --bench >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

# The messages: one set, written as Maildir files for Dovecot and sent over SMTP to Agora.
python3 - "$work/msgs" "$MSGS" <<'PY'
import os, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
for i in range(n):
    body = "".join(f"line {j} of message {i}: " + "abcdefghijklmnopqrstuvwxyz0123456789" + "\r\n" for j in range(32))
    with open(f"{out}/{i:05d}", "w", newline="") as f:
        f.write(f"From: bench@remote.test\r\nTo: user@bench.test\r\nSubject: message {i}\r\n"
                f"Message-ID: <{i}@bench.test>\r\nDate: Sat, 28 Nov 2026 00:00:00 +0000\r\n\r\n" + body)
PY

# --- Dovecot ---
mkdir -p "$work/dovecot/run" "$work/dovecot/state" "$work/dovecot/mail"
: > "$work/dovecot/passwd"
for i in $(seq 0 $((USERS-1))); do
  u="u$i@bench.test"; echo "$u:{PLAIN}secret" >> "$work/dovecot/passwd"
  md="$work/dovecot/mail/$u/Maildir"; mkdir -p "$md/new" "$md/tmp" "$md/cur"
  k=0; for f in "$work/msgs"/*; do cp "$f" "$md/cur/$((1700000000+k)).M$k.bench:2,"; k=$((k+1)); done
done
chown -R nobody:nogroup "$work/dovecot/mail"
{ dovecot_conf "$work/dovecot" pop3; cat <<CONF
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
pop3_uidl_format = %08Xu%08Xv
service pop3-login {
  inet_listener pop3 {
    port = 21110
  }
  inet_listener pop3s {
    port = 0
  }
}
CONF
} > "$work/dovecot/dovecot.conf"
dovecot -F -c "$work/dovecot/dovecot.conf" &
sleep 1
# A first pass builds Dovecot's index files; the second one is measured.
python3 bench/pop3_load.py 127.0.0.1 21110 'u{i}@bench.test' secret "$USERS" >/dev/null
read -r d_msgs d_bytes d_secs d_err < <(python3 bench/pop3_load.py 127.0.0.1 21110 'u{i}@bench.test' secret "$USERS")
kill %1; wait %1 2>/dev/null || true

# --- Agora ---
mkdir -p "$work/agora"
printf '[server]\nhostname = "mx.bench.test"\ndomain = "bench.test"\n[auth]\nplaintext_without_tls = true\n' > "$work/agora/agora.toml"
start_quiet_dns 27353
start_agora "$bin" "$work/agora" --port-offset 20000 --bind 127.0.0.1
add_users "$bin" "$work/agora" secret $(seq -f "u%g@bench.test" 0 $((USERS-1)))
python3 - "$work/msgs" "$USERS" <<'PY'
import os, smtplib, sys, threading
d, users = sys.argv[1], int(sys.argv[2])
msgs = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]
def send(i):
    s = smtplib.SMTP("127.0.0.1", 20025)
    for m in msgs:
        s.sendmail("bench@remote.test", [f"u{i}@bench.test"], m)
    s.quit()
ts = [threading.Thread(target=send, args=(i,)) for i in range(users)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
python3 bench/pop3_load.py 127.0.0.1 20110 'u{i}@bench.test' secret "$USERS" >/dev/null
read -r a_msgs a_bytes a_secs a_err < <(python3 bench/pop3_load.py 127.0.0.1 20110 'u{i}@bench.test' secret "$USERS")

python3 - "$d_msgs" "$d_bytes" "$d_secs" "$d_err" "$a_msgs" "$a_bytes" "$a_secs" "$a_err" <<'PY'
import sys
dm, db, ds, de, am, ab, as_, ae = map(float, sys.argv[1:])
print(f"dovecot: {dm:.0f} msgs {db/1e6:.1f} MB in {ds:.2f}s = {dm/ds:.0f} msg/s {db/ds/1e6:.1f} MB/s, errors {de:.0f}")
print(f"agora:   {am:.0f} msgs {ab/1e6:.1f} MB in {as_:.2f}s = {am/as_:.0f} msg/s {ab/as_/1e6:.1f} MB/s, errors {ae:.0f}")
print(f"ratio agora/dovecot (msg/s): {(am/as_)/(dm/ds):.2f}")
PY
