#!/usr/bin/env bash
# Replication benchmark: OpenLDAP slapd as the consumer (refreshAndPersist over
# StartTLS), once of Agora on 379 and once of OpenLDAP slapd with syncprov holding the
# same PEOPLE people, in the same run. Times the first full copy (consumer started
# until it holds every person) and CHANGES modifications made on the provider over
# LDAP until the consumer holds the last one.
#   usage: bench/replication.sh [people=10000] [changes=1000]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-10000}; CHANGES=${2:-1000}

scripts/install-test-deps >/dev/null
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() {
  for p in "$work"/*/slapd.pid; do [[ -f $p ]] && kill "$(cat "$p")" 2>/dev/null || true; done
  kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"
}
trap cleanup EXIT
start_quiet_dns 25354
BASE="dc=example,dc=org"
export LDAPTLS_REQCERT=never

# --- The people, with {SSHA} hashes: the same LDIF for both providers ---
python3 - "$work/people.ldif" "$N" <<'PY'
import base64, hashlib, sys
path, n = sys.argv[1], int(sys.argv[2])
out = ["dn: dc=example,dc=org", "objectClass: dcObject", "objectClass: organization", "o: example.org", "dc: example", "",
       "dn: ou=people,dc=example,dc=org", "objectClass: organizationalUnit", "ou: people", ""]
for i in range(n):
    salt = b"%08d" % i
    pw = "{SSHA}" + base64.b64encode(hashlib.sha1(f"pass{i:05d}".encode() + salt).digest() + salt).decode()
    out += [f"dn: uid=user{i:05d},ou=people,dc=example,dc=org", "objectClass: inetOrgPerson", f"uid: user{i:05d}",
            f"cn: User {i:05d}", f"sn: Number{i:05d}", "givenName: User", "title: Engineer",
            f"telephoneNumber: +1 555 {i:05d}", f"mail: user{i:05d}@example.org", f"userPassword: {pw}", ""]
out += ["dn: uid=repl,ou=people,dc=example,dc=org", "objectClass: inetOrgPerson", "uid: repl", "cn: repl", "sn: repl",
        "mail: repl@example.org", ""]
open(path, "w").write("\n".join(out))
PY
python3 - "$work/changes.ldif" "$N" "$CHANGES" <<'PY'
import sys
path, n, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with open(path, "w") as f:
    for j in range(k):
        f.write(f"dn: uid=user{j % n:05d},ou=people,dc=example,dc=org\nchangetype: modify\nreplace: title\ntitle: Change {j}\n\n")
PY
LAST_UID=$(printf 'user%05d' $(( (CHANGES - 1) % N )))

# --- Agora: the people imported (its administrator is one person more), a replicator ---
mkdir -p "$work/agora"
start_agora "$bin" "$work/agora" --domain example.org --port-offset 20000 --bind 127.0.0.1
"$bin" --data "$work/agora" user import "$work/people.ldif" >/dev/null
"$bin" --data "$work/agora" user remove repl@example.org >/dev/null
echo repl-secret | "$bin" --data "$work/agora" user add repl@example.org --role replicator --password-stdin >/dev/null
ADMIN_PW=$(sed -n 's/.*(shown only this once): //p' "$work/agora.out")
"$bin" --data "$work/agora" ldap schema > "$work/agora.schema"

# --- slapd provider (mdb, syncprov), as its users run it: indexes, logging off, TLS ---
mkdir -p "$work/hub/db"
cat > "$work/hub/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
moduleload syncprov
pidfile $work/hub/slapd.pid
loglevel 0
TLSCertificateFile $work/agora/tls/cert.pem
TLSCertificateKeyFile $work/agora/tls/key.pem
database mdb
suffix "$BASE"
rootdn "cn=admin,$BASE"
rootpw secret
directory $work/hub/db
maxsize 1073741824
index objectClass,entryUUID,entryCSN,uid,mail eq
overlay syncprov
syncprov-checkpoint 100 10
CONF
slapadd -q -f "$work/hub/slapd.conf" -l "$work/people.ldif" >/dev/null 2>&1
/usr/sbin/slapd -f "$work/hub/slapd.conf" -h "ldap://127.0.0.1:23890/" -d 0 >/dev/null 2>&1 &
for _ in $(seq 100); do ldapsearch -x -H ldap://127.0.0.1:23890 -b "" -s base 1.1 >/dev/null 2>&1 && break; sleep 0.1; done

now() { date +%s.%N; }
count() { # URL: persons on a consumer
  ldapsearch -x -LLL -H "$1" -D "cn=admin,$BASE" -w secret -b "$BASE" '(objectClass=inetOrgPerson)' 1.1 2>/dev/null | grep -c '^dn:' || true
}
# consumer NAME PORT PROVIDER BINDDN CREDENTIALS: a fresh slapd copying PROVIDER.
consumer() {
  local d="$work/$1"; mkdir -p "$d/db"
  cat > "$d/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include $work/agora.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $d/slapd.pid
loglevel 0
database mdb
suffix "$BASE"
rootdn "cn=admin,$BASE"
rootpw secret
directory $d/db
maxsize 1073741824
index objectClass,entryUUID,entryCSN eq
syncrepl rid=001 provider=$3 type=refreshAndPersist retry="1 +" searchbase="$BASE" bindmethod=simple binddn="$4" credentials=$5 starttls=critical tls_reqcert=never
CONF
  /usr/sbin/slapd -f "$d/slapd.conf" -h "ldap://127.0.0.1:$2/" -d 0 >/dev/null 2>&1 &
}
# run NAME PORT PROVIDER BINDDN CREDENTIALS WRITE-URL WRITE-DN WRITE-PW PERSONS
run() {
  local url="ldap://127.0.0.1:$2" t0 t1 t2 tw t3
  t0=$(now)
  consumer "$1" "$2" "$3" "$4" "$5"
  until [[ $(count "$url") -ge $9 ]]; do sleep 0.2; done
  t1=$(now)
  t2=$(now)
  ldapmodify -x -ZZ -H "$6" -D "$7" -w "$8" -f "$work/changes.ldif" >/dev/null
  tw=$(now)
  until ldapsearch -x -LLL -H "$url" -D "cn=admin,$BASE" -w secret -b "uid=$LAST_UID,ou=people,$BASE" -s base title 2>/dev/null \
      | grep -q "title: Change $((CHANGES - 1))$"; do sleep 0.05; done
  t3=$(now)
  python3 -c "print(f'{$t1-$t0:.2f} {$t3-$t2:.2f} {$tw-$t2:.2f}')"
}

read -r A_COPY A_CHANGES A_WRITES < <(run from-agora 23891 "ldap://127.0.0.1:20379" "uid=repl,ou=people,$BASE" repl-secret \
  "ldap://127.0.0.1:20389" "admin@example.org" "$ADMIN_PW" $((N + 2)))
read -r S_COPY S_CHANGES S_WRITES < <(run from-slapd 23892 "ldap://127.0.0.1:23890" "cn=admin,$BASE" secret \
  "ldap://127.0.0.1:23890" "cn=admin,$BASE" secret $((N + 1)))

printf '%-34s %10s %10s %8s\n' "" Agora slapd ratio
printf '%-34s %9ss %9ss %7sx\n' "first copy of $N people" "$A_COPY" "$S_COPY" "$(python3 -c "print(f'{$S_COPY/$A_COPY:.2f}')")"
printf '%-34s %9ss %9ss %7sx\n' "$CHANGES changes made and copied" "$A_CHANGES" "$S_CHANGES" "$(python3 -c "print(f'{$S_CHANGES/$A_CHANGES:.2f}')")"
printf '%-34s %9ss %9ss %7sx\n' "  of which making them (ldapmodify)" "$A_WRITES" "$S_WRITES" "$(python3 -c "print(f'{$S_WRITES/$A_WRITES:.2f}')")"
