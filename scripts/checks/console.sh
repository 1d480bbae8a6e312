#!/usr/bin/env bash
# tokio-console, the real binary, against the release binary started with --console and one
# worker, walked through docs/tokio-console.md: the pane must say CONNECTED and list the
# service's named tasks, the span exporter's included; during a 5 s blocking request it must warn that a task has never
# yielded, show the request's connection task running and the canary's polls standing still;
# after it, the warning is gone and
# the finished connection task shows its busy seconds.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh

skip_unless_installed console \
  "$(command -v tokio-console >/dev/null || echo "tokio-console (cargo install tokio-console --locked)")" \
  "$(command -v tmux >/dev/null || echo "tmux (apt-get install tmux)")"

bin=$(release_binary)
port=$(free_port)
console_port=$(free_port)
session="stallscope-console-$$"
log=$(mktemp)
# An OTLP endpoint (a closed port: nothing needs to receive) so the span exporter's task runs.
TOKIO_CONSOLE_BIND="127.0.0.1:$console_port" RUST_LOG=error \
OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$(free_port)" \
  "$bin" serve --console --bind "127.0.0.1:$port" --workers 1 >"$log" 2>&1 &
service=$!
cleanup() {
  tmux kill-session -t "$session" 2>/dev/null || true
  kill "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  rm -f "$log"
}
trap cleanup EXIT

wait_until_up "http://127.0.0.1:$port/healthz" "$service"

tmux new-session -d -s "$session" -x 220 -y 60 "tokio-console http://127.0.0.1:$console_port"
pane=""
fail() {
  echo "console check: $1; last pane:" >&2
  echo "$pane" >&2
  echo "service log:" >&2
  cat "$log" >&2
  exit 1
}
# wait_for SECONDS PATTERN...: until the pane shows every extended-regex PATTERN, and none of
# those written as '!PATTERN' (the console redraws once a second, so an absence takes time too).
wait_for() {
  local deadline=$((SECONDS + $1)) pattern ok
  shift
  while [ $SECONDS -lt $deadline ]; do
    pane=$(tmux capture-pane -p -t "$session" 2>/dev/null || true)
    ok=true
    for pattern in "$@"; do
      if [ "${pattern:0:1}" = '!' ]; then
        grep -Eq -- "${pattern:1}" <<<"$pane" && ok=false
      else
        grep -Eq -- "$pattern" <<<"$pane" || ok=false
      fi
    done
    [ "$ok" = true ] && return 0
    sleep 0.25
  done
  return 1
}
# A connection task's row: the per-connection spawn site of the telemetry crate's serve loop.
connection='stallscope-telemetry/src/serve\.rs:[0-9]+'

wait_for 30 CONNECTED executor-lag-canary metrics-upkeep signal-listener otlp-span-exporter ||
  fail "tokio-console did not show CONNECTED and the named tasks"
echo "tokio-console is CONNECTED and shows the named tasks:"
grep -E 'CONNECTED|executor-lag-canary|metrics-upkeep|signal-listener|otlp-span-exporter' <<<"$pane" | cut -c1-150 | sed 's/^/  /'

# The walkthrough of docs/tokio-console.md: hold the only worker for 5 s. If the request's
# bytes reached the connection task only after its first poll, the task has yielded once and
# the console rightly does not warn (docs/tokio-console.md says so): then the user sends the
# request again, and so does this check, up to three times.
for attempt in 1 2 3; do
  curl -fs -o /dev/null "127.0.0.1:$port/sleep/blocking?ms=5000" &
  request=$!
  if wait_for 3 'tasks have never yielded \(threshold 1000ms\)' "▶ .*$connection"; then
    break
  fi
  echo "  attempt $attempt: the connection task had yielded before the stall; again"
  wait "$request"
  [ "$attempt" = 3 ] &&
    fail "during the stall: no never-yielded warning, or no running connection task"
  sleep 1
done
echo "during the stall: the never-yielded warning and the running connection task:"
grep -E 'never yielded|'"$connection" <<<"$pane" | cut -c1-150 | sed 's/^/  /'
# The canary is not woken while the only worker is blocked: its poll count stands still.
canary_polls() { grep -E 'executor-lag-canary' <<<"$pane" | grep -oE ' [0-9]+ +task ' | grep -oE '[0-9]+'; }
polls_before=$(canary_polls)
sleep 1
pane=$(tmux capture-pane -p -t "$session")
polls_after=$(canary_polls)
[ -n "$polls_before" ] && [ "$polls_before" = "$polls_after" ] ||
  fail "the canary's polls moved during the stall (${polls_before:-?} -> ${polls_after:-?})"
echo "during the stall: the canary's polls stand still at $polls_after"
wait "$request"
# After the poll ends: the warning is gone, no connection task is running, and the finished one
# kept its Busy time (Total and Busy in whole seconds: at least the 4 s it blocked). An earlier
# attempt's finished task may already be listed, so the absences are what is waited for.
wait_for 5 "⏹ +[4-9]s +[4-9]s .*$connection" '!never yielded' "!▶ .*$connection" ||
  fail "after the stall: the warning stayed, or no finished connection task with Busy ≥ 4 s"
echo "after the stall: warning gone, the connection task done with its busy time:"
grep -E "$connection" <<<"$pane" | cut -c1-150 | sed 's/^/  /'
