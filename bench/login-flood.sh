#!/usr/bin/env bash
# Memory through a login flood: twenty clients send wrong-password logins back to back for a
# minute, with the rate limits raised so that every attempt runs an argon2id verification
# (19 MiB of working memory each); the service's RSS (VmRSS from /proc) is sampled every
# second, then again after fifteen quiet seconds.
#
#   bench/login-flood.sh [seconds of flood (default 60)]
#
# Target (issue "Safe to expose"): RSS under 150 MB through the flood, back near the baseline
# after. Before working memory was reused, the same flood took RSS from 40 MB to 550–685 MB and
# 432 MB stayed. Prints a table for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
command -v oha >/dev/null || { echo "needs oha (cargo install --locked oha)" >&2; exit 1; }
cargo build --release --locked --quiet
bin=target/release/stallscope
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$port" --workers 2 --database-url "sqlite://$tmp/flood.db" \
  --login-limit-per-username 100000000 --login-limit-per-client 100000000 \
  >"$tmp/service.log" 2>&1 &
service=$!
sampler=
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  kill "$service" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done
curl -fs -o /dev/null -H 'content-type: application/json' \
  -d '{"username":"flooded","email":"f@example.com","password":"the real one"}' "127.0.0.1:$port/users"

rss_mb() { awk '/^VmRSS/ { printf "%.1f\n", $2 / 1024 }' "/proc/$service/status"; }
baseline=$(rss_mb)
(while sleep 1; do rss_mb; done) >"$tmp/rss" &
sampler=$!
oha -z "${seconds}s" -c 20 --no-tui -m POST -H 'content-type: application/json' \
  -d '{"username":"flooded","password":"wrong"}' "http://127.0.0.1:$port/login" >"$tmp/oha.txt"
kill "$sampler"; sampler=
for _ in $(seq 15); do sleep 1; rss_mb >>"$tmp/after"; done
after=$(tail -1 "$tmp/after")
echo "after the flood, each second: $(tr '\n' ' ' <"$tmp/after")" >&2
peak=$(sort -n "$tmp/rss" | tail -1)
rate=$(awk '/Requests\/sec/ { print $2 }' "$tmp/oha.txt")
statuses=$(awk '/\[[0-9]+\] [0-9]+ responses/ { gsub(/[\[\]]/, "", $1); printf "%s%s × %s", sep, $2, $1; sep=", " }' "$tmp/oha.txt")
echo "| phase | RSS, MB |"
echo "|---|---|"
echo "| before (idle, one user signed up) | $baseline |"
echo "| peak during ${seconds} s of 20 clients' wrong-password logins ($rate logins/s: $statuses) | $peak |"
echo "| 15 s after | $after |"
