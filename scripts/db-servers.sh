#!/usr/bin/env bash
# Throwaway database servers for the database tests: a PostgreSQL and a MariaDB, each in a
# temporary directory, listening on 127.0.0.1 on a free port, with a `stallscope` database.
#
# Source it, then call the functions:
#
#   source scripts/db-servers.sh
#   db_servers_start      # exports STALLSCOPE_TEST_POSTGRES_URL, STALLSCOPE_TEST_MYSQL_URL,
#                         # STALLSCOPE_TEST_POSTGRES_CTL, STALLSCOPE_TEST_MYSQL_CTL
#   ...run the tests...
#   db_servers_stop       # stops both servers and removes their directories
#
# The *_CTL variables name small scripts taking `stop` or `start`: the fault tests stop a
# server mid-test and start it again on the same port and data.
#
# Or run it directly: `scripts/db-servers.sh` starts both, prints the exports, and keeps them
# running until Ctrl-C.
#
# Needs: PostgreSQL 15 server binaries (initdb, pg_ctl; found through pg_config or
# /usr/lib/postgresql/*/bin) and mariadb-server (mariadb-install-db, mariadbd, mariadb-admin).
# PostgreSQL refuses to run as root, so as root the PostgreSQL part runs as user `postgres`.

DB_SERVERS_DIR=""

db__free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

