#!/usr/bin/env bash
# schemathesis (pinned, scripts/checks/api-fuzz/requirements.txt) with every check against the
# release binary on SQLite and on PostgreSQL: the OpenAPI document must be true to the code.
# Zero failures and zero errors, and every operation reached: each has at least one generated
# request that the service accepted (2xx), so no operation hides behind a schema that only
# produces refusals.
#
# The lessons' bounds are lowered (--max-sleep-ms, --max-cpu-iterations) so a generated
# request is fast, and the login limits raised so one client's hundreds of logins are not 429s.
#
#   STALLSCOPE_FUZZ_EXAMPLES   test cases per operation and phase (default 100)
#   STALLSCOPE_FUZZ_SEED       hypothesis seed (default: a new one each run, printed)
# Reports (JUnit, JSON, and a pytest file that replays any failure) go to
# target/check-artifacts/api-fuzz/<backend>/.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh

venv="${STALLSCOPE_FUZZ_TOOLS_DIR:-$HOME/.cache/stallscope/api-fuzz}"
skip_unless_installed api-fuzz \
  "$([ -x "$venv/bin/st" ] || echo "schemathesis (bash scripts/checks/api-fuzz/install-tools.sh)")" \
  "$(command -v psql >/dev/null || echo "psql (apt-get install postgresql-client)")"

bin=$(release_binary)
examples="${STALLSCOPE_FUZZ_EXAMPLES:-100}"
seed="${STALLSCOPE_FUZZ_SEED:-$RANDOM$RANDOM}"
work=$(mktemp -d)
service=""
pg_admin_url="${STALLSCOPE_TEST_POSTGRES_URL:-}"
pg_database="api_fuzz_$$"
cleanup() {
  [ -n "$service" ] && { kill "$service" 2>/dev/null || true; wait "$service" 2>/dev/null || true; }
  [ -n "$pg_admin_url" ] && psql -q "$pg_admin_url" -c "DROP DATABASE IF EXISTS $pg_database" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT

# fuzz BACKEND DATABASE_URL: one schemathesis run against a fresh service on that database.
fuzz() {
  local backend=$1 database_url=$2 port reports
  port=$(free_port)
  reports="$(artifacts_dir api-fuzz)/$backend"
  rm -rf "$reports"
  mkdir -p "$reports"
  RUST_LOG=warn "$bin" serve --bind "127.0.0.1:$port" --database-url "$database_url" \
    --max-sleep-ms 50 --max-cpu-iterations 1000 \
    --login-limit-per-username 1000000 --login-limit-per-client 1000000 \
    >"$reports/service.log" 2>&1 &
  service=$!
  wait_until_up "http://127.0.0.1:$port/readyz" "$service"
  # The account the document's examples log in with, so `/login` is answered 200 in the
  # examples phase too, not only when the stateful phase happens to follow the sign-up link.
  curl -fsS -o /dev/null -H 'Content-Type: application/json' \
    --data "$(curl -fsS "http://127.0.0.1:$port/openapi.json" \
      | python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)["components"]["schemas"]["CreateUser"]["examples"][0]))')" \
    "http://127.0.0.1:$port/users"

  echo "schemathesis on $backend: $examples cases per operation and phase, seed $seed"
  local status=0
  # From the scratch directory: schemathesis keeps state in its working directory. One worker:
  # with two, hypothesis once crashed inside schemathesis describing a lambda (KeyError from
  # its source cache), a tool error that says nothing about the service.
  (cd "$work" && "$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" --checks all \
    --max-examples "$examples" --seed "$seed" --workers 1 --request-timeout 10 \
    --generation-database none \
    --report junit,json,har,pytest --report-dir "$reports" \
    --report-json-path "$reports/run.json" --report-har-path "$reports/exchanges.har") \
    >"$reports/schemathesis.txt" 2>&1 || status=$?
  curl -fsS -o "$reports/openapi.json" "http://127.0.0.1:$port/openapi.json"
  kill "$service"
  wait "$service" 2>/dev/null || true
  service=""

  python3 scripts/checks/api-fuzz/verdict.py "$reports" "$status" \
    || { cat "$reports/schemathesis.txt" >&2; return 1; }
}

fuzz sqlite "sqlite://$work/fuzz.db"

if [ -z "$pg_admin_url" ]; then
  [ "${CI:-}" = true ] && { echo "api-fuzz: STALLSCOPE_TEST_POSTGRES_URL is unset in CI (scripts/db-servers.sh)" >&2; exit 1; }
  echo "api-fuzz on PostgreSQL skipped: STALLSCOPE_TEST_POSTGRES_URL is unset (scripts/test starts a server)"
  exit 0
fi
psql -q "$pg_admin_url" -c "CREATE DATABASE $pg_database" >/dev/null
fuzz postgres "${pg_admin_url%/*}/$pg_database"
