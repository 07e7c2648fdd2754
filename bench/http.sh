#!/usr/bin/env bash
# HTTP benchmark: wrk (HTTP/1.1, keep-alive) and h2load (HTTP/2, 10 streams a
# connection) asking for the Thunderbird autoconfig file, from Agora and from nginx
# serving the same bytes with the same certificate (Agora's), and wrk asking for the
# metrics page on the administration listener (plain HTTP, loopback) from Agora and
# from nginx serving a copy of it; in the same run, ROUNDS rounds each in turn, the
# median counts.
#   usage: bench/http.sh [seconds=10] [connections=64] [rounds=3]
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh
SECS=${1:-10}; CONNS=${2:-64}; ROUNDS=${3:-3}

export DEBIAN_FRONTEND=noninteractive
for p in nginx wrk nghttp2-client; do dpkg -s "$p" >/dev/null 2>&1 || apt-get install -y -qq --no-install-recommends "$p" >/dev/null; done
service nginx stop >/dev/null 2>&1 || true
cargo build --release -q -p agora
bin=$PWD/target/release/agora
work=$(mktemp -d); chmod 755 "$work"
cleanup() { kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
start_quiet_dns 27353

# The load comes from one address: Agora's per-address cap (50) raised, as nginx has none.
mkdir -p "$work/agora"
printf '[limits]\nmax_connections_per_ip = 1000\n' > "$work/agora/agora.toml"
start_agora "$bin" "$work/agora" --domain example.org --hostname mx.example.org --port-offset 20000 --bind 127.0.0.1
path=/mail/config-v1.1.xml
mkdir -p "$work/www/mail"
curl -sk --resolve autoconfig.example.org:20443:127.0.0.1 "https://autoconfig.example.org:20443$path" > "$work/www$path"
grep -q clientConfig "$work/www$path" || { echo "Agora served no autoconfig file" >&2; exit 1; }

# nginx as its users run it for speed: a worker per core, no access log, keep-alive,
# TLS session cache; the same certificate and key as Agora.
mkdir -p "$work/nginx"
cat > "$work/nginx/nginx.conf" <<CONF
worker_processes auto;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log error;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000;
  ssl_session_cache shared:SSL:10m;
  types { application/xml xml; }
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server {
    listen 127.0.0.1:21443 ssl http2;
    server_name autoconfig.example.org;
    ssl_certificate $work/agora/tls/cert.pem;
    ssl_certificate_key $work/agora/tls/key.pem;
    add_header Strict-Transport-Security "max-age=31536000" always;
    root $work/www;
  }
  server {
    listen 127.0.0.1:21025;
    root $work/www;
    location = /metrics { default_type "text/plain; version=0.0.4; charset=utf-8"; }
  }
}
CONF
curl -s http://127.0.0.1:29025/metrics > "$work/www/metrics"
grep -q agora_sessions_open "$work/www/metrics" || { echo "Agora served no metrics page" >&2; exit 1; }
nginx -c "$work/nginx/nginx.conf" -g 'daemon off;' &
for _ in $(seq 50); do curl -sk -o /dev/null -H 'Host: autoconfig.example.org' "https://127.0.0.1:21443$path" && break; sleep 0.1; done
cmp <(curl -sk -H 'Host: autoconfig.example.org' "https://127.0.0.1:21443$path") "$work/www$path" || { echo "nginx serves other bytes" >&2; exit 1; }

run() { # PORT -> requests/s
  wrk -t2 -c"$CONNS" -d"${SECS}s" -H 'Host: autoconfig.example.org' "https://127.0.0.1:$1$path" |
    awk -v port="$1" '/Requests\/sec/ {print $2} /Non-2xx|Socket errors/ {print "port " port ": " $0 > "/dev/stderr"}'
}
run_metrics() { # PORT -> requests/s
  wrk -t2 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$1/metrics" |
    awk -v port="$1" '/Requests\/sec/ {print $2} /Non-2xx|Socket errors/ {print "port " port ": " $0 > "/dev/stderr"}'
}
run_h2() { # PORT -> requests/s
  h2load -D "$SECS" -c "$CONNS" -m 10 -t 2 --connect-to="127.0.0.1:$1" "https://autoconfig.example.org$path" |
    awk -v port="$1" '/^finished in/ {gsub(",", "", $4); print $4} /^requests:/ && !/ 0 failed/ {print "port " port ": " $0 > "/dev/stderr"}'
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(float(x) for x in sys.argv[1:]):.0f}')" "$@"; }
table() { # LABEL RUNNER AGORA-PORT NGINX-PORT PATH
  local a=() n=()
  for _ in $(seq "$ROUNDS"); do a+=("$($2 "$3")"); n+=("$($2 "$4")"); done
  local am nm; am=$(median "${a[@]}"); nm=$(median "${n[@]}")
  echo "$1: $SECS s x $ROUNDS rounds, 2 threads, $CONNS connections, GET $5 ($(wc -c < "$work/www$5") bytes)"
  printf '%-8s %12s %16s\n' server "requests/s" "Agora / server"
  printf '%-8s %12s %16s\n' Agora "$am" "-"
  printf '%-8s %12s %16s\n' nginx "$nm" "$(python3 -c "print(f'{$am/$nm:.2f}')")"
}
table "HTTPS/1.1 keep-alive (wrk)" run 20443 21443 "$path"
table "HTTP/2, 10 streams a connection (h2load)" run_h2 20443 21443 "$path"
table "metrics page, HTTP/1.1 keep-alive on loopback (wrk)" run_metrics 29025 21025 /metrics
