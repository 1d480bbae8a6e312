#!/usr/bin/env bash
# Overhead of the instrumentation: requests/s and p99 of GET /hello on the bare router
# (--no-instrumentation: no route layer, no task-poll hooks, no canary, no watchdog) versus
# the fully instrumented service on its defaults, measured back to back with oha in one run;
# and, for the record, the instrumented service exporting spans (OTLP endpoint configured, so
# every span is built, queued and exported; the endpoint is a closed port, so the export
# itself fails cheaply and the figure is the request path's share of tracing).
#
#   bench/overhead.sh [seconds per run (default 15)] [connections (default 32)]
#
# Needs oha (`cargo install oha --locked`). Writes the table to docs/benchmarks.md between the
# markers, and prints it. Target: instrumented ≥ 0.95 × bare requests/s.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-15}
connections=${2:-32}
# Only the "exporting" runs export; a collector set in the caller's shell would skew the rest.
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
# The service's own defaults, log level included (RUST_LOG unset: info).
unset RUST_LOG STALLSCOPE_TRACE_FILTER STALLSCOPE_LOG_FORMAT
command -v oha >/dev/null || { echo "oha not found: cargo install oha --locked" >&2; exit 1; }
cargo build --release --locked --quiet
bin=target/release/stallscope
port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run() { # name, extra flags...
  local name=$1; shift
  local port; port=$(port_of)
  "$bin" serve --bind "127.0.0.1:$port" --workers 2 "$@" >/dev/null 2>&1 &
  local pid=$!
  for _ in $(seq 100); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.05; done
  oha -z "${duration}s" -c "$connections" --no-tui --output-format json "http://127.0.0.1:$port/hello" > "/tmp/stallscope-bench-$name.json" 2>/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

# Alternate twice so drift (thermal, neighbours) hits every side alike.
closed="http://127.0.0.1:$(port_of)"
for i in 1 2; do
  run "bare-$i" --no-instrumentation
  run "instrumented-$i"
  RUST_LOG=off STALLSCOPE_TRACE_FILTER=off run "spanless-$i"
  OTEL_EXPORTER_OTLP_ENDPOINT=$closed run "exporting-$i"
done

python3 - "$duration" "$connections" <<'PY'
import json, sys, datetime, platform, os, re
duration, connections = sys.argv[1], sys.argv[2]
def load(name):
    d = json.load(open(f"/tmp/stallscope-bench-{name}.json"))
    return d["summary"]["requestsPerSec"], d["latencyPercentiles"]["p99"] * 1000
rows = {}
for side in ("bare", "instrumented", "spanless", "exporting"):
    runs = [load(f"{side}-{i}") for i in (1, 2)]
    rows[side] = (sum(r for r, _ in runs) / 2, sum(p for _, p in runs) / 2)
ratio = rows["instrumented"][0] / rows["bare"][0]
exporting = rows["exporting"][0] / rows["bare"][0]
spanless = rows["spanless"][0] / rows["bare"][0]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
table = f"""<!-- overhead:start -->
Measured {datetime.date.today()} on {os.cpu_count()} × {cpu}, release build, `--workers 2`,
oha `-c {connections}` for {duration} s per run, each side run twice alternately (means shown):

| router | requests/s | p99 latency |
|---|---:|---:|
| bare (`--no-instrumentation`) | {rows['bare'][0]:,.0f} | {rows['bare'][1]:.2f} ms |
| instrumented, defaults (route layer, task monitors, HTTP metrics, server spans with trace ids, poll hooks, canary, watchdog) | {rows['instrumented'][0]:,.0f} | {rows['instrumented'][1]:.2f} ms |
| instrumented, spans filtered out of logs and traces (`RUST_LOG=off STALLSCOPE_TRACE_FILTER=off`) | {rows['spanless'][0]:,.0f} | {rows['spanless'][1]:.2f} ms |
| instrumented and exporting spans over OTLP | {rows['exporting'][0]:,.0f} | {rows['exporting'][1]:.2f} ms |

Instrumented / bare throughput: **{ratio:.3f}** (target ≥ 0.95: {'met' if ratio >= 0.95 else 'NOT met'}); spans filtered out / bare: {spanless:.3f}; exporting spans / bare: {exporting:.3f}.
<!-- overhead:end -->"""
print(table)
path = "docs/benchmarks.md"
text = open(path).read() if os.path.exists(path) else "# Benchmarks\n\n## Instrumentation overhead\n\n<!-- overhead:start -->\n<!-- overhead:end -->\n"
text = re.sub(r"<!-- overhead:start -->.*?<!-- overhead:end -->", lambda _: table, text, flags=re.S)
open(path, "w").write(text)
PY
