#!/usr/bin/env bash
# Webmail on a folder of N messages: time to the first message list, a page deep in the
# folder, the folder by size, and messages opened (one browser, then eight at once),
# Agora's webmail (its own HTTPS, its own store) against Roundcube 1.6 (Debian's
# package, nginx and PHP-FPM, its sessions in SQLite) reading the same messages from
# Dovecot over IMAP. Both over HTTPS with keep-alive, on loopback, one machine.
#   usage: bench/webmail.sh [messages=100000] [opens=400]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
N=${1:-100000}; OPENS=${2:-400}
export DEBIAN_FRONTEND=noninteractive LD_LIBRARY_PATH=/usr/lib/dovecot${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
need=()
for p in nginx php-fpm roundcube-core roundcube-sqlite3 dovecot-imapd; do dpkg -s "$p" >/dev/null 2>&1 || need+=("$p"); done
((${#need[@]} == 0)) || { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null; }
for svc in nginx php8.2-fpm dovecot; do service "$svc" stop >/dev/null 2>&1 || true; done
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; [[ -n ${KEEP:-} ]] || rm -rf "$work"; }
trap cleanup EXIT

# --- Agora ---
start_quiet_dns 35353
mkdir -p "$work/agora"
printf '[auth]\nplaintext_without_tls = true\n' > "$work/agora/agora.toml"
start_agora "$bin" "$work/agora" --domain example.org --hostname mx.example.org --port-offset 35000 --bind 127.0.0.1
add_users "$bin" "$work/agora" bench-pw bench@example.org
python3 bench/webmail_load.py load 35143 bench@example.org bench-pw "$N" > "$work/agora-load.txt"
python3 bench/webmail_load.py agora 127.0.0.1:35443 bench@example.org bench-pw "$OPENS" > "$work/agora.txt"
agora_rss=$(ps -o rss= -p "$AGORA_PID")
kill "$AGORA_PID"; wait "$AGORA_PID" 2>/dev/null || true

[[ -z ${AGORA_ONLY:-} ]] || { cat "$work/agora.txt"; exit 0; }

# --- Dovecot with the same messages ---
mkdir -p "$work/dovecot/run" "$work/dovecot/state" "$work/dovecot/mail"
echo "bench@example.org:{PLAIN}bench-pw" > "$work/dovecot/passwd"
python3 bench/webmail_load.py maildir "$work/dovecot/mail/bench@example.org/Maildir" "$N" > "$work/dovecot-load.txt"
chown -R nobody:nogroup "$work/dovecot/mail"
dovecot_plain_imap "$work/dovecot" 36143 > "$work/dovecot/dovecot.conf"
dovecot -F -c "$work/dovecot/dovecot.conf" &
sleep 2
python3 bench/webmail_load.py warm 36143 bench@example.org bench-pw >> "$work/dovecot-load.txt"

# --- Roundcube: Debian's package as configured, with its own configuration directory ---
rc=$work/rc; mkdir -p "$rc/config" "$rc/temp" "$rc/logs" "$work/nginx/logs" "$work/nginx/tmp"
cp /etc/roundcube/defaults.inc.php /etc/roundcube/mimetypes.php "$rc/config/"
python3 - "$rc/db.sqlite" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript(open("/usr/share/roundcube/SQL/sqlite.initial.sql").read())
db.commit()
PY
cat > "$rc/config/config.inc.php" <<PHP
<?php
\$config = [];
\$config['db_dsnw'] = 'sqlite:///$rc/db.sqlite?mode=0640';
\$config['imap_host'] = ['localhost:36143'];
\$config['smtp_host'] = 'localhost:36587';
\$config['des_key'] = 'bench-bench-bench-bench!';
\$config['plugins'] = [];
\$config['skin'] = 'elastic';
\$config['temp_dir'] = '$rc/temp/';
\$config['log_dir'] = '$rc/logs/';
\$config['enable_installer'] = false;
\$config['use_https'] = true;
PHP
chown -R www-data:www-data "$rc"
cat > "$work/php-fpm.conf" <<CONF
[global]
pid = $work/php-fpm.pid
error_log = $work/php-fpm.log
[rc]
user = www-data
group = www-data
listen = $work/php-fpm.sock
listen.owner = www-data
listen.group = www-data
pm = dynamic
pm.max_children = 16
pm.start_servers = 8
pm.min_spare_servers = 4
pm.max_spare_servers = 12
env[ROUNDCUBE_CONFIG_DIR] = $rc/config
CONF
php-fpm8.2 -F -y "$work/php-fpm.conf" &
cert=$work/agora/tls/cert.pem; key=$work/agora/tls/key.pem
cat > "$work/nginx/nginx.conf" <<CONF
user www-data;
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  access_log off;
  client_body_temp_path $work/nginx/tmp/body;
  fastcgi_temp_path $work/nginx/tmp/fastcgi;
  proxy_temp_path $work/nginx/tmp/proxy;
  uwsgi_temp_path $work/nginx/tmp/uwsgi;
  scgi_temp_path $work/nginx/tmp/scgi;
  server {
    listen 127.0.0.1:36443 ssl http2;
    server_name webmail.example.org;
    ssl_certificate $cert;
    ssl_certificate_key $key;
    root /var/lib/roundcube/public_html;
    index index.php;
    location ~ \.php\$ {
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name;
      fastcgi_param HTTPS on;
      fastcgi_pass unix:$work/php-fpm.sock;
    }
  }
}
CONF
nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' &
sleep 2
python3 bench/webmail_load.py roundcube 127.0.0.1:36443 bench@example.org bench-pw "$OPENS" > "$work/roundcube.txt"

echo "messages=$N opens=$OPENS (list: median ms per request; open: requests per second); Agora RSS after: ${agora_rss} KiB"
echo "Agora loaded over IMAP at $(cut -f3 "$work/agora-load.txt"); Dovecot's Maildir written directly, then indexed in $(grep indexed "$work/dovecot-load.txt" | cut -f3)"
python3 - "$work/agora.txt" "$work/roundcube.txt" <<'PY'
import sys
a = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
r = [l.split("\t") for l in open(sys.argv[2]).read().splitlines()]
print(f"{'':22} {'Roundcube':>10} {'Agora':>10} {'advantage':>10}")
for (name, unit, av), (_, _, rv) in zip(a, r):
    av, rv = float(av), float(rv)
    ratio = rv / av if unit == "ms" else av / rv
    print(f"{name + ' (' + unit + ')':22} {rv:10.1f} {av:10.1f} {ratio:9.1f}x")
PY
