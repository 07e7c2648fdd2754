# Shared by the benchmark scripts (sourced): a loopback DNS server that knows no names,
# and Agora started on a data directory that resolves through it, so that no benchmark
# ever asks the system's resolver.

# start_quiet_dns PORT: DNS on 127.0.0.1:PORT; sets BENCH_DNS to "127.0.0.1:PORT".
start_quiet_dns() {
  local out; out=$(mktemp)
  python3 bench/quiet_dns.py 127.0.0.1 "$1" >"$out" &
  for _ in $(seq 50); do grep -q ready "$out" && break; sleep 0.1; done
  grep -q ready "$out" || { echo "quiet DNS server did not start on port $1" >&2; exit 1; }
  rm -f "$out"
  BENCH_DNS="127.0.0.1:$1"
}

# start_agora BIN DATA [serve arguments...]: names $BENCH_DNS under [transport] nameservers
# in DATA/agora.toml (made if missing), starts `agora serve` with the arguments, waits
# for "agora: ready" (or shows the logs and fails); sets AGORA_PID. Logs: DATA.out, DATA.log.
start_agora() {
  local bin=$1 data=$2; shift 2
  mkdir -p "$data"
  python3 - "$data/agora.toml" "$BENCH_DNS" <<'PY'
import os, sys
path, dns = sys.argv[1], sys.argv[2]
text = open(path).read() if os.path.exists(path) else ""
line = f'nameservers = ["{dns}"]\n'
if "[transport]\n" in text:
    text = text.replace("[transport]\n", "[transport]\n" + line, 1)
else:
    text += "\n[transport]\n" + line
open(path, "w").write(text)
PY
  AGORA_LOG=${AGORA_LOG:-warn} ${AGORA_WRAP:-} "$bin" --data "$data" serve "$@" >"$data.out" 2>"$data.log" &
  AGORA_PID=$!
  for _ in $(seq 100); do grep -q "agora: ready" "$data.out" && break; sleep 0.1; done
  grep -q "agora: ready" "$data.out" || { cat "$data.out" "$data.log" >&2; exit 1; }
}

# add_users BIN DATA PASSWORD LOGIN...: accounts with one password.
add_users() {
  local bin=$1 data=$2 pw=$3; shift 3
  for login in "$@"; do echo "$pw" | "$bin" --data "$data" user add "$login" --password-stdin >/dev/null; done
}

# dovecot_imap_bench: for the benchmarks against Dovecot's IMAP server: it installed,
# Agora's release build in $bin, a private $work removed with the background jobs on exit.
dovecot_imap_bench() {
  export LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  [[ -x /usr/lib/dovecot/imap ]] || { apt-get update -qq && apt-get install -y -qq dovecot-imapd >/dev/null; }
  cargo build --release -q -p agora
  bin=$PWD/target/release/agora
  work=$(mktemp -d); chmod 755 "$work"
  trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
}

# dovecot_conf DIR PROTOCOLS: what every benchmark's private Dovecot shares — its run,
# state and log under DIR, users from DIR/passwd with plain passwords, Maildirs under
# DIR/mail owned by nobody; the caller adds TLS, authentication and listeners.
dovecot_conf() {
  cat <<CONF
protocols = $2
listen = 127.0.0.1
base_dir = $1/run
state_dir = $1/state
log_path = $1/dovecot.log
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $1/passwd
}
userdb {
  driver = static
  args = uid=65534 gid=65534 home=$1/mail/%u
}
mail_location = maildir:~/Maildir
CONF
}

# dovecot_plain_imap DIR PORT: a private Dovecot serving IMAP in the clear on
# 127.0.0.1:PORT (no imaps), PLAIN and LOGIN allowed without TLS (loopback benchmarks).
dovecot_plain_imap() {
  dovecot_conf "$1" imap
  cat <<CONF
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
service imap-login {
  inet_listener imap {
    port = $2
  }
  inet_listener imaps {
    port = 0
  }
}
CONF
}

# dovecot_imap_stress DIR USERS PORT: a private Dovecot for imaptest's stress mode on
# 127.0.0.1:PORT: USERS users user1..N@example.org with password "pw", Maildirs, in the
# clear, in its high-performance login mode with reused imap processes (with the Debian
# defaults, a new imap-login and imap process per connection, it logs in about three
# times slower on this machine). Writes DIR/dovecot.conf.
dovecot_imap_stress() {
  local dir=$1 users=$2 port=$3
  mkdir -p "$dir/run" "$dir/state" "$dir/mail"
  : > "$dir/passwd"
  for i in $(seq 1 "$users"); do echo "user$i@example.org:{PLAIN}pw" >> "$dir/passwd"; done
  chown -R nobody:nogroup "$dir/mail"
  { dovecot_conf "$dir" imap; cat <<CONF
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
mail_max_userip_connections = 200
default_process_limit = 500
default_client_limit = 4000
service imap-login {
  inet_listener imap {
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = 2
  client_limit = 1000
}
service imap {
  service_count = 1000
  process_min_avail = 20
}
CONF
  } > "$dir/dovecot.conf"
}
