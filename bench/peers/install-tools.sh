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
# Up to date when the venv holds exactly what requirements.txt pins.
wanted=$(grep -E '^[A-Za-z0-9_.-]+==' "$here/requirements.txt" | sed 's/ .*//' | tr 'A-Z_' 'a-z-' | sort)
have=$("$venv/bin/pip" freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | sort || true)
[ "$wanted" = "$have" ] && exit 0
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
  --only-binary=:all: -r "$here/requirements.txt"
