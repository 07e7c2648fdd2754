#!/usr/bin/env bash
# IMAP SEARCH in every charset: the same mailbox of mail from the wider world (the
# messages of the charset corpus, each repeated with a number of its own) is
# APPENDed to Dovecot (Debian package, Maildir, no full-text index: it decodes bodies
# per query) and to Agora (which decodes once, at delivery); then the same
# `UID SEARCH CHARSET UTF-8 BODY word` queries run against each, and the hits must be
# the same count on both. With AGORA_OLD_BIN=PATH a second Agora build runs the same
# load (to compare two builds).
#   usage: bench/imap_search.sh [messages=5000] [repeats=5]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-5000}; R=${2:-5}
dovecot_imap_bench

# load PORT: APPENDs the N messages; run PORT LABEL: times the queries.
client() {
  python3 - "$@" <<'PY'
import imaplib, os, re, socket, statistics, sys, time
mode, port, n, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
corpus = "crates/agora/tests/corpus/mime"
msgs = [open(os.path.join(corpus, f), "rb").read() for f in sorted(os.listdir(corpus)) if f.endswith(".eml")]
m = imaplib.IMAP4("127.0.0.1", port)
# No Nagle on the client: a literal's CRLF never waits for an ACK, so only server work
# is timed (an older Agora delayed those ACKs by 40 ms).
m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
m.login("search@example.org", "pw")
if mode == "load":
    t = time.perf_counter()
    for i in range(n):
        raw = msgs[i % len(msgs)].replace(b"@corpus.test>", b".%d@corpus.test>" % i, 1)
        typ, data = m.append("INBOX", None, None, raw)
        assert typ == "OK", data
    print(f"APPEND\t{n}\t{n / (time.perf_counter() - t):.0f}")
    sys.exit(0)
m.select("INBOX", readonly=True)
words = ["пятницы", "午後三時", "월요일", "éléphant", "Grüße", "nothing-matches-this", "Three"]
for w in words:
    times, hits = [], None
    for _ in range(repeats):
        m.literal = w.encode()
        t = time.perf_counter()
        typ, data = m.uid("SEARCH", "CHARSET", "UTF-8", "BODY")
        times.append(time.perf_counter() - t)
        assert typ == "OK", data
        hits = len(data[0].split())
    print(f"{w}\t{hits}\t{statistics.median(times) * 1000:.1f}")
PY
}

# --- Dovecot ---
mkdir -p "$work/dovecot/run" "$work/dovecot/state" "$work/dovecot/mail"
echo "search@example.org:{PLAIN}pw" > "$work/dovecot/passwd"
chown -R nobody:nogroup "$work/dovecot/mail"
dovecot_plain_imap "$work/dovecot" 33143 > "$work/dovecot/dovecot.conf"
dovecot -F -c "$work/dovecot/dovecot.conf" &
sleep 2
client load 33143 "$N" "$R" > "$work/dovecot.txt"
client run 33143 "$N" "$R" >> "$work/dovecot.txt"
kill %1; wait %1 2>/dev/null || true

# --- Agora (and the other build, when asked) ---
start_quiet_dns 27353
agora_run() { # BIN OFFSET OUT
  mkdir -p "$work/a$2"
  printf '[auth]\nplaintext_without_tls = true\n' > "$work/a$2/agora.toml"
  start_agora "$1" "$work/a$2" --domain example.org --hostname mx.example.org --port-offset "$2" --bind 127.0.0.1
  add_users "$1" "$work/a$2" pw search@example.org
  client load $((143 + $2)) "$N" "$R" > "$3"
  client run $((143 + $2)) "$N" "$R" >> "$3"
  kill "$AGORA_PID"; wait "$AGORA_PID" 2>/dev/null || true
}
agora_run "$bin" 32000 "$work/agora.txt"
if [[ -n ${AGORA_OLD_BIN:-} ]]; then agora_run "$(realpath "$AGORA_OLD_BIN")" 34000 "$work/old.txt"; else : > "$work/old.txt"; fi

echo "messages=$N repeats=$R (APPEND: messages per second, one client; searches: median milliseconds per UID SEARCH CHARSET UTF-8 BODY)"
python3 - "$work/dovecot.txt" "$work/agora.txt" "$work/old.txt" <<'PY'
import sys
def rows(p):
    return [l.split("\t") for l in open(p).read().splitlines()]
d, a, o = rows(sys.argv[1]), rows(sys.argv[2]), rows(sys.argv[3])
print(f"{'word':24} {'hits D/A':>10} {'Dovecot':>9} {'Agora':>9} {'advantage':>14}" + (f" {'older Agora':>12}" if o else ""))
for i, (dw, a_) in enumerate(zip(d, a)):
    extra = f" {float(o[i][2]):12.1f}" if o else ""
    # For APPEND more is better, for searches less: the ratio is always Agora's advantage.
    ratio = float(a_[2]) / float(dw[2]) if dw[0] == "APPEND" else float(dw[2]) / float(a_[2])
    print(f"{dw[0]:24} {dw[1] + '/' + a_[1]:>10} {float(dw[2]):9.1f} {float(a_[2]):9.1f} {ratio:14.2f}" + extra)
PY