db__pg_bindir() {
  local dir
  for dir in "$(pg_config --bindir 2>/dev/null)" /usr/lib/postgresql/*/bin; do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

# Runs a command as `postgres` when we are root, as ourselves otherwise.
db__as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

db__start_postgres() {
  local bindir port dir
  bindir=$(db__pg_bindir) || { echo "db-servers: PostgreSQL server binaries not found" >&2; return 1; }
  port=$(db__free_port)
  dir="$DB_SERVERS_DIR/postgres"
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres "$dir" && chmod 700 "$dir"
  db__as_pg "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >"$DB_SERVERS_DIR/postgres-initdb.log" 2>&1 \
    || { cat "$DB_SERVERS_DIR/postgres-initdb.log" >&2; return 1; }
  cat >"$DB_SERVERS_DIR/pg-ctl" <<CTL
#!/usr/bin/env bash
# stop | start | freeze | thaw the throwaway PostgreSQL ($dir/data, port $port); freeze
# SIGSTOPs the postmaster and every backend: connections stay open, nothing answers.
set -euo pipefail
as_pg() { if [ "\$(id -u)" = 0 ]; then runuser -u postgres -- "\$@"; else "\$@"; fi; }
postmaster() { head -1 "$dir/data/postmaster.pid"; }
case "\${1:-}" in
  freeze) pm=\$(postmaster); kill -STOP "\$pm" \$(pgrep -P "\$pm") ;;
  thaw) pm=\$(postmaster); kill -CONT \$(pgrep -P "\$pm") "\$pm" ;;
  stop) as_pg "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null ;;
  start) as_pg "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \\
           -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c max_connections=300" start >/dev/null ;;
  *) echo "usage: \$0 stop|start|freeze|thaw" >&2; exit 2 ;;
esac
CTL
  chmod +x "$DB_SERVERS_DIR/pg-ctl"
  "$DB_SERVERS_DIR/pg-ctl" start || { cat "$dir/server.log" >&2; return 1; }
  db__as_pg "$bindir/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -qAt \
    -c "CREATE DATABASE stallscope" >/dev/null || return 1
  export STALLSCOPE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port/stallscope"
  export STALLSCOPE_TEST_POSTGRES_CTL="$DB_SERVERS_DIR/pg-ctl"
}

db__start_mysql() {
  local port dir socket
  for tool in mariadb-install-db mariadbd mariadb-admin mariadb; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] \
      || { echo "db-servers: $tool not found (apt-get install mariadb-server)" >&2; return 1; }
  done
  port=$(db__free_port)
  dir="$DB_SERVERS_DIR/mysql"
  socket="$dir/mysqld.sock"
  mkdir -p "$dir"
  local user_args=()
  if [ "$(id -u)" = 0 ]; then
    user_args=(--user=mysql)
    chown mysql "$dir"
  fi
  mariadb-install-db --no-defaults --datadir="$dir/data" --auth-root-authentication-method=normal \
    --skip-test-db "${user_args[@]}" >"$DB_SERVERS_DIR/mysql-install.log" 2>&1 \
    || { cat "$DB_SERVERS_DIR/mysql-install.log" >&2; return 1; }
  local mariadbd
  mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  cat >"$DB_SERVERS_DIR/mysql-ctl" <<CTL
#!/usr/bin/env bash
# stop | start the throwaway MariaDB ($dir/data, port $port)
set -euo pipefail
case "\${1:-}" in
  stop)
    mariadb-admin --no-defaults --socket="$socket" -u root shutdown
    for _ in \$(seq 1 100); do [ -e "$dir/mysqld.pid" ] || exit 0; sleep 0.1; done
    echo "MariaDB did not stop" >&2; exit 1 ;;
  start)
    nohup "$mariadbd" --no-defaults --datadir="$dir/data" --socket="$socket" --pid-file="$dir/mysqld.pid" \\
      --port=$port --bind-address=127.0.0.1 --skip-name-resolve --max-connections=300 \\
      --innodb-flush-log-at-trx-commit=0 --log-error="$dir/server.log" ${user_args[*]} >/dev/null 2>&1 &
    for _ in \$(seq 1 300); do
      mariadb-admin --no-defaults --socket="$socket" -u root ping >/dev/null 2>&1 && exit 0
      sleep 0.1
    done
    cat "$dir/server.log" >&2; exit 1 ;;
  *) echo "usage: \$0 stop|start" >&2; exit 2 ;;
esac
CTL
  chmod +x "$DB_SERVERS_DIR/mysql-ctl"
  "$DB_SERVERS_DIR/mysql-ctl" start || return 1
  # Tests create and drop a database of their own each, so the test user needs those rights;
  # root over TCP from 127.0.0.1 with no password, only on this loopback throwaway.
  mariadb --no-defaults --socket="$socket" -u root -e \
    "CREATE DATABASE stallscope; CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'; GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;" \
    || return 1
  export STALLSCOPE_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port/stallscope"
  export STALLSCOPE_TEST_MYSQL_CTL="$DB_SERVERS_DIR/mysql-ctl"
}

db_servers_start() {
  DB_SERVERS_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stallscope-db.XXXXXX")
  chmod 755 "$DB_SERVERS_DIR"
  db__start_postgres || { db_servers_stop; return 1; }
  db__start_mysql || { db_servers_stop; return 1; }
}

db_servers_stop() {
  [ -n "$DB_SERVERS_DIR" ] && [ -d "$DB_SERVERS_DIR" ] || return 0
  [ -x "$DB_SERVERS_DIR/pg-ctl" ] && "$DB_SERVERS_DIR/pg-ctl" stop 2>/dev/null || true
  [ -x "$DB_SERVERS_DIR/mysql-ctl" ] && "$DB_SERVERS_DIR/mysql-ctl" stop 2>/dev/null || true
  rm -rf "$DB_SERVERS_DIR"
  DB_SERVERS_DIR=""
  unset STALLSCOPE_TEST_POSTGRES_URL STALLSCOPE_TEST_MYSQL_URL STALLSCOPE_TEST_POSTGRES_CTL STALLSCOPE_TEST_MYSQL_CTL
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  db_servers_start
  trap db_servers_stop EXIT
  trap 'exit 130' INT TERM
  echo "export STALLSCOPE_TEST_POSTGRES_URL=$STALLSCOPE_TEST_POSTGRES_URL"
  echo "export STALLSCOPE_TEST_POSTGRES_CTL=$STALLSCOPE_TEST_POSTGRES_CTL"
  echo "export STALLSCOPE_TEST_MYSQL_URL=$STALLSCOPE_TEST_MYSQL_URL"
  echo "export STALLSCOPE_TEST_MYSQL_CTL=$STALLSCOPE_TEST_MYSQL_CTL"
  echo "# running; Ctrl-C stops both servers" >&2
  while true; do sleep 3600; done
fi
