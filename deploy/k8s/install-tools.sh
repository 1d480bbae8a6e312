#!/usr/bin/env bash
# Installs what scripts/checks/k8s.sh needs; called by scripts/ci-setup.sh. Idempotent.
#   apt:  kubernetes-client (kubectl 1.20, whose `kubectl kustomize` renders the manifests;
#         any newer kubectl already on PATH is used instead), prometheus (promtool)
#   venv: kubernetes-validate, jsonschema and PyYAML, pinned and hash-checked
#         (requirements.txt), at $STALLSCOPE_K8S_TOOLS_DIR (default ~/.cache/stallscope/k8s)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${STALLSCOPE_K8S_TOOLS_DIR:-$HOME/.cache/stallscope/k8s}"

need_apt=()
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
command -v promtool >/dev/null 2>&1 || need_apt+=(prometheus)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends "${need_apt[@]}"
fi

# shellcheck source=scripts/pinned-venv.sh
source "$here/../../scripts/pinned-venv.sh"
pinned_venv "$venv" "$here/requirements.txt"
