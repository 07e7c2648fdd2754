#!/usr/bin/env bash
# LDAP benchmark: 389-ds's ldclt drives random searches by mail and random simple binds
# over PEOPLE people held by Agora and by OpenLDAP slapd (mdb backend), in the same run.
# Binds are compared with the same password hashes on both sides (Agora's argon2id
# values, verified by slapd's argon2 module) and with each side's default ({SSHA} for
# slapd, argon2id for Agora). Also times `agora user import` of the people.
#   usage: bench/ldap.sh [people=10000] [seconds=30] [threads=8]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; SECS=${2:-30}; THREADS=${3:-8}
SAMPLES=$(( (SECS + 9) / 10 ))

scripts/install-test-deps --bench >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
start_quiet_dns 25353
BASE="dc=example,dc=org"

# --- The people: userNNNNN with password passNNNNN (ldclt's XXXXX is five digits) ---
python3 - "$work/people.csv" "$N" <<'PY'
import sys
path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write("mail,displayName,sn,givenName,title,telephoneNumber,password\n")
    for i in range(n):
        f.write(f"user{i:05d}@example.org,User {i:05d},Number{i:05d},User,Engineer,+1 555 {i:05d},pass{i:05d}\n")
PY

# --- Agora: plain passwords in the clear allowed on loopback for ldclt (disclosed) ---
mkdir -p "$work/agora"
printf '[auth]\nplaintext_without_tls = true\n' > "$work/agora/agora.toml"
start_agora "$bin" "$work/agora" --domain example.org --port-offset 20000 --bind 127.0.0.1
t0=$(date +%s.%N)
"$bin" --data "$work/agora" user import "$work/people.csv" >/dev/null
t1=$(date +%s.%N)
IMPORT_PLAIN=$(python3 -c "print(f'{$t1-$t0:.1f}')")

# The same argon2id hashes for slapd, and {SSHA} ones for its default.
python3 - "$work" "$N" <<'PY'
import base64, hashlib, os, sqlite3, sys
work, n = sys.argv[1], int(sys.argv[2])
db = sqlite3.connect(f"file:{work}/agora/agora.db?mode=ro", uri=True)
hashes = dict(db.execute("SELECT login, password_hash FROM accounts"))
head = ["dn: dc=example,dc=org", "objectClass: dcObject", "objectClass: organization", "o: example.org", "dc: example", "",
        "dn: ou=people,dc=example,dc=org", "objectClass: organizationalUnit", "ou: people", ""]
for variant in ("argon2", "ssha"):
    out = list(head)
    for i in range(n):
        login = f"user{i:05d}@example.org"
        if variant == "argon2":
            pw = "{ARGON2}" + hashes[login]
        else:
            salt = os.urandom(8)
            pw = "{SSHA}" + base64.b64encode(hashlib.sha1(f"pass{i:05d}".encode() + salt).digest() + salt).decode()
        out += [f"dn: uid=user{i:05d},ou=people,dc=example,dc=org", "objectClass: inetOrgPerson", f"uid: user{i:05d}",
                f"cn: User {i:05d}", f"displayName: User {i:05d}", f"sn: Number{i:05d}", "givenName: User", "title: Engineer",
                f"telephoneNumber: +1 555 {i:05d}", f"mail: {login}", "userPassword:: " + base64.b64encode(pw.encode()).decode(), ""]
    open(f"{work}/slapd-{variant}.ldif", "w").write("\n".join(out))
PY

# The same people with {SSHA} hashes into another domain: an import that keeps the
# hashes (replaced by argon2id at each first login).
"$bin" --data "$work/agora" domain add import.test >/dev/null
sed -e 's/@example\.org/@import.test/' -e 's/dc=example,dc=org/dc=import,dc=test/' "$work/slapd-ssha.ldif" > "$work/import.ldif"
t0=$(date +%s.%N)
"$bin" --data "$work/agora" user import "$work/import.ldif" >/dev/null
t1=$(date +%s.%N)
IMPORT_HASHED=$(python3 -c "print(f'{$t1-$t0:.1f}')")

