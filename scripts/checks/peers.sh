#!/usr/bin/env bash
# bench/peers.sh --smoke: stallscope beside FastAPI, bare axum and Little's law in a short run
# that checks every part works (the numbers are bench/peers.sh's, in docs/benchmarks.md):
# every side answered its loads, the experiment ran every variant on stallscope and on the
# FastAPI app without errors, and with the verdicts the lesson expects (CPU aside), and the
# report wrote its tables and charts.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh

venv="${STALLSCOPE_PEERS_TOOLS_DIR:-$HOME/.cache/stallscope/peers}"
skip_unless_installed peers \
  "$(command -v oha >/dev/null || echo "oha (bash bench/peers/install-tools.sh)")" \
  "$([ -x "$venv/bin/python" ] || echo "the FastAPI venv (bash bench/peers/install-tools.sh)")"

STALLSCOPE_BIN=$(release_binary) bash bench/peers.sh --smoke
out="$(artifacts_dir peers)"
python3 - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
results = json.loads((out / "results.json").read_text())
problems = []
for side, report in results["experiment"].items():
    for lesson in report["lessons"]:
        for v in lesson["variants"]:
            name = f"{side} {lesson['lesson']}/{v['variant']}"
            if v.get("errors"):
                problems.append(f"{name}: {v.get('errors')}")
            # Serialised or not, as the lesson says, on one worker. Not the CPU lesson: its
            # calibrated work is only as steady as a shared 2-core machine (the timing tests
            # check stallscope's; FastAPI's threads under the GIL are what the table shows).
            if side.endswith("-1") and lesson["lesson"] != "cpu" and not v["agrees_with_lesson"]:
                problems.append(f"{name}: {v['verdict']} against the lesson")
for route, sides in results["throughput"].items():
    if not route.startswith("/"):
        continue
    for side, figures in sides.items():
        if figures["requests_per_s"] <= 0 or figures["ok_share"] < 1.0:
            problems.append(f"throughput {route} {side}: {figures}")
for side, loads in results["collateral"].items():
    for load, figures in loads.items():
        if figures["ok_share"] < 1.0:
            problems.append(f"collateral {side} {load}: {figures}")
for side, figures in results["memory"].items():
    if figures["answered_2xx"] != figures["requests"] or figures["peak_bytes"] <= 0:
        problems.append(f"memory {side}: {figures}")
if results["scrape"]["series"] < 100:
    problems.append(f"scrape: {results['scrape']}")
for name in ("tables.md", "peers-throughput.svg", "peers-collateral.svg"):
    if not (out / name).is_file() or (out / name).stat().st_size == 0:
        problems.append(f"{name} missing")
if problems:
    sys.exit("peers check:\n  " + "\n  ".join(problems))
print(f"peers check: every side, lesson and variant answered; tables and charts in {out}")
PY
