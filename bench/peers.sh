#!/usr/bin/env bash
# stallscope beside FastAPI (bench/peers/fastapi_app.py), bare axum and the conventional
# instrumented stack, in one run: the tutorial's experiment side by side, throughput and p99
# against Little's law, collateral damage, memory with many sleeping requests, scrape cost.
# See bench/peers/run.py for what each part measures.
#
#   bench/peers.sh           the full run (about 10 minutes on 2 cores): rewrites the peers
#                            section of docs/benchmarks.md and the charts docs/img/peers-*.svg
#   bench/peers.sh --smoke   a short run that checks everything works (CI); writes only to
#                            target/check-artifacts/peers/
#
# Uses STALLSCOPE_BIN when set (scripts/test's release build), else builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
smoke=false
case "${1:-}" in
  --smoke) smoke=true ;;
  "") ;;
  *) echo "usage: bench/peers.sh [--smoke]" >&2; exit 2 ;;
esac

bash bench/peers/install-tools.sh
python="${STALLSCOPE_PEERS_TOOLS_DIR:-$HOME/.cache/stallscope/peers}/bin/python"
bin="${STALLSCOPE_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release --locked --quiet --bin stallscope
  bin="$(cd "${CARGO_TARGET_DIR:-target}" && pwd)/release/stallscope"
fi
out="${CARGO_TARGET_DIR:-target}/check-artifacts/peers"
mkdir -p "$out"
if [ "$smoke" = true ]; then
  "$python" bench/peers/run.py --smoke --out "$out" --stallscope "$bin"
  "$python" bench/peers/report.py "$out/results.json" --tables "$out/tables.md" --charts "$out" \
    --command "bench/peers.sh --smoke"
else
  # The conventional stack is a crate of its own (own lock file and target directory).
  cargo build --release --locked --quiet --manifest-path bench/conventional/Cargo.toml
  "$python" bench/peers/run.py --out "$out" --stallscope "$bin"
  "$python" bench/peers/report.py "$out/results.json" --tables "$out/tables.md" --charts docs/img \
    --benchmarks docs/benchmarks.md
fi
