"""Judges one schemathesis run (scripts/checks/api-fuzz.sh): no failures, no errors, no
warnings, and every operation of the document reached, that is answered 2xx at least once
in any phase (stateful included, where `/login` gets a password that matches).

    python3 verdict.py REPORTS_DIR ST_EXIT_STATUS

REPORTS_DIR holds run.json (schemathesis' JSON report), exchanges.har (every request and
answer) and openapi.json (the document the run was generated from).
"""

import json
import re
import sys
from pathlib import Path
from urllib.parse import urlsplit

reports, st_status = Path(sys.argv[1]), int(sys.argv[2])
run = json.loads((reports / "run.json").read_text())
document = json.loads((reports / "openapi.json").read_text())
har = json.loads((reports / "exchanges.har").read_text())

problems = []
if st_status != 0 or run["failures"] or run["errors"]:
    problems.append(
        f"schemathesis exited {st_status}: failures {run['failures']}, errors {run['errors']}"
    )
operations = run["operations"]
if operations["tested"] != operations["total"] or operations["errored"] or operations["skipped"]:
    problems.append(f"operations not all tested: {operations}")
warned = {kind: items for kind, items in run["warnings"].items() if items}
if warned:
    problems.append(f"warnings: {warned}")

# Each documented operation as (METHOD, a regex of its path template).
templates = [
    (method.upper(), re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"), path)
    for path, item in document["paths"].items()
    for method in item
    if method in {"get", "put", "post", "patch", "delete", "head", "options"}
]
reached = set()
for entry in har["log"]["entries"]:
    if not 200 <= entry["response"]["status"] < 300:
        continue
    method, path = entry["request"]["method"], urlsplit(entry["request"]["url"]).path
    for wanted, pattern, template in templates:
        if method == wanted and pattern.match(path):
            reached.add(f"{method} {template}")
everything = {f"{method} {template}" for method, _, template in templates}
if everything - reached:
    problems.append(f"never answered 2xx: {sorted(everything - reached)}")

if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print(
    f"  {len(everything)} operations, all answered 2xx; "
    f"{run['test_cases']['generated']} test cases, {len(har['log']['entries'])} requests, "
    f"no failures ({run['running_time']:.0f} s)"
)
