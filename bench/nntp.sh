#!/usr/bin/env bash
# NNTP reader benchmark: the same ARTICLES articles (about 2 KiB) in one newsgroup,
# served by INN's nnrpd (Debian inn2: tradspool, tradindexed overview, a standalone
# nnrpd with -n, one process per reader) and by Agora, in the same run. READERS
# readers at once each do GROUP, OVER over the NEWEST newest articles, then ARTICLE of
# each of them (bench/nntp_load.py), one at a time and then with DEPTH commands in
# flight. Both servers are loaded by IHAVE over 4 connections; one warm-up pass,
# then the measured ones.
#   usage: bench/nntp.sh [readers=20] [articles=10000] [newest=1000] [depth=16]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
READERS=${1:-20}; ARTS=${2:-10000}; NEWEST=${3:-1000}; DEPTH=${4:-16}

scripts/install-test-deps >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  scripts/inn-instance stop "$work/inn" >/dev/null 2>&1 || true
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT

python3 - "$work/arts" "$ARTS" <<'PY'
import os, sys
out, n = sys.argv[1], int(sys.argv[2])
os.makedirs(out)
for i in range(n):
    body = "".join(f"line {j} of article {i}: " + "abcdefghijklmnopqrstuvwxyz0123456789" + "\r\n" for j in range(32))
    refs = f"References: <{i - 1}@bench.test>\r\n" if i % 5 else ""
    with open(f"{out}/{i:06d}", "w", newline="") as f:
        f.write(f"Path: feeder.bench.test!not-for-mail\r\nFrom: Poster {i % 50} <p{i % 50}@bench.test>\r\n"
                f"Newsgroups: bench.test\r\nSubject: article {i}\r\nDate: Sat, 28 Nov 2026 00:00:00 +0000\r\n"
                f"Message-ID: <{i}@bench.test>\r\n{refs}\r\n" + body)
PY

measure() { # HOST PORT DEPTH -> "articles bytes seconds errors overview_lines"
  python3 bench/nntp_load.py read "$1" "$2" bench.test "$READERS" "$NEWEST" "$3"
}

# --- INN ---
scripts/inn-instance start "$work/inn" 127.0.0.1 21119 inn.bench.test 127.0.0.3 21120 nobody.bench.test bench.test >/dev/null
read -r i_taken i_refused < <(python3 bench/nntp_load.py feed 127.0.0.1 21119 "$work/arts" 4)
scripts/inn-instance nnrpd "$work/inn" 127.0.0.1 21121
sleep 1
measure 127.0.0.1 21121 "$DEPTH" >/dev/null
read -r i_arts i_bytes i_secs i_err i_over < <(measure 127.0.0.1 21121 1)
read -r ip_arts ip_bytes ip_secs ip_err ip_over < <(measure 127.0.0.1 21121 "$DEPTH")
scripts/inn-instance stop "$work/inn" >/dev/null

# --- Agora ---
mkdir -p "$work/agora"
printf '[server]\nhostname = "mx.bench.test"\ndomain = "bench.test"\n[nntp.peers.loader]\nhost = "127.0.0.1"\nsend = false\n' > "$work/agora/agora.toml"
start_quiet_dns 27353
start_agora "$bin" "$work/agora" --port-offset 20000 --bind 127.0.0.1
"$bin" --data "$work/agora" public add Bench --newsgroup bench.test >/dev/null
"$bin" --data "$work/agora" public permission Bench anyone reader >/dev/null
read -r a_taken a_refused < <(python3 bench/nntp_load.py feed 127.0.0.1 20119 "$work/arts" 4)
measure 127.0.0.1 20119 "$DEPTH" >/dev/null
read -r a_arts a_bytes a_secs a_err a_over < <(measure 127.0.0.1 20119 1)
read -r ap_arts ap_bytes ap_secs ap_err ap_over < <(measure 127.0.0.1 20119 "$DEPTH")

python3 - "$DEPTH" "$i_taken" "$i_arts" "$i_bytes" "$i_secs" "$i_err" "$i_over" "$a_taken" "$a_arts" "$a_bytes" "$a_secs" "$a_err" "$a_over" \
  "$ip_arts" "$ip_secs" "$ip_err" "$ap_arts" "$ap_secs" "$ap_err" <<'PY'
import sys
depth = sys.argv[1]
it, ia, ib, is_, ie, io_, at, aa, ab, as_, ae, ao, pia, pis, pie, paa, pas, pae = map(float, sys.argv[2:])
print(f"one ARTICLE at a time:")
print(f"  inn nnrpd: {it:.0f} articles loaded; {ia:.0f} articles {ib/1e6:.1f} MB ({io_:.0f} overview lines) in {is_:.2f}s = {ia/is_:.0f} articles/s, errors {ie:.0f}")
print(f"  agora:     {at:.0f} articles loaded; {aa:.0f} articles {ab/1e6:.1f} MB ({ao:.0f} overview lines) in {as_:.2f}s = {aa/as_:.0f} articles/s, errors {ae:.0f}")
print(f"  ratio agora/inn (articles/s): {(aa/as_)/(ia/is_):.2f}")
print(f"{depth} ARTICLEs in flight:")
print(f"  inn nnrpd: {pia:.0f} articles in {pis:.2f}s = {pia/pis:.0f} articles/s, errors {pie:.0f}")
print(f"  agora:     {paa:.0f} articles in {pas:.2f}s = {paa/pas:.0f} articles/s, errors {pae:.0f}")
print(f"  ratio agora/inn (articles/s): {(paa/pas)/(pia/pis):.2f}")
PY