# --- slapd (mdb), as its users run it: indexes on what is searched, logging off ---
start_slapd() { # VARIANT PORT
  local d="$work/slapd-$1"; mkdir -p "$d/db"
  cat > "$d/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
$( [[ $1 == argon2 ]] && echo "moduleload argon2" )
pidfile $d/slapd.pid
argsfile $d/slapd.args
loglevel 0
database mdb
maxsize 1073741824
suffix "$BASE"
rootdn "cn=admin,$BASE"
rootpw secret
directory $d/db
index objectClass eq
index mail,uid eq
index cn,sn,givenName eq,sub
access to attrs=userPassword by self write by anonymous auth by * none
access to * by users read by * none
CONF
  slapadd -q -f "$d/slapd.conf" -l "$work/slapd-$1.ldif" 2>"$d/slapadd.log"
  slapd -f "$d/slapd.conf" -h "ldap://127.0.0.1:$2/" -d 0 2>"$d/slapd.log" &
  for _ in $(seq 100); do ldapsearch -x -H "ldap://127.0.0.1:$2" -b "" -s base >/dev/null 2>&1 && return; sleep 0.1; done
  cat "$d/slapd.log" >&2; exit 1
}
start_slapd argon2 21389
start_slapd ssha 22389

# ldclt prints "Global average rate: R/thr  (S/sec)": the per-second figure.
ldclt_rate() { sed -n 's/.*Global average rate: .*( *\([0-9.]*\)\/sec).*/\1/p' | tail -1; }
search() { # PORT
  ldclt -h 127.0.0.1 -p "$1" -D "uid=user00000,ou=people,$BASE" -w pass00000 -b "$BASE" \
    -e esearch,random -r 0 -R $((N-1)) -f "mail=userXXXXX@example.org" -n "$THREADS" -N "$SAMPLES" -q 2>&1 | ldclt_rate
}
binds() { # PORT
  ldclt -h 127.0.0.1 -p "$1" -e bindeach,bindonly,randombinddn,randombinddnlow=0,randombinddnhigh=$((N-1)) \
    -D "uid=userXXXXX,ou=people,$BASE" -w passXXXXX -n "$THREADS" -N "$SAMPLES" -q 2>&1 | ldclt_rate
}
# A wrong password for every bind must fail on both: the rates above are real checks.
check_refused() { # PORT
  ! ldapwhoami -x -H "ldap://127.0.0.1:$1" -D "uid=user00001,ou=people,$BASE" -w wrong >/dev/null 2>&1
}
check_refused 20389; check_refused 21389
ldapwhoami -x -H "ldap://127.0.0.1:20389" -D "uid=user00001,ou=people,$BASE" -w pass00001 >/dev/null
ldapwhoami -x -H "ldap://127.0.0.1:21389" -D "uid=user00001,ou=people,$BASE" -w pass00001 >/dev/null
ldapwhoami -x -H "ldap://127.0.0.1:22389" -D "uid=user00001,ou=people,$BASE" -w pass00001 >/dev/null

s_agora=$(search 20389); s_slapd=$(search 21389)
b_agora=$(binds 20389); b_slapd_argon=$(binds 21389); b_slapd_ssha=$(binds 22389)
ratio() { python3 -c "a, b = float('${1:-0}' or 0), float('${2:-0}' or 0); print(f'{a/b:.2f}' if b else '-')"; }
echo "people: $N; $THREADS ldclt threads; $SECS s per measurement"
echo "agora user import of $N people: ${IMPORT_PLAIN} s with plain passwords (argon2id + SCRAM on every core), ${IMPORT_HASHED} s pre-hashed ({SSHA})"
printf '%-44s %12s %12s %8s\n' "measure" "Agora/s" "slapd/s" "ratio"
printf '%-44s %12s %12s %8s\n' "search (mail=userN@example.org), random" "$s_agora" "$s_slapd" "$(ratio "$s_agora" "$s_slapd")"
printf '%-44s %12s %12s %8s\n' "simple bind, random user, same argon2id" "$b_agora" "$b_slapd_argon" "$(ratio "$b_agora" "$b_slapd_argon")"
printf '%-44s %12s %12s %8s\n' "simple bind, each side's default hash" "$b_agora" "$b_slapd_ssha" "$(ratio "$b_agora" "$b_slapd_ssha")"
