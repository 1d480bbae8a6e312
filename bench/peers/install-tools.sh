#!/usr/bin/env bash
# Installs what bench/peers.sh needs; called by scripts/ci-setup.sh. Idempotent.
#   venv:  FastAPI, uvicorn[standard], httpx, requests, aiosqlite and matplotlib, pinned and
#          hash-checked (requirements.txt), at $STALLSCOPE_PEERS_TOOLS_DIR
#          (default ~/.cache/stallscope/peers)
#   cargo: oha, the load generator (also bench/overhead.sh's)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${STALLSCOPE_PEERS_TOOLS_DIR:-$HOME/.cache/stallscope/peers}"

command -v oha >/dev/null 2>&1 || cargo install oha --locked --quiet
# shellcheck source=scripts/pinned-venv.sh
source "$here/../../scripts/pinned-venv.sh"
pinned_venv "$venv" "$here/requirements.txt"
