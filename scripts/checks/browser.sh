#!/usr/bin/env bash
# What a newcomer clicks first, in a real browser: Debian's Chromium, driven by playwright-core
# (never a downloaded browser), against the release binary. `/` must lead to the API docs, and
# Swagger UI's "Try it out" → "Execute" must answer 200 on every lesson operation with the
# values the document fills in, and the page must fetch nothing from outside loopback.
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
echo "screenshots in $shots"
