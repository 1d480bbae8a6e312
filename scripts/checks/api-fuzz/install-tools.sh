#!/usr/bin/env bash
# Installs what scripts/checks/api-fuzz.sh needs; called by scripts/ci-setup.sh. Idempotent.
#   venv: schemathesis and everything it imports, pinned and hash-checked (requirements.txt)
# The venv lives outside the repo: $STALLSCOPE_FUZZ_TOOLS_DIR, default ~/.cache/stallscope/api-fuzz.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${STALLSCOPE_FUZZ_TOOLS_DIR:-$HOME/.cache/stallscope/api-fuzz}"
# shellcheck source=scripts/pinned-venv.sh
source "$here/../../pinned-venv.sh"
pinned_venv "$venv" "$here/requirements.txt"
