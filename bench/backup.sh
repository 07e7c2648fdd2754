#!/usr/bin/env bash
# Backups of a live server, against Dovecot's own tool: the same mailbox (the charset
# corpus repeated with numbers of their own, every 50th message with a 200 KB
# attachment) is APPENDed to Dovecot (Debian package, Maildir) and to Agora; then,
# with each server running, Dovecot's `doveadm backup` (dsync into a Maildir) against
# `agora backup DIR`, and Dovecot's `doveadm force-resync` against `agora store check`
# (every body read and hashed) and `--quick`; and `agora restore` of the copy.
#   usage: bench/backup.sh [messages=20000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-20000}
dovecot_imap_bench

load() { # PORT: APPENDs the N messages
  python3 - "$1" "$N" <<'PY'
import base64, imaplib, os, socket, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
corpus = "crates/agora/tests/corpus/mime"
msgs = [open(os.path.join(corpus, f), "rb").read() for f in sorted(os.listdir(corpus)) if f.endswith(".eml")]
blob = base64.encodebytes(os.urandom(150_000)).replace(b"\n", b"\r\n")
m = imaplib.IMAP4("127.0.0.1", port)
m.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
m.login("backup@example.org", "pw")
for i in range(n):
    raw = msgs[i % len(msgs)].replace(b"@corpus.test>", b".%d@corpus.test>" % i, 1)
    if i % 50 == 0:
        raw = (b"From: a@corpus.test\r\nSubject: big %d\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nsee\r\n"
               b"--b\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
               % i + blob + b"\r\n--b--\r\n")
    typ, data = m.append("INBOX", None, None, raw)
    assert typ == "OK", data
PY
}
secs() { local t=$(date +%s.%N); "$@" >/dev/null; python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.2f}')" "$t" "$(date +%s.%N)"; }

# --- Dovecot ---
d=$work/dovecot
mkdir -p "$d/run" "$d/state" "$d/mail" "$d/copy"
echo "backup@example.org:{PLAIN}pw" > "$d/passwd"
chown -R nobody:nogroup "$d/mail" "$d/copy"
dovecot_plain_imap "$d" 35143 > "$d/dovecot.conf"
dovecot -F -c "$d/dovecot.conf" &
sleep 2
load 35143
d_backup=$(secs doveadm -c "$d/dovecot.conf" backup -u backup@example.org "maildir:$d/copy/Maildir")
d_check=$(secs doveadm -c "$d/dovecot.conf" force-resync -u backup@example.org '*')
d_bytes=$(du -sb "$d/copy" | cut -f1)
kill %1; wait %1 2>/dev/null || true

# --- Agora ---
start_quiet_dns 35353
a=$work/agora
mkdir -p "$a"
printf '[auth]\nplaintext_without_tls = true\n' > "$a/agora.toml"
start_agora "$bin" "$a" --domain example.org --hostname mx.example.org --port-offset 36000 --bind 127.0.0.1
add_users "$bin" "$a" pw backup@example.org
load 36143
a_backup=$(secs "$bin" --data "$a" backup "$work/agora-copy")
a_check=$(secs "$bin" --data "$a" store check)
a_quick=$(secs "$bin" --data "$a" store check --quick)
a_restore=$(secs "$bin" --data "$work/agora-restored" restore "$work/agora-copy")
a_bytes=$(du -sb "$work/agora-copy" | cut -f1)
kill "$AGORA_PID"; wait "$AGORA_PID" 2>/dev/null || true

echo "messages=$N, servers running (seconds; ratio: Dovecot's time over Agora's)"
printf '%-44s %9s %9s %7s\n' job Dovecot Agora ratio
row() { python3 -c "import sys; d,a=float(sys.argv[2]),float(sys.argv[3]); print(f'{sys.argv[1]:44} {d:9.2f} {a:9.2f} {d/a:7.1f}')" "$@"; }
row "backup (doveadm backup / agora backup)" "$d_backup" "$a_backup"
row "check (force-resync / store check, hashes)" "$d_check" "$a_check"
printf '%-44s %9s %9s\n' "agora store check --quick" - "$a_quick"
printf '%-44s %9s %9s\n' "agora restore (verified)" - "$a_restore"
printf '%-44s %9s %9s\n' "size of the copy (MB)" "$((d_bytes / 1000000))" "$((a_bytes / 1000000))"
