#!/usr/bin/env bash
# POP3 download benchmark: the same maildrops (USERS users x MSGS messages of about
# 2 KiB) served by Dovecot's POP3 (Debian package, Maildir) and by Agora, in the same
# run; bench/pop3_load.py logs every user in at once, RETRs every message, QUITs.
# Each server is measured in clear and over STLS (both with one ECDSA P-256
# certificate), each after a warm-up pass.
# Each figure is the median of ROUNDS (default 5) measured passes.
#   usage: bench/pop3.sh [users=20] [messages=1000]
# AGORA_BIN=PATH measures that build instead of building this tree.
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
USERS=${1:-20}; MSGS=${2:-1000}; ROUNDS=${ROUNDS:-5}

# measure PORT [stls]: a warm-up pass, then the median of ROUNDS passes ("msgs bytes secs errors").
measure() {
  python3 bench/pop3_load.py 127.0.0.1 "$1" 'u{i}@bench.test' secret "$USERS" ${2:-} >/dev/null
  for _ in $(seq "$ROUNDS"); do python3 bench/pop3_load.py 127.0.0.1 "$1" 'u{i}@bench.test' secret "$USERS" ${2:-}; done |
    sort -k3 -g | sed -n "$(( (ROUNDS + 1) / 2 ))p"
}

scripts/install-test-deps --bench >/dev/null
if [[ -n ${AGORA_BIN:-} ]]; then bin=$(realpath "$AGORA_BIN"); else cargo build --release -q -p agora; bin=$PWD/target/release/agora; fi
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=mx.bench.test -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
chmod 644 "$work/key.pem"

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
ssl = yes
ssl_cert = <$work/cert.pem
ssl_key = <$work/key.pem
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
# The warm-up pass builds Dovecot's index files.
read -r d_msgs d_bytes d_secs d_err < <(measure 21110)
read -r ds_msgs ds_bytes ds_secs ds_err < <(measure 21110 stls)
kill %1; wait %1 2>/dev/null || true

# --- Agora ---
mkdir -p "$work/agora"
printf '[server]\nhostname = "mx.bench.test"\ndomain = "bench.test"\n[auth]\nplaintext_without_tls = true\n[tls]\ncert = "%s"\nkey = "%s"\n' "$work/cert.pem" "$work/key.pem" > "$work/agora/agora.toml"
start_quiet_dns 27353
start_agora "$bin" "$work/agora" --port-offset 20000 --bind 127.0.0.1
add_users "$bin" "$work/agora" secret $(seq -f "u%g@bench.test" 0 $((USERS-1)))
python3 - "$work/msgs" "$USERS" <<'PY'
import os, smtplib, sys, threading
d, users = sys.argv[1], int(sys.argv[2])
msgs = [open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))]
def send(i):
    # A new session every 500 messages: a session's recipients are limited.
    for k in range(0, len(msgs), 500):
        s = smtplib.SMTP("127.0.0.1", 20025)
        for m in msgs[k:k + 500]:
            s.sendmail("bench@remote.test", [f"u{i}@bench.test"], m)
        s.quit()
ts = [threading.Thread(target=send, args=(i,)) for i in range(users)]
[t.start() for t in ts]; [t.join() for t in ts]
PY
# The warm-up pass fills Agora's verified-login cache.
read -r a_msgs a_bytes a_secs a_err < <(measure 20110)
read -r as_msgs as_bytes as_secs as_err < <(measure 20110 stls)

report() {
python3 - "$@" <<'PY'
import sys
mode = sys.argv[1]
dm, db, ds, de, am, ab, as_, ae = map(float, sys.argv[2:])
print(f"{mode}:")
print(f"  dovecot: {dm:.0f} msgs {db/1e6:.1f} MB in {ds:.2f}s = {dm/ds:.0f} msg/s {db/ds/1e6:.1f} MB/s, errors {de:.0f}")
print(f"  agora:   {am:.0f} msgs {ab/1e6:.1f} MB in {as_:.2f}s = {am/as_:.0f} msg/s {ab/as_/1e6:.1f} MB/s, errors {ae:.0f}")
print(f"  ratio agora/dovecot (msg/s): {(am/as_)/(dm/ds):.2f}")
PY
}
report clear "$d_msgs" "$d_bytes" "$d_secs" "$d_err" "$a_msgs" "$a_bytes" "$a_secs" "$a_err"
report STLS "$ds_msgs" "$ds_bytes" "$ds_secs" "$ds_err" "$as_msgs" "$as_bytes" "$as_secs" "$as_err"
