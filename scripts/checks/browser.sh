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
port=$(free_port)
"$bin" serve --bind "127.0.0.1:$port" --workers 2 --database-url "sqlite://$tmp/browser.db" \
  >"$tmp/service.log" 2>&1 &
service=$!
cleanup() {
  kill "$service" 2>/dev/null || true
  wait "$service" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
wait_until_up "http://127.0.0.1:$port/readyz" "$service"
# The db lesson's user lookup preselects id 1: make that user exist, as a newcomer following
# the README's "try this next" would have.
curl -fs -o /dev/null -H 'content-type: application/json' \
  -d '{"username":"ada","email":"ada@example.com","password":"correct horse"}' \
  "http://127.0.0.1:$port/users"

shots=$(artifacts_dir browser)
if ! node "$here/swagger.mjs" "http://127.0.0.1:$port" "$shots"; then
  echo "service log:" >&2
  cat "$tmp/service.log" >&2
  exit 1
fi

# The live page, on one worker as in the tutorial: a stall there holds the whole service.
live_port=$(free_port)
# A trace UI address (nothing listens there: the check reads the link, never follows it).
"$bin" serve --bind "127.0.0.1:$live_port" --workers 1 --database-url "sqlite://$tmp/live.db" \
  --trace-url 'http://127.0.0.1:9/trace/{trace_id}' >"$tmp/live.log" 2>&1 &
live=$!
cleanup_live() {
  kill "$live" 2>/dev/null || true
  wait "$live" 2>/dev/null || true
  cleanup
}
trap cleanup_live EXIT
wait_until_up "http://127.0.0.1:$live_port/readyz" "$live"
if ! node "$here/live-page.mjs" "http://127.0.0.1:$live_port" "$shots"; then
  echo "service log:" >&2
  cat "$tmp/live.log" >&2
  exit 1
fi

# A service that refuses its stall demos: the page must say which ones.
off_port=$(free_port)
"$bin" serve --bind "127.0.0.1:$off_port" --workers 2 --no-stall-demos \
  --database-url "sqlite://$tmp/off.db" >"$tmp/off.log" 2>&1 &
off=$!
cleanup_off() {
  kill "$off" 2>/dev/null || true
  wait "$off" 2>/dev/null || true
  cleanup_live
}
trap cleanup_off EXIT
wait_until_up "http://127.0.0.1:$off_port/readyz" "$off"
if ! node "$here/stall-demos-off.mjs" "http://127.0.0.1:$off_port" "$shots"; then
  echo "service log:" >&2
  cat "$tmp/off.log" >&2
  exit 1
fi
echo "screenshots in $shots"
