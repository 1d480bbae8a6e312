#!/usr/bin/env bash
# tokio-console, the real binary, against the real service started with --console: the
# pane must say CONNECTED and list the service's named tasks.
set -euo pipefail
cd "$(dirname "$0")/../.."

missing=()
command -v tokio-console >/dev/null || missing+=("tokio-console (cargo install tokio-console --locked)")
command -v tmux >/dev/null || missing+=("tmux (apt-get install tmux)")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${CI:-}" = "true" ]; then
    echo "console check: missing ${missing[*]}; scripts/ci-setup.sh installs them" >&2
    exit 1
  fi
  echo "console check skipped: missing ${missing[*]}"
  exit 0
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cargo build --locked --quiet
port=$(free_port)
console_port=$(free_port)
session="stallscope-console-$$"
log=$(mktemp)
TOKIO_CONSOLE_BIND="127.0.0.1:$console_port" RUST_LOG=warn \
  target/debug/stallscope serve --console --bind "127.0.0.1:$port" --workers 2 >"$log" 2>&1 &
service=$!
cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  kill "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

for _ in $(seq 100); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
curl -fs "127.0.0.1:$port/sleep/async?ms=10" >/dev/null

tmux new-session -d -s "$session" -x 220 -y 60 "tokio-console http://127.0.0.1:$console_port"
pane=""
for _ in $(seq 60); do
  sleep 0.5
  pane=$(tmux capture-pane -p -t "$session" 2>/dev/null || true)
  if grep -q CONNECTED <<<"$pane" && grep -q executor-lag-canary <<<"$pane" && grep -q metrics-upkeep <<<"$pane"; then
    echo "tokio-console is CONNECTED and shows the named tasks:"
    grep -E 'CONNECTED|executor-lag-canary|metrics-upkeep|signal-listener' <<<"$pane" | sed 's/^/  /'
    exit 0
  fi
done
echo "tokio-console did not show CONNECTED and the named tasks; last pane:" >&2
echo "$pane" >&2
echo "service log:" >&2
cat "$log" >&2
exit 1
