#!/usr/bin/env bash
# What the live page costs the service: CPU of the stallscope process (utime + stime from
# /proc) over the same span of time with no page open, with one page's stream open, and with
# ten at once. The service is otherwise idle, so the baseline is what it always spends (the
# canary every 10 ms, the watchdog's scans run on a thread of their own and count too).
#
#   bench/live-page.sh [seconds per phase (default 30)]
#
# Targets (issue "The live page"): one open page < 1 % of a core, ten < 5 %. Prints a table
# for docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-30}
cargo build --release --locked --quiet
bin=target/release/stallscope
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
tmp=$(mktemp -d)
RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$port" --workers 2 --database-url "sqlite://$tmp/bench.db" \
  >"$tmp/service.log" 2>&1 &
service=$!
streams=()
cleanup() {
  for pid in "${streams[@]}"; do kill "$pid" 2>/dev/null || true; done
  kill "$service" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 100); do curl -fs -o /dev/null "127.0.0.1:$port/healthz" && break; sleep 0.1; done

ticks=$(getconf CLK_TCK)
# CPU seconds the service has used so far.
cpu() { awk -v t="$ticks" '{ print ($14 + $15) / t }' "/proc/$service/stat"; }
# phase STREAMS: opens that many page streams, waits, and prints the % of one core used.
phase() {
  local n=$1 before after
  streams=()
  for _ in $(seq "$n"); do
    curl -sN -o /dev/null "127.0.0.1:$port/live/stream" &
    streams+=($!)
  done
  sleep 1
  before=$(cpu)
  sleep "$seconds"
  after=$(cpu)
  for pid in "${streams[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${streams[@]}" 2>/dev/null || true
  streams=()
  sleep 1
  python3 -c "print(f'{($after - $before) / $seconds * 100:.2f}')"
}
idle=$(phase 0)
one=$(phase 1)
ten=$(phase 10)
python3 - "$idle" "$one" "$ten" "$seconds" <<'PY'
import sys
idle, one, ten, seconds = map(float, sys.argv[1:])
print(f"| open pages | service CPU, % of one core | added by the pages | target |")
print(f"|---|---|---|---|")
print(f"| none | {idle:.2f} | | |")
print(f"| 1 | {one:.2f} | {one - idle:+.2f} | < 1 |")
print(f"| 10 | {ten:.2f} | {ten - idle:+.2f} | < 5 |")
print(f"\n{seconds:.0f} s per phase, 4 snapshots a second per page.")
PY
