#!/usr/bin/env bash
# Relay benchmark: messages accepted and delivered onwards to smtp-sink, by Postfix
# (Debian package, a private instance with relayhost = the sink) and by Agora
# (smarthost = the sink), in the same run with the same load; the clock stops when
# smtp-sink has received all N. Both servers make each message durable before
# accepting it. Two ways in:
#   relay:      smtp-source sends N messages over S sessions from a trusted network
#               (Postfix mynetworks, Agora [smtp] trusted_networks), port 25;
#   submission: submit_load.py, S clients each doing STARTTLS and AUTH PLAIN then K
#               messages per connection (Postfix smtpd with SASL from a private
#               Dovecot auth service, Agora's port 587).
#   usage: bench/transport.sh [messages=5000] [sessions=20] [bytes=1024] [relay|submission] [K=1]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-5000}; S=${2:-20}; L=${3:-1024}; MODE=${4:-relay}; K=${5:-1}

scripts/install-test-deps --bench >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  postfix -c "$work/postfix/etc" stop >/dev/null 2>&1 || true
  [[ -f $work/opendkim.pid ]] && kill "$(cat "$work/opendkim.pid")" 2>/dev/null || true
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
wait_for() { # port -> waits until the sink has N messages (time in DONE), then checks
  # that no more arrive: exactly N, so a duplicate delivery shows.
  for _ in $(seq 6000); do [[ $(count "$1") -ge $N ]] && break; sleep 0.05; done
  DONE=$(now)
  [[ $(count "$1") -ge $N ]] || { echo "error: only $(count "$1") of $N messages reached the sink" >&2; return 1; }
  sleep 2
  local got; got=$(count "$1")
  [[ $got -eq $N ]] || { echo "error: $got messages reached the sink for $N sent (duplicates)" >&2; return 1; }
}
src() { # host:port of the relay path; submission goes to $2
  if [[ $MODE == submission ]]; then
    read -r ok _ errs < <(python3 bench/submit_load.py 127.0.0.1 "$2" bench@example.org secret someone@remote.test "$N" "$S" "$K" "$L")
    [[ $errs == 0 ]] || echo "warning: $errs errors, $ok accepted" >&2
  else
    smtp-source -s "$S" -l "$L" -m "$N" -f bench@example.org -t someone@remote.test "$1"
  fi
}

# Submission: a private Dovecot answers Postfix's SASL questions (PLAIN passwd-file).
if [[ $MODE == submission ]]; then
  mkdir -p "$work/dovecot/run" "$work/dovecot/state"
  echo "bench@example.org:{PLAIN}secret" > "$work/dovecot/passwd"
  cat > "$work/dovecot/dovecot.conf" <<CONF
protocols = none
listen = 127.0.0.1
base_dir = $work/dovecot/run
state_dir = $work/dovecot/state
log_path = $work/dovecot/dovecot.log
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $work/dovecot/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=/nonexistent
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = 21035
  }
}
CONF
  dovecot -F -c "$work/dovecot/dovecot.conf" &
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=relay.bench.test \
    -keyout "$work/tls.key" -out "$work/tls.pem" 2>/dev/null
fi

# --- Agora, twice: DKIM-signing as it does by default, then without signing (Postfix
# here has no DKIM milter, so the second run is the like-for-like one) ---
agora() { # sink-port sign(true|false) -> start and end times in T0 T1
  sink "$1"
  rm -rf "$work/agora"; mkdir -p "$work/agora"
  cat > "$work/agora/agora.toml" <<CONF
[server]
hostname = "mx.example.org"
domain = "example.org"
[smtp]
trusted_networks = ["127.0.0.0/8"]
dkim_sign = $2
[transport]
smarthost = "127.0.0.1:$1"
poll_secs = 1
CONF
  start_agora "$bin" "$work/agora" --port-offset 20000 --bind 127.0.0.1
  pid=$AGORA_PID
  add_users "$bin" "$work/agora" secret bench@example.org
  T0=$(now); src 127.0.0.1:20025 20587; wait_for "$1"; T1=$DONE
  kill "$pid"; wait "$pid" 2>/dev/null || true
}
start_quiet_dns 27353
agora 21033 true; t2=$T0; t3=$T1
# The RSA-2048 key Agora signed with, for OpenDKIM (PKCS#1 DER in the store).
selector=$(python3 - "$work/agora" "$work/dkim.der" <<'PY'
import sqlite3, sys, glob
db = sqlite3.connect(glob.glob(sys.argv[1] + "/*.db")[0])
sel, key = db.execute("SELECT selector, private_key FROM dkim_keys WHERE algorithm = 'rsa' AND domain = 'example.org' ORDER BY created DESC LIMIT 1").fetchone()
open(sys.argv[2], "wb").write(key)
print(sel)
PY
)
openssl rsa -inform DER -in "$work/dkim.der" -out "$work/dkim.pem" 2>/dev/null
chmod 600 "$work/dkim.pem"
agora 21036 false; t4=$T0; t5=$T1


# --- OpenDKIM (signing for Postfix, as its users run it) ---
cat > "$work/opendkim.conf" <<CONF
Syslog no
Background yes
PidFile $work/opendkim.pid
Mode s
Domain example.org
Selector $selector
KeyFile $work/dkim.pem
RequireSafeKeys false
Socket inet:21040@127.0.0.1
Canonicalization relaxed/relaxed
SignatureAlgorithm rsa-sha256
InternalHosts 127.0.0.0/8
CONF
opendkim -x "$work/opendkim.conf"
sleep 0.5

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
# Signing as Postfix users do: OpenDKIM as a milter, with Agora's own RSA-2048 key.
smtpd_milters = inet:127.0.0.1:21040
non_smtpd_milters = \$smtpd_milters
milter_default_action = tempfail
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
tlsmgr unix - - n 1000? 1 tlsmgr
127.0.0.1:21034 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_tls_cert_file=$work/tls.pem
  -o smtpd_tls_key_file=$work/tls.key
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_sasl_type=dovecot
  -o smtpd_sasl_path=inet:127.0.0.1:21035
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
CONF
[[ $MODE == submission ]] || sed -i '/^127.0.0.1:21034/,$d' "$d/etc/master.cf"
postfix -c "$d/etc" start >/dev/null
sleep 1
t0=$(now); src 127.0.0.1:21032 21034; wait_for 21031; t1=$DONE
postfix -c "$d/etc" stop >/dev/null

python3 - "$N" "$t0" "$t1" "$t2" "$t3" "$t4" "$t5" "$MODE" <<'PY'
import sys
n, t0, t1, t2, t3, t4, t5 = map(float, sys.argv[1:8])
p, a, u = n / (t1 - t0), n / (t3 - t2), n / (t5 - t4)
print(f"{sys.argv[8]} messages={n:.0f}: postfix+opendkim {p:.0f} msg/s ({t1 - t0:.1f} s), "
      f"agora signing {a:.0f} msg/s ({t3 - t2:.1f} s), agora not signing {u:.0f} msg/s ({t5 - t4:.1f} s)")
print(f"ratio agora/postfix: {a / p:.2f} signing, {u / p:.2f} not signing")
PY
