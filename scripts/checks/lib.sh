# Shared by the checks in scripts/checks/ (sourced, not run).
#
# release_binary: the release build of stallscope every check runs. scripts/test builds it once
# and passes it in STALLSCOPE_BIN, so no check builds again; run alone, a check builds it here.
release_binary() {
  if [ -n "${STALLSCOPE_BIN:-}" ]; then
    [ -x "$STALLSCOPE_BIN" ] || { echo "STALLSCOPE_BIN=$STALLSCOPE_BIN is not an executable" >&2; return 1; }
    printf '%s\n' "$STALLSCOPE_BIN"
    return 0
  fi
  cargo build --release --locked --quiet --bin stallscope >&2
  printf '%s\n' "${CARGO_TARGET_DIR:-$PWD/target}/release/stallscope"
}

# skip_unless_installed CHECK MISSING...: with tools missing, a check fails in CI (CI=true)
# and is skipped elsewhere; MISSING are "tool (how to install it)" texts, empty ones ignored.
skip_unless_installed() {
  local check=$1 missing=()
  shift
  for tool in "$@"; do [ -n "$tool" ] && missing+=("$tool"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "${CI:-}" = "true" ]; then
    echo "$check check: missing ${missing[*]}; scripts/ci-setup.sh installs them" >&2
    exit 1
  fi
  echo "$check check skipped: missing ${missing[*]}"
  exit 0
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_until_up URL PID: until URL answers 2xx, or fail if PID exits first (10 s at most).
wait_until_up() {
  local i
  for i in $(seq 100); do
    curl -fs -o /dev/null "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "the process serving $1 exited early" >&2; return 1; }
    sleep 0.1
  done
  echo "$1 did not answer within 10 s" >&2
  return 1
}

# Where checks leave screenshots and other things a person may want to look at afterwards.
artifacts_dir() {
  local dir="${STALLSCOPE_ARTIFACTS:-${CARGO_TARGET_DIR:-$PWD/target}/check-artifacts}/$1"
  mkdir -p "$dir"
  printf '%s\n' "$dir"
}
