#!/usr/bin/env bash
# What a newcomer clicks first, in a real browser: Debian's Chromium, driven by playwright-core
# (never a downloaded browser), against the release binary. The live page at `/`, on a service
# with one worker, must name a stall while it runs, keep changing through it and draw the sleep
# lesson's verdicts from its button (live-page.mjs), and with --no-stall-demos show exactly the
# stalling variants switched off (stall-demos-off.mjs); its "API docs" link must lead to Swagger
# UI, whose "Try it out" → "Execute" must answer 200 on every lesson operation with the values
# the document fills in (swagger.mjs). No page may fetch anything from outside loopback.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=scripts/checks/lib.sh
source scripts/checks/lib.sh
here=scripts/checks/browser

skip_unless_installed browser \
  "$([ -x /usr/bin/chromium ] || echo "chromium (apt-get install chromium)")" \
  "$(command -v node >/dev/null || echo "node (apt-get install nodejs)")" \
  "$([ -d "$here/node_modules/playwright-core" ] || echo "playwright-core (npm ci --prefix $here)")"

bin=$(release_binary)
tmp=$(mktemp -d)
services=()
cleanup() {
  for pid in "${services[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# start NAME SERVE-ARGS…: a service of its own on a free port and database; sets $base.
start() {
  local name=$1 port
  shift
  port=$(free_port)
  "$bin" serve --bind "127.0.0.1:$port" --database-url "sqlite://$tmp/$name.db" "$@" \
    >"$tmp/$name.log" 2>&1 &
  services+=($!)
  wait_until_up "http://127.0.0.1:$port/readyz" "$!"
  base="http://127.0.0.1:$port"
}
# check NAME SCRIPT: runs a browser script against $base; on failure, the service's log.
check() {
  node "$here/$2" "$base" "$shots" && return 0
  echo "service log:" >&2
  cat "$tmp/$1.log" >&2
  exit 1
}
shots=$(artifacts_dir browser)

start browser --workers 2
# The db lesson's user lookup preselects id 1: make that user exist, as a newcomer following
# the README's "try this next" would have.
curl -fs -o /dev/null -H 'content-type: application/json' \
  -d '{"username":"ada","email":"ada@example.com","password":"correct horse"}' \
  "$base/users"
check browser swagger.mjs

# The live page, on one worker as in the tutorial: a stall there holds the whole service.
# A trace UI address (nothing listens there: the check reads the link, never follows it).
start live --workers 1 --trace-url 'http://127.0.0.1:9/trace/{trace_id}'
check live live-page.mjs

# A service that refuses its stall demos: the page must say which ones.
start off --workers 2 --no-stall-demos
check off stall-demos-off.mjs
echo "screenshots in $shots"
