#!/usr/bin/env bash
# Instructions per request of GET /hello, bare router versus instrumented, counted by
# valgrind's callgrind: exact and repeatable where requests/s on a shared two-core VM moves by
# ±15 % between runs. It counts user-space instructions only (no kernel, no cache misses), so
# it ranks where the instrumentation's cost is and shows each change's effect; throughput is
# still bench/overhead.sh's job.
#
#   bench/instructions.sh [requests (default 20000)]
#
# Needs valgrind (apt-get install valgrind) and oha (cargo install oha --locked). The service
# runs under callgrind with instrumentation off until warmed up, so start-up is not counted.
# Writes the table to docs/benchmarks.md between the markers, and prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
requests=${1:-20000}
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT RUST_LOG STALLSCOPE_TRACE_FILTER STALLSCOPE_LOG_FORMAT
for tool in valgrind callgrind_control callgrind_annotate oha; do
  command -v "$tool" >/dev/null || { echo "$tool not found (apt-get install valgrind; cargo install oha --locked)" >&2; exit 1; }
done
cargo build --release --locked --quiet
bin=target/release/stallscope
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
port_of() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

count() { # side, extra flags...
  local side=$1; shift
  local port; port=$(port_of)
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/$side.callgrind" \
    "$bin" serve --bind "127.0.0.1:$port" --workers 2 "$@" >"$out/$side.log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  oha -n 2000 -c 8 --no-tui "http://127.0.0.1:$port/hello" >/dev/null 2>&1 # warm up, uncounted
  callgrind_control -i on "$pid" >/dev/null
  oha -n "$requests" -c 8 --no-tui --output-format json "http://127.0.0.1:$port/hello" >"$out/$side.json" 2>/dev/null
  callgrind_control -i off "$pid" >/dev/null
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  callgrind_annotate --auto=no --inclusive=no --threshold=100 "$out/$side.callgrind" >"$out/$side.functions" 2>/dev/null
}
count bare --no-instrumentation
count instrumented

python3 - "$out" "$requests" <<'PY'
import datetime, json, os, re, sys
out, requests = sys.argv[1], int(sys.argv[2])
def served(side):
    d = json.load(open(f"{out}/{side}.json"))
    return d["statusCodeDistribution"].get("200", 0)
def functions(side):
    """Instructions per function (exclusive), per request served."""
    costs, n = {}, served(side)
    if n != requests:
        sys.exit(f"{side}: {n} of {requests} requests answered 200")
    for line in open(f"{out}/{side}.functions"):
        m = re.match(r"\s*([\d,]+) \([ \d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        name = re.sub(r" \[[^\]]*\]$", "", m.group(2))
        name = name.split(":", 1)[1] if ":" in name else name
        costs[name] = costs.get(name, 0) + int(m.group(1).replace(",", "")) / n
    return costs
bare, inst = functions("bare"), functions("instrumented")
total_bare, total_inst = sum(bare.values()), sum(inst.values())
diff = sorted(((inst.get(k, 0) - bare.get(k, 0), k) for k in set(bare) | set(inst)), reverse=True)
def short(name):
    name = re.sub(r"<([^<>]*) as ([^<>]*)>", r"\1 as \2", name)
    return (name[:110] + "…") if len(name) > 111 else name
rows = "\n".join(f"| `{short(k)}` | {d:+,.0f} |" for d, k in diff[:15] if d > 0)
table = f"""<!-- instructions:start -->
Measured {datetime.date.today()}: {requests:,} requests of `GET /hello` (oha `-c 8`), release build,
`--workers 2`, user-space instructions of the whole service per request:

| router | instructions per request |
|---|---:|
| bare (`--no-instrumentation`) | {total_bare:,.0f} |
| instrumented, defaults | {total_inst:,.0f} |
| instrumentation | {total_inst - total_bare:+,.0f} ({(total_inst / total_bare - 1) * 100:+.0f} %) |

Where the difference is (functions' own instructions, instrumented minus bare, largest first):

| function | per request |
|---|---:|
{rows}
<!-- instructions:end -->"""
print(table)
path = "docs/benchmarks.md"
text = open(path).read()
if "<!-- instructions:start -->" not in text:
    sys.exit("docs/benchmarks.md has no instructions markers")
text = re.sub(r"<!-- instructions:start -->.*?<!-- instructions:end -->", lambda _: table, text, flags=re.S)
open(path, "w").write(text)
PY
