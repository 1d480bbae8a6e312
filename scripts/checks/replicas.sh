#!/usr/bin/env bash
# Replicas on one database: three release binaries started at the same moment against one
# fresh PostgreSQL database, then one fresh MariaDB database (scripts/test's throwaway
# servers), five times each. Every replica must come up ready, and the migrations must have
# been applied exactly once between them (the others waited on the migration lock and found
# nothing pending): without the lock, replicas race to create the same tables and fail.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh

if [ -z "${STALLSCOPE_TEST_POSTGRES_URL:-}" ] || [ -z "${STALLSCOPE_TEST_MYSQL_URL:-}" ]; then
  [ "${CI:-}" = true ] && { echo "replicas check: the database servers are not running (CI=true)" >&2; exit 1; }
  echo "replicas check skipped: STALLSCOPE_TEST_POSTGRES_URL/MYSQL_URL unset (scripts/test starts the servers)"
  exit 0
fi
skip_unless_installed replicas \
  "$(command -v psql >/dev/null || echo "psql (apt-get install postgresql-client)")" \
  "$(command -v mariadb >/dev/null || echo "mariadb (apt-get install mariadb-client)")"

bin=$(release_binary)
replicas=3
attempts=${STALLSCOPE_REPLICA_ATTEMPTS:-5}
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The MariaDB server from its URL: mysql://root@127.0.0.1:PORT/stallscope.
mysql_port=${STALLSCOPE_TEST_MYSQL_URL##*:}
mysql_port=${mysql_port%%/*}
sql() { # BACKEND STATEMENT: runs it as the admin user, in no particular database
  case $1 in
    postgres) psql -qAt "$STALLSCOPE_TEST_POSTGRES_URL" -c "$2" ;;
    mysql) mariadb -h 127.0.0.1 -P "$mysql_port" -u root -N -e "$2" ;;
  esac
}

# start_together BACKEND DATABASE_URL ATTEMPT: the replicas, launched in one go.
start_together() {
  local backend=$1 url=$2 attempt=$3 i port ports=()
  pids=()
  for i in $(seq "$replicas"); do ports+=("$(free_port)"); done
  for i in $(seq "$replicas"); do
    port=${ports[$((i - 1))]}
    RUST_LOG=info "$bin" serve --bind "127.0.0.1:$port" --database-url "$url" \
      >"$work/$backend-$attempt-$i.log" 2>&1 &
    pids+=($!)
  done
  for i in $(seq "$replicas"); do
    wait_until_up "http://127.0.0.1:${ports[$((i - 1))]}/readyz" "${pids[$((i - 1))]}" || {
      echo "replicas check: replica $i of $replicas on $backend (attempt $attempt) did not come up:" >&2
      cat "$work/$backend-$attempt-$i.log" >&2
      return 1
    }
  done
}

for backend in postgres mysql; do
  case $backend in
    postgres) admin_url=$STALLSCOPE_TEST_POSTGRES_URL; expected=$(ls migrations/postgres | wc -l) ;;
    mysql) admin_url=$STALLSCOPE_TEST_MYSQL_URL; expected=$(ls migrations/mysql | wc -l) ;;
  esac
  for attempt in $(seq "$attempts"); do
    database="replicas_$$_$attempt"
    sql "$backend" "CREATE DATABASE $database" >/dev/null
    start_together "$backend" "${admin_url%/*}/$database" "$attempt"
    applied=$(cat "$work/$backend-$attempt"-*.log | grep -c "applied migration" || true)
    if [ "$applied" != "$expected" ]; then
      echo "replicas check: $backend attempt $attempt: $applied migrations applied between $replicas replicas, expected $expected (each once)" >&2
      cat "$work/$backend-$attempt"-*.log >&2
      exit 1
    fi
    for pid in "${pids[@]}"; do kill "$pid"; done
    wait 2>/dev/null || true
    pids=()
    sql "$backend" "DROP DATABASE $database" >/dev/null
  done
  echo "replicas check: $backend: $replicas replicas started together came up $attempts times, migrations applied once each time"
done
