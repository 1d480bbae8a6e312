#!/usr/bin/env bash
# Installs what scripts/checks/api-fuzz.sh needs; called by scripts/ci-setup.sh. Idempotent.
#   venv: schemathesis and everything it imports, pinned and hash-checked (requirements.txt)
# The venv lives outside the repo: $STALLSCOPE_FUZZ_TOOLS_DIR, default ~/.cache/stallscope/api-fuzz.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="${STALLSCOPE_FUZZ_TOOLS_DIR:-$HOME/.cache/stallscope/api-fuzz}"
wanted="schemathesis==$(sed -n 's/^schemathesis==\([^ ]*\).*/\1/p' "$here/requirements.txt")"

if [ -x "$venv/bin/st" ] && [ "$("$venv/bin/pip" freeze 2>/dev/null | grep -i '^schemathesis==')" = "$wanted" ]; then
  exit 0
fi
python3 -c 'import venv, ensurepip' 2>/dev/null || {
  apt-get -o DPkg::Lock::Timeout=300 update -qq
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
    --no-install-recommends python3-venv
}
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes \
  --only-binary=:all: -r "$here/requirements.txt"
"$venv/bin/st" --version
