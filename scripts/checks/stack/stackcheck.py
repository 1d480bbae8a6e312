#!/usr/bin/env python3
"""The Python half of scripts/checks/stack.sh: parses the stack's files and checks them.

    stackcheck.py dashboards            structure of grafana/dashboards/*.json
    stackcheck.py compose               docker-compose.yml against the rest of the stack
    stackcheck.py compose-k6 RESOLVED RESOLVED_HOST_ENV
                                        the k6 service, as `docker-compose config` resolved
                                        it (host without K6_SCRIPT, and with K6_SCRIPT=db.js),
                                        runs the script named by `run -e K6_SCRIPT=...`
    stackcheck.py docker CONTEXT_DIR    copy the Docker build context (after .dockerignore)
    stackcheck.py rust-version METADATA the Dockerfile's Rust covers every locked package
    stackcheck.py healthchecks          run the image's and compose's healthcheck commands
                                        (needs SERVICE_PORT, UPSTREAM_PORT)
    stackcheck.py prom-config OUT TARGETS RULES
                                        prometheus/prometheus.yml, rewritten for a local run
                                        (TARGETS: comma-separated, all in job stallscope)
    stackcheck.py queries PROM_URL START
                                        every dashboard, datasource and rule expression
                                        returns data from a live Prometheus since START; no
                                        panel shows two series under one legend (all
                                        instances, and each one alone)
    stackcheck.py ratios PROM_URL START every ratio panel's fleet value is the ratio of the
                                        raw counters' sums over the instances
    stackcheck.py smoke-size METRICS_URL...
                                        after smoke.js alone: its /sleep/blocking requests
                                        slept its own 20 ms, not the lessons' 100 ms default
    stackcheck.py alerts PROM_URL START every alert went pending or firing since START,
                                        HighSlowPollRatio only for stalling variants
    stackcheck.py runtime-libs BINARY   the final image installs the shared libraries the
                                        binary links (libpq, libmariadb) beyond Debian's base
    stackcheck.py otlp-sink PORT OUT REFUSE_WHILE
                                        a stand-in OTLP/HTTP collector: refuses batches
                                        (HTTP 400) while the file REFUSE_WHILE exists, decodes
                                        the rest and appends their spans to OUT as JSON lines
    stackcheck.py traces SPANS PROM_URL START
                                        the dashboards' trace links match the exported spans:
                                        service, tag key, every route they can link to

Needs PyYAML (installed with k6 by install-tools.sh); everything else is the standard library.
"""

import fnmatch
import gzip
import json
import math
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yml"
RULES = ROOT / "prometheus" / "rules.yml"
PROMETHEUS_YML = ROOT / "prometheus" / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

# The panels the issue asks for, by dashboard title. A panel may carry more in its title
# (the lesson rows are prefixed with the lesson), so these are matched as title suffixes.
REQUIRED_PANELS = {
    "Executor health": [
        "Executor lag p50 / p99",
        "Stalls per second by route",
        "Stalls in progress",
        "Stall victims per second by culprit",
        "Worker busy ratio per worker",
        "Poll time heatmap",
        "Global and local queue depth",
        "Alive tasks",
        "Blocking pool: threads, idle, queue depth",
        "Blocking-pool queue wait p99 by call site",
    ],
    "Handler variants": [
        f"{lesson}: {what}"
        for lesson in ("sleep", "cpu", "upstream", "db", "db users")
        for what in (
            "request rate by variant",
            "error rate (5xx share) by variant",
            "latency p50 / p99 per variant",
            "slow-poll ratio by variant",
            "mean poll time by variant",
            "scheduled delay by variant",
        )
    ],
    "Dependencies": [
        "Upstream latency p50 / p99 by client variant",
        "Upstream mean latency by client variant",
        "Upstream requests by status",
        "Upstream error rate (5xx share) by client variant",
        "Upstream calls in flight",
        "Blocking client: pool acquire wait p99",
        "Query latency p50 / p99 by operation",
        "Queries per second by operation",
        "Pool connections: in use / idle / max",
        "Pool utilisation (in use / max)",
        "Pool acquire wait p99",
        "OTLP spans exported / dropped per second",
    ],
}

# What the dashboards' "Stall alerts" annotation shows: the alerts about stalls, no others.
STALL_ALERTS = {"ExecutorStalled", "HighSlowPollRatio"}

# Panels whose thresholds the issue fixes: executor lag, amber over 10 ms, red over 100 ms.
REQUIRED_THRESHOLDS = {"Executor lag p50 / p99": [(0.01, {"#EAB839", "yellow", "orange"}), (0.1, {"red"})]}

# What Grafana would put in place of its built-in variables. $__rate_interval is at least four
# scrape intervals of the datasource (timeInterval: 5s in the provisioning file): 20s.
GRAFANA_BUILTINS = {
    "$__rate_interval": "20s",
    "$__interval": "5s",
    "$__range": "1m",
}

failures = []


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def done(what):
    if failures:
        print(f"{what}: {len(failures)} problem(s)")
        sys.exit(1)
    print(f"{what}: ok")


# ---------------------------------------------------------------------------------------
# Dashboards


def datasource_uids():
    doc = yaml.safe_load(DATASOURCES.read_text())
    return {ds["uid"]: ds["type"] for ds in doc["datasources"]}


def all_panels(dash):
    for panel in dash.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows carry their panels inside


def walk_datasources(node, where):
    """Every {"type":..., "uid":...} datasource reference anywhere in a dashboard."""
    if isinstance(node, dict):
        ds = node.get("datasource")
        if isinstance(ds, dict) and "uid" in ds:
            yield ds, where
        for key, value in node.items():
            yield from walk_datasources(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk_datasources(value, f"{where}[{i}]")


def explore_panes(url):
    """The Explore state in a data link, with Grafana's ${...} variables given dummy values."""
    query = urllib.parse.urlparse(url).query
    filled = re.sub(r"\$\{[^}]+\}", "X", query)
    panes = urllib.parse.parse_qs(filled).get("panes")
    return json.loads(panes[0]) if panes else None


def check_dashboards():
    uids = datasource_uids()
    uids["-- Grafana --"] = "grafana"
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    compose = yaml.safe_load(COMPOSE.read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    provider_paths = {p["options"]["path"] for p in providers}
    for path in provider_paths:
        if not any(m.split(":")[1] == path and m.startswith("./grafana/dashboards") for m in mounts):
            fail(f"dashboard provider path {path} is not where compose mounts grafana/dashboards")
    seen_uids = set()
    if len(DASHBOARDS) != 3:
        fail(f"expected 3 dashboards, found {[d.name for d in DASHBOARDS]}")
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        name = f"{path.name} ({dash.get('title')})"
        for key in ("uid", "title", "schemaVersion", "panels", "time", "templating", "description"):
            if key not in dash:
                fail(f"{name}: no {key}")
        if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
            fail(f"{name}: schemaVersion {dash.get('schemaVersion')!r} (Grafana 9+ needs 36 or later)")
        if dash.get("uid") in seen_uids:
            fail(f"{name}: uid {dash['uid']} used twice")
        seen_uids.add(dash.get("uid"))
        if dash.get("id") not in (None,):
            fail(f"{name}: has a numeric id; provisioned dashboards must not")
        for ds, where in walk_datasources(dash, name):
            if ds["uid"] not in uids:
                fail(f"{where}: datasource uid {ds['uid']!r} is not provisioned ({sorted(uids)})")
            elif ds.get("type") and ds["type"] != uids[ds["uid"]]:
                fail(f"{where}: datasource {ds['uid']} has type {ds['type']}, provisioned as {uids[ds['uid']]}")

        ids = set()
        cells = {}
        titles = []
        for panel in all_panels(dash):
            title = panel.get("title", "<untitled>")
            pname = f"{name} panel {title!r}"
            pid = panel.get("id")
            if not isinstance(pid, int):
                fail(f"{pname}: id {pid!r} is not an integer")
            elif pid in ids:
                fail(f"{pname}: id {pid} used twice")
            ids.add(pid)
            grid = panel.get("gridPos") or {}
            if not all(isinstance(grid.get(k), int) for k in ("x", "y", "w", "h")):
                fail(f"{pname}: gridPos {grid} needs integer x, y, w, h")
                continue
            if grid["w"] < 1 or grid["h"] < 1 or grid["x"] < 0 or grid["x"] + grid["w"] > 24:
                fail(f"{pname}: gridPos {grid} is outside the 24-column grid")
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    if (x, y) in cells:
                        fail(f"{pname}: overlaps panel {cells[(x, y)]!r}")
                        break
                    cells[(x, y)] = title
                else:
                    continue
                break
            if panel.get("type") == "row":
                continue
            titles.append(title)
            desc = panel.get("description", "")
            if len(desc) < 80:
                fail(f"{pname}: description missing or too short to teach anything ({len(desc)} chars)")
            defaults = panel.get("fieldConfig", {}).get("defaults", {})
            if not defaults.get("unit"):
                fail(f"{pname}: no unit in fieldConfig.defaults")
            if panel.get("type") == "heatmap" and not panel.get("options", {}).get("yAxis", {}).get("unit"):
                fail(f"{pname}: heatmap without a y-axis unit")
            steps = defaults.get("thresholds", {}).get("steps", [])
            if steps:
                if steps[0].get("value") is not None:
                    fail(f"{pname}: the first threshold step must be the base (value null)")
                values = [s["value"] for s in steps[1:]]
                if values != sorted(values):
                    fail(f"{pname}: threshold steps are not ascending: {values}")
            style = defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode", "off")
            if panel.get("type") == "timeseries" and len(steps) > 1 and style == "off":
                fail(f"{pname}: sets thresholds {[s.get('value') for s in steps[1:]]} but never draws them "
                     "(thresholdsStyle off)")
            for suffix, wanted in REQUIRED_THRESHOLDS.items():
                if title.endswith(suffix):
                    got = {s.get("value"): s.get("color") for s in steps}
                    for value, colors in wanted:
                        if got.get(value) not in colors:
                            fail(f"{pname}: needs a {'/'.join(sorted(colors))} threshold at {value}, has {got}")
            targets = panel.get("targets") or []
            if not targets:
                fail(f"{pname}: no queries")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                fail(f"{pname}: refIds {refs} must be present and unique")
            for t in targets:
                if not t.get("expr", "").strip():
                    fail(f"{pname}: target {t.get('refId')} has no expr")
            for link in defaults.get("links", []):
                panes = explore_panes(link.get("url", ""))
                if panes is None:
                    continue
                for pane in panes.values():
                    for q in pane.get("queries", []):
                        ds = q.get("datasource", {})
                        if uids.get(ds.get("uid")) != "jaeger" or ds.get("type") != "jaeger":
                            fail(f"{pname}: trace link {link.get('title')!r} points at {ds}, not the provisioned Jaeger")
        alert_names = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
        for ann in dash.get("annotations", {}).get("list", []):
            if ann.get("name") == "Stall alerts":
                m = re.search(r'alertname=~"([^"]+)"', ann.get("expr", ""))
                names = set(m.group(1).split("|")) if m else set()
                if names != STALL_ALERTS:
                    fail(f"{name}: the 'Stall alerts' annotation shows {sorted(names) or 'every alert'}, "
                         f"not the stall alerts {sorted(STALL_ALERTS)}")
                elif names - alert_names:
                    fail(f"{name}: the 'Stall alerts' annotation names alerts that do not exist: {sorted(names - alert_names)}")
        for wanted in REQUIRED_PANELS.get(dash.get("title"), []):
            if not any(t.endswith(wanted) for t in titles):
                fail(f"{name}: no panel {wanted!r}")
        if dash.get("title") not in REQUIRED_PANELS:
            fail(f"{name}: unexpected dashboard title")
        links = sum(1 for p in all_panels(dash) for _ in p.get("fieldConfig", {}).get("defaults", {}).get("links", []))
        print(f"  {name}: {len(titles)} panels, {links} trace links")
    done("dashboards")


# ---------------------------------------------------------------------------------------
# docker-compose.yml against the rest of the stack


def port_of(addr):
    return addr.rsplit(":", 1)[1]


def check_compose():
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    expected_profiles = {"k6": ["load"], "mysql": ["mysql"], "stallscope-mysql": ["mysql"]}
    for name, svc in services.items():
        want = expected_profiles.get(name)
        if svc.get("profiles") != want:
            fail(f"service {name}: profiles {svc.get('profiles')} (expected {want})")
        image = svc.get("image", "")
        if not svc.get("build") and (":" not in image or image.endswith(":latest")):
            fail(f"service {name}: image {image!r} is not pinned to a tag")
        deps = svc.get("depends_on") or {}
        for dep in deps:
            if dep not in services:
                fail(f"service {name}: depends on unknown service {dep}")
            elif not svc.get("profiles") and services[dep].get("profiles"):
                fail(f"service {name} (always on) depends on {dep}, which only runs in profile {services[dep]['profiles']}")
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("."):
                if not (ROOT / src).exists():
                    fail(f"service {name}: mounts {src}, which does not exist")
            elif src not in (doc.get("volumes") or {}):
                fail(f"service {name}: named volume {src} is not declared")
    for required in ("stallscope", "upstream", "postgres", "prometheus", "grafana", "jaeger", "k6", "mysql"):
        if required not in services:
            fail(f"no service {required}")

    app = services["stallscope"]
    env = app["environment"]
    if app["depends_on"].get("postgres", {}).get("condition") != "service_healthy":
        fail("stallscope must wait for a healthy postgres")
    if "healthcheck" not in services["postgres"]:
        fail("postgres has no healthcheck")
    metrics_port = port_of(env["STALLSCOPE_METRICS_BIND"])
    prom = yaml.safe_load(PROMETHEUS_YML.read_text())
    if prom["global"]["scrape_interval"] != "5s":
        fail(f"prometheus.yml scrapes every {prom['global']['scrape_interval']}, the issue asks for 5s")
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "stallscope")
    targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
    if f"stallscope:{metrics_port}" not in targets:
        fail(f"prometheus scrapes {targets}, not the metrics listener stallscope:{metrics_port}")
    # prometheus/ is mounted whole at /etc/prometheus, so relative rule_files resolve there.
    if "./prometheus:/etc/prometheus:ro" not in services["prometheus"]["volumes"] or \
            "--config.file=/etc/prometheus/prometheus.yml" not in services["prometheus"]["command"]:
        fail("prometheus must mount ./prometheus at /etc/prometheus and read prometheus.yml there")
    for rule_file in prom.get("rule_files", []):
        if Path(rule_file).is_absolute() or not (ROOT / "prometheus" / rule_file).exists():
            fail(f"rule file {rule_file} must be a relative path inside prometheus/")
    for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]:
        host, port = urllib.parse.urlparse(ds["url"]).netloc.split(":")
        svc = services.get(host)
        if svc is None:
            fail(f"datasource {ds['name']} points at {host}, which is no compose service")
        elif host == "jaeger" and not any(p.split(":")[-1] == port for p in svc.get("ports", [])):
            fail(f"datasource {ds['name']}: jaeger does not expose {port}")
    # src/config.rs reads the database from DATABASE_URL (`--database-url`); any other name
    # is ignored and the service would quietly use its embedded SQLite default.
    for name, scheme, db in (("stallscope", "postgres", "postgres"), ("stallscope-mysql", "mysql", "mysql")):
        svc_env = services[name]["environment"]
        stray = [k for k in svc_env if "DATABASE" in k and k != "DATABASE_URL"]
        if stray:
            fail(f"service {name}: {stray} is not read by stallscope (the variable is DATABASE_URL)")
        url = urllib.parse.urlparse(str(svc_env.get("DATABASE_URL", "")))
        if url.scheme != scheme or url.hostname != db or db not in services:
            fail(f"service {name}: DATABASE_URL should be {scheme}://…@{db}:…, is {url.scheme}://{url.hostname}")
        elif services[name]["depends_on"].get(db, {}).get("condition") != "service_healthy":
            fail(f"service {name} must wait for a healthy {db}")
        env_db = services[db]["environment"]
        user = env_db.get("POSTGRES_USER") or env_db.get("MYSQL_USER")
        password = env_db.get("POSTGRES_PASSWORD") or env_db.get("MYSQL_PASSWORD")
        database = env_db.get("POSTGRES_DB") or env_db.get("MYSQL_DATABASE")
        if (url.username, url.password, url.path.lstrip("/")) != (user, password, database):
            fail(f"service {name}: DATABASE_URL's user, password or database differ from service {db}'s")
    # The trace links search Jaeger by service name: every serving instance must export as it.
    linked = {q.get("service") for _, _, q, _ in trace_links()}
    for name, svc in services.items():
        if (svc.get("command") or [None])[0] == "serve":
            got = svc.get("environment", {}).get("OTEL_SERVICE_NAME")
            if {got} != linked:
                fail(f"service {name}: OTEL_SERVICE_NAME {got!r}, the trace links search {sorted(linked)}")
    otlp = urllib.parse.urlparse(env["OTEL_EXPORTER_OTLP_ENDPOINT"])
    if otlp.hostname not in services or otlp.port != 4317:
        fail(f"OTEL_EXPORTER_OTLP_ENDPOINT {otlp.geturl()} is not the trace backend's OTLP/gRPC port")
    if not any(p.startswith(f"{port_of(env['TOKIO_CONSOLE_BIND'])}:") for p in app["ports"]):
        fail("the tokio-console port is not published")
    graf = services["grafana"]["environment"]
    if graf.get("GF_AUTH_ANONYMOUS_ENABLED") != "true" or graf.get("GF_AUTH_ANONYMOUS_ORG_ROLE") != "Viewer":
        fail("grafana must allow anonymous viewers")
    home = graf.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH", "")
    if not (ROOT / "grafana" / "dashboards" / Path(home).name).exists():
        fail(f"grafana's home dashboard {home} is not one of grafana/dashboards/")
    k6 = services["k6"]
    script = re.search(r"\$\{K6_SCRIPT:-([^}]+)\}", str(k6.get("environment", {}).get("K6_SCRIPT", "")))
    if "--no-usage-report" not in " ".join(k6.get("entrypoint") or []) or not script \
            or not (ROOT / "load" / script.group(1)).exists():
        fail(f"k6 must run with --no-usage-report and default K6_SCRIPT to a script in load/ "
             f"(entrypoint {k6.get('entrypoint')}, environment {k6.get('environment')})")
    if "K6_SCRIPT" in json.dumps(k6.get("command")):
        fail("k6's command names K6_SCRIPT: Compose substitutes it from the host at parse time, "
             "so `run -e K6_SCRIPT=...` would be ignored")
    if k6["image"].split(":")[1] != "1.1.0":
        fail("the k6 image should match the k6 the checks run (1.1.0)")
    done("compose")


def check_compose_k6(resolved, resolved_host_env):
    """docs/stack.md says `docker compose --profile load run --rm -e K6_SCRIPT=collateral.js
    k6` runs collateral.js. `docker-compose config` shows the k6 service as Compose will
    start it; this runs its entrypoint the way the container would (the environment of the
    service, then `run -e`, which overrides it), with a stand-in `k6` that prints its
    arguments, and checks which script it would run. RESOLVED was made with no K6_SCRIPT in
    the host's environment, RESOLVED_HOST_ENV with K6_SCRIPT=db.js (the other spelling:
    `K6_SCRIPT=db.js docker compose ... run --rm k6`)."""
    import tempfile

    fake = Path(tempfile.mkdtemp()) / "k6"
    fake.write_text('#!/bin/sh\nfor a in "$@"; do printf \'%s\\n\' "$a"; done\n')
    fake.chmod(0o755)

    def k6_service(path):
        svc = yaml.safe_load(Path(path).read_text())["services"]["k6"]
        # `config` writes a literal `$` as `$$` so that its output is valid Compose again.
        unescape = lambda v: v.replace("$$", "$") if isinstance(v, str) else v
        entrypoint = svc.get("entrypoint") or ["k6"]
        entrypoint = [entrypoint] if isinstance(entrypoint, str) else entrypoint
        command = svc.get("command") or []
        command = command.split() if isinstance(command, str) else command
        env = {k: unescape(str(v)) for k, v in (svc.get("environment") or {}).items()}
        mounts = [v if isinstance(v, str) else f"{v['source']}:{v['target']}" for v in svc.get("volumes", [])]
        return [unescape(a) for a in entrypoint + command], env, mounts

    def script_run(argv, env, run_e):
        if argv[0] == "k6":
            argv = [str(fake)] + argv[1:]
        full = {"PATH": f"{fake.parent}:{os.environ['PATH']}", **env, **run_e}
        out = subprocess.run(argv, env=full, capture_output=True, text=True, timeout=10)
        args = out.stdout.splitlines()
        return args[-1] if out.returncode == 0 and args[:2] == ["run", "--no-usage-report"] else f"<{out.stdout}{out.stderr}>"

    cases = [(resolved, {}, "/scripts/variants.js", "no K6_SCRIPT anywhere")]
    for script in sorted(p.name for p in (ROOT / "load").glob("*.js") if p.name != "lib.js"):
        cases.append((resolved, {"K6_SCRIPT": script}, f"/scripts/{script}", f"run -e K6_SCRIPT={script}"))
    cases.append((resolved_host_env, {}, "/scripts/db.js", "K6_SCRIPT=db.js in the host's environment"))
    cases.append((resolved_host_env, {"K6_SCRIPT": "collateral.js"}, "/scripts/collateral.js",
                  "K6_SCRIPT=db.js on the host, run -e K6_SCRIPT=collateral.js"))
    for path, run_e, want, what in cases:
        argv, env, mounts = k6_service(path)
        got = script_run(argv, env, run_e)
        if got != want:
            fail(f"k6 service with {what}: runs {got}, not {want}")
            continue
        if not any(m.endswith(":/scripts") or m.endswith(":/scripts:ro") for m in mounts) \
                or not (ROOT / "load" / Path(want).name).exists():
            fail(f"k6 service: {want} is not load/{Path(want).name} mounted at /scripts ({mounts})")
            continue
        print(f"  {what}: k6 runs {got}")
    done("compose k6")


def check_smoke_size(urls):
    """smoke.js sizes its requests small (20 ms sleeps). k6 does not hand assignments to __ENV
    on to the VUs, so a script that set its defaults that way sent the lessons' 100 ms sleeps
    instead, and every smoke round stalled the executor. The mean poll of /sleep/blocking (one
    poll per request: the sleep) tells which size arrived."""
    for url in urls:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        def value(name):
            m = re.search(r'^' + name + r'\{route="/sleep/\{variant\}",variant="blocking"\} (\S+)$', text, re.M)
            return float(m.group(1)) if m else 0.0
        polls, seconds = value("stallscope_task_polls_total"), value("stallscope_task_poll_duration_seconds_total")
        if not polls:
            fail(f"{url}: smoke.js sent no /sleep/blocking request")
        elif seconds / polls > 0.06:
            fail(f"{url}: smoke.js's /sleep/blocking polls took {seconds / polls * 1000:.0f} ms on average: "
                 "its 20 ms default did not reach the VUs")
        else:
            print(f"  {url}: /sleep/blocking polled {polls:.0f} times, {seconds / polls * 1000:.0f} ms each (smoke.js asks for 20)")
    done("smoke size")


# ---------------------------------------------------------------------------------------
# Docker build context


def dockerignore_patterns():
    pats = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        pats.append((neg, line.lstrip("!").rstrip("/")))
    return pats


def ignored(rel, pats):
    """Docker's rule: the last matching pattern wins; a directory pattern covers its contents."""
    result = False
    parts = rel.split("/")
    for neg, pat in pats:
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                result = not neg
                break
    return result


def copy_context(dest):
    """Copies the files `docker build .` would send, then checks the Dockerfile's COPYs."""
    dest = Path(dest)
    pats = dockerignore_patterns()
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split()
    sent = [f for f in files if (ROOT / f).is_file() and not ignored(f, pats)]
    for f in sent:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("Cargo.toml", "Cargo.lock", ".cargo/config.toml", "src/main.rs"):
        if not (dest / needed).exists():
            fail(f"the build context lacks {needed} (.dockerignore)")
    # `cargo metadata` does not compile, so files the compiler reads through macros are
    # checked here: embed_migrations! (relative to the manifest), include_str!/include_bytes!
    # (relative to the source file).
    refs = 0
    for src in sorted((ROOT / "src").rglob("*.rs")):
        text = src.read_text()
        for m in re.finditer(r'embed_migrations!\(\s*"([^"]+)"\s*\)', text):
            refs += 1
            if not (dest / m.group(1)).is_dir() or not any((dest / m.group(1)).rglob("*.sql")):
                fail(f"{src.relative_to(ROOT)} embeds migrations from {m.group(1)}, which the build context lacks (.dockerignore)")
        for m in re.finditer(r'include_(?:str|bytes)!\(\s*"([^"]+)"\s*\)', text):
            refs += 1
            target = (dest / src.relative_to(ROOT)).parent / m.group(1)
            if not target.exists():
                fail(f"{src.relative_to(ROOT)} includes {m.group(1)}, which the build context lacks (.dockerignore)")
    print(f"  {refs} compile-time file references (embed_migrations!, include_str!) resolve in the context")
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    if len(stages) < 2:
        fail("the Dockerfile should be multi-stage")
    last = dockerfile[dockerfile.rfind("\nFROM"):]
    user = re.findall(r"^USER\s+(\S+)", last, re.M)
    if not user or user[-1].split(":")[0] in ("root", "0"):
        fail("the final stage must switch to a non-root USER")
    if not re.search(r"^HEALTHCHECK\s", last, re.M):
        fail("the final stage has no HEALTHCHECK")
    print(f"  build context: {len(sent)} files ({', '.join(sorted({f.split('/')[0] for f in sent}))})")
    done("docker context")


def check_rust_version(metadata_path):
    """The builder image's Rust must be new enough for every locked package (rust-version)."""
    m = re.search(r"^ARG RUST_VERSION=(\S+)", (ROOT / "Dockerfile").read_text(), re.M)
    if not m:
        fail("the Dockerfile has no ARG RUST_VERSION")
        done("rust version")
    image = tuple(int(x) for x in m.group(1).split("."))
    meta = json.loads(Path(metadata_path).read_text())
    newest = (0,)
    for pkg in meta["packages"]:
        want = pkg.get("rust_version")
        if not want:
            continue
        need = tuple(int(x) for x in want.split("."))
        newest = max(newest, need)
        if need[:len(image)] > image:
            fail(f"{pkg['name']} {pkg['version']} needs Rust {want}; the Dockerfile builds with {m.group(1)}")
    print(f"  rust:{m.group(1)} covers every locked package (newest rust-version: {'.'.join(map(str, newest))})")
    done("rust version")


# ---------------------------------------------------------------------------------------
# Healthcheck commands, run against the real service


def healthcheck_commands():
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK\b.*?\bCMD\s+(\[.*\])\s*$", dockerfile, re.M)
    image_cmd = json.loads(m.group(1))
    doc = yaml.safe_load(COMPOSE.read_text())
    cmds = [("Dockerfile HEALTHCHECK", image_cmd, {})]
    for name in ("stallscope", "upstream"):
        svc = doc["services"][name]
        test = [part.replace("$$", "$") for part in svc["healthcheck"]["test"]]
        assert test[0] == "CMD", test
        env = {k: str(v) for k, v in svc.get("environment", {}).items()}
        cmds.append((f"compose {name} healthcheck", test[1:], env))
    return cmds


def run_healthchecks():
    service = os.environ["SERVICE_PORT"]
    upstream = os.environ["UPSTREAM_PORT"]
    for label, argv, env in healthcheck_commands():
        env = dict(env)
        # The container's addresses, moved to this machine's loopback ports.
        env["STALLSCOPE_BIND"] = f"127.0.0.1:{service}"
        if "HEALTH_PORT" in env:
            env["HEALTH_PORT"] = upstream
        full = {"PATH": os.environ["PATH"], **env}
        ok = subprocess.run(argv, env=full, timeout=10).returncode == 0
        # And it must fail against a port where nothing listens.
        dead = dict(full, STALLSCOPE_BIND="127.0.0.1:1")
        if "HEALTH_PORT" in dead:
            dead["HEALTH_PORT"] = "1"
        bad = subprocess.run(argv, env=dead, timeout=10, stderr=subprocess.DEVNULL).returncode == 0
        if not ok:
            fail(f"{label} fails against the running service")
        elif bad:
            fail(f"{label} succeeds against a closed port")
        else:
            print(f"  {label}: healthy when up, unhealthy when down")
    done("healthchecks")


# ---------------------------------------------------------------------------------------
# Prometheus


def write_prom_config(out, targets, rules):
    """prometheus/prometheus.yml with the compose addresses replaced by local ones: every
    local instance is a target of the same job, as replicas of one service would be. They are
    found through file-based discovery carrying the Kubernetes metadata Prometheus Operator's
    pod discovery would, relabelled the way a ServiceMonitor's generated job does, so every
    series has the `pod`, `namespace` and `service` labels it would have on Kubernetes
    (deploy/k8s) and the dashboards are checked against them."""
    doc = yaml.safe_load(PROMETHEUS_YML.read_text())
    doc["global"]["scrape_interval"] = "1s"
    doc["global"]["scrape_timeout"] = "900ms"
    doc["global"]["evaluation_interval"] = "1s"
    doc["rule_files"] = [rules]
    jobs = []
    for job in doc["scrape_configs"]:
        if job["job_name"] != "stallscope":
            continue
        job.pop("dns_sd_configs", None)  # the mysql profile's second instance
        job.pop("static_configs", None)  # the compose address
        discovered = Path(out).with_suffix(".targets.json")
        discovered.write_text(json.dumps([
            {"targets": [target], "labels": {
                "__meta_kubernetes_namespace": "stallscope",
                "__meta_kubernetes_service_name": "stallscope",
                "__meta_kubernetes_pod_name": f"stallscope-{i}",
            }}
            for i, target in enumerate(targets.split(","))
        ]))
        job["file_sd_configs"] = [{"files": [str(discovered)], "refresh_interval": "1m"}]
        job["relabel_configs"] = job.get("relabel_configs", []) + [
            {"source_labels": [f"__meta_kubernetes_{meta}"], "target_label": label}
            for meta, label in (("namespace", "namespace"), ("service_name", "service"),
                                ("pod_name", "pod"), ("service_name", "job"))
        ]
        jobs.append(job)
    doc["scrape_configs"] = jobs
    Path(out).write_text(yaml.safe_dump(doc, sort_keys=False))


def prom_query(base, expr, at):
    """An instant query at `at` (unix seconds)."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=20) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]


def prom_query_range(base, expr, start, end):
    """What a Grafana panel runs: a range query over the dashboard's time span."""
    params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": "1s"}
    url = f"{base}/api/v1/query_range?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=20) as resp:
        body = json.load(resp)
    if body.get("status") != "success":
        raise RuntimeError(body)
    return body["data"]


def prom_label_values(base, label, match):
    url = f"{base}/api/v1/label/{label}/values?" + urllib.parse.urlencode({"match[]": match})
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)["data"]


def substitute(expr, variables):
    for name, value in GRAFANA_BUILTINS.items():
        expr = expr.replace(name, value)
    for name, value in variables.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    if "$" in expr:
        raise ValueError(f"unsubstituted variable in {expr!r}")
    return expr


def legend_labels(legend):
    return re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend or "")


def rendered_legend(legend, labels):
    """The name Grafana gives a series: its Prometheus backend replaces each {{label}} of the
    legend format with the label's value, or with nothing when the series has no such label."""
    return re.sub(r"\{\{\s*(.+?)\s*\}\}", lambda m: labels.get(m.group(1), ""), legend)


def regex_value(value):
    """A value picked in a multi-value/All template variable, as Grafana interpolates it into
    a `=~` matcher: regex metacharacters escaped (inside a PromQL string, so `\\\\.`)."""
    return re.sub(r"([\\^$*+?.()|{}\[\]])", r"\\\\\1", value)


def panel_targets():
    """(dashboard, panel, variables) of every panel with queries."""
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        variables = {v["name"]: v.get("allValue") or ".+" for v in dash.get("templating", {}).get("list", [])}
        for panel in all_panels(dash):
            if panel.get("targets"):
                yield dash, panel, variables


# Evidence that both instances took part: each query must return something at the end of
# the load, or the fleet checks below would pass on one instance's data alone.
FLEET_COVERAGE = [
    ("both instances were scraped", 'count(up{job="stallscope"} == 1) >= 2'),
    ("every replica carries the operator's pod, namespace and service labels",
     'count(up{job="stallscope", pod=~"stallscope-[0-9]+", namespace="stallscope", service="stallscope"} == 1) >= 3'),
    ("both instances served lesson requests", "count(sum by (instance) (increase(stallscope_task_polls_total[{range}])) > 0) >= 2"),
    ("both instances stalled on the same route and variant (two series a panel must sum)",
     "count by (route, variant) (sum by (instance, route, variant) (increase(stallscope_stalls_total[{range}])) > 0) >= 2"),
    ("both instances had stall victims", "count(sum by (instance) (increase(stallscope_stall_victims_total[{range}])) > 0) >= 2"),
    ("both instances observed HTTP latencies", "count(sum by (instance) (increase(http_server_request_duration_seconds_count[{range}])) > 0) >= 2"),
]


def check_fleet_panels(base, start, end):
    """Every panel, with $instance = All and with each instance alone: no two of its series
    render the same legend (the mark of a count not summed over instances, or of a per-instance
    figure whose legend does not name the instance). A query ending in `or vector(0)` must have
    a value at every step: it exists to show 0, never "No data"."""
    rng = f"{int(end - start) + 5}s"
    for what, expr in FLEET_COVERAGE:
        got = prom_query(base, expr.replace("{range}", rng), end)["result"]
        if not got:
            fail(f"the load did not exercise the fleet: {what} ({expr})")
        else:
            print(f"  {what}: yes")
    instances = prom_label_values(base, "instance", "stallscope_runtime_workers")
    if len(instances) < 2:
        fail(f"the $instance menu lists {instances}: the fleet checks need two instances")
    panels = 0
    queries = 0
    steps = int(end - start) + 1
    for dash, panel, variables in panel_targets():
        panels += 1
        where = f"{dash['title']} / panel {panel['title']!r}"
        for choice in [None] + instances:
            picked = dict(variables)
            if choice is not None:
                picked["instance"] = regex_value(choice)
            label = "all instances" if choice is None else f"instance {choice} alone"
            seen = {}
            for tgt in panel["targets"]:
                expr = substitute(tgt["expr"], picked)
                queries += 1
                try:
                    series = prom_query_range(base, expr, start, end)["result"]
                except Exception as err:
                    fail(f"{where} ({tgt['refId']}, {label}): {err}")
                    continue
                legend = tgt.get("legendFormat") or ""
                for s in series:
                    name = rendered_legend(legend, s["metric"]) if legend else json.dumps(s["metric"], sort_keys=True)
                    if name in seen:
                        fail(f"{where} ({label}): two series show as {name!r}: {seen[name]} and "
                             f"{tgt['refId']} {s['metric']}")
                    seen[name] = f"{tgt['refId']} {s['metric']}"
                if choice is None and re.search(r"\bor\s+vector\(0\)\s*$", tgt["expr"]):
                    points = sum(len(s["values"]) for s in series)
                    if points < steps:
                        fail(f"{where} ({tgt['refId']}): {points} values over {steps} steps; "
                             "`or vector(0)` should leave no gap")
    print(f"  {panels} panels, {queries} range queries (all instances, and each of {len(instances)} alone): "
          "one series per legend")


def expressions():
    """(where, expr, legend, variables) for every PromQL expression the stack runs."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        variables = {}
        for var in dash.get("templating", {}).get("list", []):
            variables[var["name"]] = var.get("allValue") or ".+"
            query = var.get("query")
            query = query.get("query") if isinstance(query, dict) else query
            out.append((f"{dash['title']} / variable ${var['name']}", query, None, {}))
        for ann in dash.get("annotations", {}).get("list", []):
            if ann.get("expr"):
                # Alert annotations are empty while no alert fires: checked for validity only.
                out.append((f"{dash['title']} / annotation {ann['name']!r}", ann["expr"], "may-be-empty", variables))
        for panel in all_panels(dash):
            for t in panel.get("targets", []):
                out.append((f"{dash['title']} / panel {panel['title']!r} ({t['refId']})", t["expr"], t.get("legendFormat"), variables))
    for ds in yaml.safe_load(DATASOURCES.read_text())["datasources"]:
        for q in ds.get("jsonData", {}).get("tracesToMetrics", {}).get("queries", []):
            out.append((f"datasource {ds['name']} / trace-to-metrics {q['name']!r}", q["query"], None, {}))
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "recording rule" if "record" in rule else "alert"
            out.append((f"{kind} {rule.get('record') or rule.get('alert')}", rule["expr"], None, {}))
    return out


def run_queries(base, start):
    """Each expression, as a range query over the load (like a dashboard over that span), must
    return at least one series with a finite value, carrying every label its legend uses."""
    end = time.time()
    count = 0
    for where, expr, legend, variables in expressions():
        count += 1
        label_values = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", expr or "")
        try:
            if label_values:
                values = prom_label_values(base, label_values.group(2), label_values.group(1))
                if not values:
                    fail(f"{where}: {expr} has no values")
                continue
            q = substitute(expr, variables)
            data = prom_query_range(base, q, start, end)
        except Exception as err:  # a query Prometheus rejects is a failure too
            fail(f"{where}: {err}")
            continue
        series = data["result"]
        if legend == "may-be-empty":
            continue
        if not series:
            fail(f"{where}: no series for {q}")
            continue
        finite = [s for s in series if any(math.isfinite(float(v)) for _, v in s["values"])]
        if not finite:
            fail(f"{where}: only NaN/Inf for {q}")
            continue
        for label in legend_labels(legend):
            if not any(label in s["metric"] for s in finite):
                fail(f"{where}: legend uses {{{{{label}}}}}, which no series of {q} carries")
    print(f"  {count} expressions, range-queried over the last {end - start:.0f}s")
    check_fleet_panels(base, start, end)
    done("queries")


# Every ratio panel, by title suffix: the raw series summed for its numerator and its
# denominator ("rate" over the rules' 1m window for counters, "gauge" as they are), and the
# selector's kind ("task": route/variant labels, "http": http_route/variant). The check
# recomputes each from the raw series alone, summing over instances itself.
TASK_TIME = ["stallscope_task_first_poll_delay_seconds_total", "stallscope_task_poll_duration_seconds_total",
             "stallscope_task_idle_seconds_total", "stallscope_task_scheduled_delay_seconds_total"]
RATIO_PANELS = {
    "slow-poll ratio by variant": ("rate", "task", ["stallscope_task_slow_polls_total"], ["stallscope_task_polls_total"]),
    "mean poll time by variant": ("rate", "task", ["stallscope_task_poll_duration_seconds_total"], ["stallscope_task_polls_total"]),
    "scheduled delay by variant": (
        "rate", "task",
        ["stallscope_task_scheduled_delay_seconds_total", "stallscope_task_first_poll_delay_seconds_total"],
        ["stallscope_task_schedules_total", "stallscope_task_first_polls_total"],
    ),
    "error rate (5xx share) by variant": (
        "rate", "http",
        ['http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'],
        ["http_server_request_duration_seconds_count"],
    ),
    "Upstream error rate (5xx share) by client variant": (
        "rate", "http",
        ['http_server_request_duration_seconds_count{http_response_status_code=~"5.."}'],
        ["http_server_request_duration_seconds_count"],
    ),
    "Upstream mean latency by client variant": ("rate", "task", TASK_TIME, ["stallscope_task_dropped_total"]),
    "Pool utilisation (in use / max)": (
        "gauge", None, ['stallscope_db_pool_connections{state="in_use"}'], ["stallscope_db_pool_max_connections"],
    ),
}
# Relative tolerance. A recording rule evaluated at t can miss a scrape stamped just before t
# that was still being written; the raw query at t, run later, sees it.
RATIO_TOLERANCE = 0.01
RATIO_POINTS = 12


def with_selector(metric, sel):
    """`name{a="b"}` + `c="d"` -> `name{a="b", c="d"}`."""
    if metric.endswith("}"):
        return metric[:-1] + ", " + sel + "}"
    return metric + "{" + sel + "}"


def raw_sums(base, metrics, kind, sel, group, at):
    """{(instance, group values): value}: each raw series' rate (or gauge value) at `at`, per
    instance, the metrics added up. Sums over instances are left to the caller."""
    out = {}
    for metric in metrics:
        inner = f"rate({with_selector(metric, sel)}[1m])" if kind == "rate" else with_selector(metric, sel)
        by = ", ".join(["instance"] + [g for g in group if g != "instance"])
        for s in prom_query(base, f"sum by ({by}) ({inner})", at)["result"]:
            key = (s["metric"].get("instance"),) + tuple(s["metric"].get(g, "") for g in group)
            out[key] = out.get(key, 0.0) + float(s["value"][1])
    return out


def check_ratios(base, start):
    """Each ratio panel's value (with $instance = All) equals sum(numerator) / sum(denominator)
    computed here from the raw series, at up to RATIO_POINTS of its recording rules'
    evaluation times during the load. It also reports where the instances' own ratios
    differed, i.e. where an average of per-instance ratios would have been wrong, and fails
    if the slow-poll panels never met such a point (the load would not test them)."""
    end = time.time()
    compared = 0
    discriminating = {}
    for dash, panel, variables in panel_targets():
        spec = next((v for k, v in RATIO_PANELS.items() if panel["title"].endswith(k)), None)
        if spec is None:
            continue
        kind, sel_kind, nums, dens = spec
        where = f"{dash['title']} / panel {panel['title']!r}"
        tgt = panel["targets"][0]
        expr = substitute(tgt["expr"], variables)
        group = [g for g in legend_labels(tgt["legendFormat"])]
        sel = 'instance=~".+"'
        if sel_kind:
            # The panel's own route selector; the sums here are over every instance.
            key = "route" if sel_kind == "task" else "http_route"
            route = re.search(r'(?<![a-z_])' + key + r'="([^"]+)"', tgt["expr"]).group(1)
            sel += f', {key}="{route}", variant!="invalid"'
        # When the panel's recording rules were evaluated: the raw samples of the first rule
        # it reads; a gauge panel reads raw series, so any time in the load will do.
        rule = re.search(r"stallscope:[a-z0-9_:]+", expr)
        if rule:
            stamps = sorted({float(ts) for s in prom_query(base, f"{rule.group(0)}[{int(end - start) + 1}s]", end)["result"]
                             for ts, _ in s["values"] if float(ts) >= start})
        else:
            stamps = [start + i for i in range(int(end - start))]
        picks = [stamps[int(i * (len(stamps) - 1) / (RATIO_POINTS - 1))] for i in range(RATIO_POINTS)] if stamps else []
        points = worst = wrong = 0
        for at in sorted(set(picks)):
            shown = {tuple(s["metric"].get(g, "") for g in group): float(s["value"][1])
                     for s in prom_query(base, expr, at)["result"]}
            num = raw_sums(base, nums, kind, sel, group, at)
            den = raw_sums(base, dens, kind, sel, group, at)
            for key in sorted({k[1:] for k in den}):
                d = sum(v for k, v in den.items() if k[1:] == key)
                n = sum(v for k, v in num.items() if k[1:] == key)
                if d <= 0:
                    continue
                fleet = n / d
                got = shown.get(key)
                label = ", ".join(f"{g}={v}" for g, v in zip(group, key))
                if got is None or not math.isfinite(got):
                    fail(f"{where} ({label}) at {at:.0f}: shows {got}, the raw series give {fleet:.4g}")
                    continue
                err = abs(got - fleet)
                if err > RATIO_TOLERANCE * max(abs(fleet), 1e-9) + 1e-12:
                    fail(f"{where} ({label}) at {at:.0f}: shows {got:.6g}, sum(numerator) / sum(denominator) "
                         f"of the raw series is {fleet:.6g}")
                    wrong += 1
                worst = max(worst, err / max(abs(fleet), 1e-9) if fleet else err)
                points += 1
                per = [num.get(k, 0.0) / v for k, v in den.items() if k[1:] == key and v > 0]
                if len(per) >= 2:
                    avg = sum(per) / len(per)
                    # Ten times the tolerance: here an average would have failed the check.
                    off = abs(avg - fleet) / max(abs(fleet), abs(avg), 1e-12)
                    if off > 10 * RATIO_TOLERANCE and off > discriminating.get(where, (0,))[0]:
                        discriminating[where] = (off, label, got, fleet, avg)
        if not points:
            fail(f"{where}: no point to compare at")
        compared += points
        print(f"  {where}: {points - wrong} of {points} values are the raw ratio of sums "
              f"(largest difference {worst:.1e} relative)")
    for where, (_, label, got, fleet, avg) in sorted(discriminating.items()):
        print(f"  {where} ({label}): shows {got:.4g}, the ratio of sums {fleet:.4g}; an average of the "
              f"instances' ratios would have shown {avg:.4g}")
    if not any("slow-poll ratio" in w for w in discriminating):
        fail("no slow-poll ratio panel met instances with different ratios: the check would not "
             "tell a ratio of sums from an average of ratios")
    print(f"  {compared} ratio values compared")
    done("ratios")


# The load in stack.sh creates each alert's situation: a /sleep/blocking burst on two workers
# (ExecutorStalled), a /sleep/spawn-blocking burst on a four-thread pool
# (BlockingPoolSaturated), and the stalling variants of every lesson (HighSlowPollRatio).
# `for:` keeps most of them pending in a half-minute run; pending proves the expression held.
STALLING_VARIANTS = {"blocking", "inline"}


def check_alerts(base, start):
    """Every alert went pending (or firing) during the load; HighSlowPollRatio only for the
    stalling variants."""
    data = prom_query_range(base, "max_over_time(ALERTS[1h])", start, time.time())
    seen = {}
    for s in data["result"]:
        labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "alertstate"))
        seen.setdefault(key, set()).add(labels["alertstate"])
    for key, states in sorted(seen.items()):
        labels = dict(key)
        rest = ", ".join(f"{k}={v}" for k, v in key if k not in ("alertname", "job", "severity"))
        print(f"  {labels['alertname']} {'/'.join(sorted(states))}{' (' + rest + ')' if rest else ''}")
    names = [r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]
    active = {dict(key)["alertname"] for key in seen}
    for name in names:
        if name not in active:
            fail(f"alert {name} never went pending although the load made its condition true")
    slow = {dict(key).get("variant") for key in seen if dict(key)["alertname"] == "HighSlowPollRatio"}
    if slow - STALLING_VARIANTS:
        fail(f"HighSlowPollRatio went pending for correct variants: {sorted(slow - STALLING_VARIANTS)}")
    done("alerts")

# ---------------------------------------------------------------------------------------
# Shared libraries of the final image


# Library packages every debian:bookworm-slim image has: glibc, and what dpkg and apt (always
# there) link against.
SLIM_BASE_LIBRARIES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}


def final_stage_packages():
    """Debian packages the Dockerfile's last stage installs with apt-get."""
    dockerfile = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    last = dockerfile[dockerfile.rfind("\nFROM"):]
    pkgs = set()
    for m in re.finditer(r"apt-get\s+install\s+([^&;|]+)", last):
        pkgs.update(w for w in m.group(1).split() if not w.startswith("-"))
    return pkgs


def check_runtime_libs(binary):
    """Every shared library the binary needs directly (ELF NEEDED) comes from a package that
    debian:bookworm-slim already holds, or that the final stage installs. The builder and
    this machine are both Debian bookworm, so the sonames and package names are the image's.
    (What the packages themselves depend on, apt installs with them.)"""
    dyn = subprocess.run(["readelf", "-d", binary], check=True, capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
    resolved = {}
    for line in subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout.splitlines():
        m = re.match(r"\s*(\S+) => (\S+)", line)
        if m:
            resolved[m.group(1)] = m.group(2)
    installed = final_stage_packages()
    report = []
    for lib in needed:
        if lib.startswith("ld-linux"):
            report.append(f"{lib} (libc6, in the base)")
            continue
        path = resolved.get(lib)
        if not path or path == "not":
            fail(f"{lib}: not found on this machine (ldd)")
            continue
        owner = subprocess.run(["dpkg", "-S", os.path.realpath(path)], capture_output=True, text=True)
        if owner.returncode != 0:
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
        pkg = owner.stdout.split(":")[0].strip() if owner.returncode == 0 else None
        if not pkg:
            fail(f"{lib} ({path}): no Debian package owns it")
            continue
        if pkg in SLIM_BASE_LIBRARIES:
            report.append(f"{lib} ({pkg}, in the base)")
        elif pkg in installed:
            report.append(f"{lib} ({pkg}, installed)")
        else:
            fail(f"the binary needs {lib} from {pkg}, which the Dockerfile's final stage does not install "
                 f"(it installs {sorted(installed) or 'nothing'})")
    for line in report:
        print(f"  {line}")
    done("runtime libraries")


# ---------------------------------------------------------------------------------------
# Traces: a stand-in OTLP/HTTP collector, and the trace links checked against its spans


def pb_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def pb_fields(buf):
    """(field number, value) of one protobuf message: ints for varints, bytes otherwise."""
    i = 0
    while i < len(buf):
        key, i = pb_varint(buf, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = pb_varint(buf, i)
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 2:
            n, i = pb_varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield number, value


def pb_attributes(kvs):
    """OTLP KeyValue list -> dict (string, bool, int and double values)."""
    out = {}
    for kv in kvs:
        key, value = None, None
        for n, v in pb_fields(kv):
            if n == 1:
                key = v.decode()
            elif n == 2:
                for an, av in pb_fields(v):
                    if an == 1:
                        value = av.decode()
                    elif an == 2:
                        value = bool(av)
                    elif an == 3:
                        value = av - (1 << 64) if av >= 1 << 63 else av
                    elif an == 4:
                        value = struct.unpack("<d", av)[0]
        if key is not None:
            out[key] = value
    return out


def decode_otlp_traces(body):
    """ExportTraceServiceRequest -> one dict per span."""
    spans = []
    for n, resource_spans in pb_fields(body):
        if n != 1:
            continue
        resource, scope_spans = {}, []
        for rn, rv in pb_fields(resource_spans):
            if rn == 1:
                resource = pb_attributes(v for an, v in pb_fields(rv) if an == 1)
            elif rn == 2:
                scope_spans.append(rv)
        for ss in scope_spans:
            for sn, sv in pb_fields(ss):
                if sn != 2:
                    continue
                span = {"service": resource.get("service.name"), "attributes": {}}
                kvs = []
                for fn, fv in pb_fields(sv):
                    if fn == 5:
                        span["name"] = fv.decode()
                    elif fn == 6:
                        span["kind"] = {1: "internal", 2: "server", 3: "client"}.get(fv, str(fv))
                    elif fn == 7:
                        start = struct.unpack("<Q", fv)[0]
                    elif fn == 8:
                        end = struct.unpack("<Q", fv)[0]
                    elif fn == 9:
                        kvs.append(fv)
                span["attributes"] = pb_attributes(kvs)
                span["duration_ms"] = (end - start) / 1e6
                spans.append(span)
    return spans


def run_otlp_sink(port, out, refuse_while):
    """POST /v1/traces (OTLP/HTTP, protobuf): while the file `refuse_while` exists, every
    batch gets a 400 (a collector that refuses them: the service counts them as dropped,
    export_failed; 400 is not retried); other batches are decoded, written to `out` and
    acknowledged with an empty response. stack.sh keeps the file through smoke.js, so the
    refusals span several scrapes and the dropped-spans rate and OtelSpansDropped have
    something to show (the counters are exported at 0 from the start, so rate() sees the
    first drop as long as it comes after the first scrape, which stack.sh waits for)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    import threading

    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            spans = decode_otlp_traces(body)
            refuse = os.path.exists(refuse_while)
            if refuse:
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with lock, open(out, "a") as f:
                for span in spans:
                    f.write(json.dumps(span) + "\n")
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

    ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()


def trace_links():
    """(where, link title, Jaeger query, raw URL) of every Explore link in the dashboards."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in all_panels(dash):
            for link in panel.get("fieldConfig", {}).get("defaults", {}).get("links", []):
                query = urllib.parse.urlparse(link.get("url", "")).query
                raw = urllib.parse.parse_qs(query).get("panes")
                if not raw:
                    continue
                pane = next(iter(json.loads(raw[0]).values()))
                for q in pane.get("queries", []):
                    out.append((f"{dash['title']} / panel {panel['title']!r}", link["title"], q, panel))
    return out


def logfmt(tags):
    return dict(re.findall(r'([\w.]+)="((?:[^"\\]|\\.)*)"', tags or ""))


def check_traces(spans_path, base, start):
    """What the trace links search Jaeger for must exist in the spans the service exported:
    the service name, the tag key on server spans, and each route a link can name, fixed or
    taken from the clicked series' label."""
    spans = [json.loads(line) for line in Path(spans_path).read_text().splitlines() if line.strip()]
    server = [s for s in spans if s.get("kind") == "server"]
    print(f"  {len(spans)} spans exported to the stand-in collector, {len(server)} of them server spans")
    if not server:
        fail("no server spans reached the collector")
        done("traces")
    for s in server:
        for key in ("http.route", "stallscope.variant", "stallscope.poll.longest_ms"):
            if key not in s["attributes"]:
                fail(f"server span {s.get('name')!r} has no attribute {key} ({sorted(s['attributes'])})")
                done("traces")
    links = trace_links()
    checked = 0
    unnamed = [s.get("name") for s in spans if s["service"] is None]
    if unnamed:
        # Jaeger files such spans under "OTLPResourceNoServiceName": a search by service, which
        # every trace link makes, would never find them.
        fail(f"{len(unnamed)} exported spans carry no resource service.name, e.g. {unnamed[:3]}")
    for where, title, q, panel in links:
        tags = logfmt(q.get("tags"))
        service = q.get("service")
        mine = [s for s in server if s["service"] == service]
        if not mine:
            fail(f"{where}: link {title!r} searches service {service!r}; the spans' service.name is {sorted({str(s['service']) for s in server})}")
            continue
        for key, value in tags.items():
            values = {s["attributes"].get(key) for s in mine}
            templated = re.fullmatch(r"\$\{__field\.labels\.(\w+)(?::\w+)?\}", value)
            if templated:
                # The link takes the value from the clicked series: every series the panel
                # shows must name a route that spans carry.
                label = templated.group(1)
                shown = set()
                for t in panel.get("targets", []):
                    expr = substitute(t["expr"], {"instance": ".+"})
                    for series in prom_query_range(base, expr, start, time.time())["result"]:
                        if label in series["metric"]:
                            shown.add(series["metric"][label])
                shown.discard("task")  # background tasks: no request, no span
                if not shown:
                    fail(f"{where}: no series to take {label} from")
                for v in sorted(shown - values):
                    fail(f"{where}: link {title!r} would search {key}={v!r}, which no exported span carries")
                checked += len(shown)
            elif value not in values:
                fail(f"{where}: link {title!r} searches {key}={value!r}; server spans carry {sorted(v for v in values if v)}")
            else:
                checked += 1
    print(f"  {len(links)} trace links, {checked} tag values found on exported server spans")
    done("traces")


def main(argv):
    cmd = argv[0]
    if cmd == "dashboards":
        check_dashboards()
    elif cmd == "compose":
        check_compose()
    elif cmd == "compose-k6":
        check_compose_k6(argv[1], argv[2])
    elif cmd == "docker":
        copy_context(argv[1])
    elif cmd == "rust-version":
        check_rust_version(argv[1])
    elif cmd == "healthchecks":
        run_healthchecks()
    elif cmd == "prom-config":
        write_prom_config(argv[1], argv[2], argv[3])
    elif cmd == "queries":
        run_queries(argv[1].rstrip("/"), float(argv[2]))
    elif cmd == "smoke-size":
        check_smoke_size(argv[1:])
    elif cmd == "ratios":
        check_ratios(argv[1].rstrip("/"), float(argv[2]))
    elif cmd == "alerts":
        check_alerts(argv[1].rstrip("/"), float(argv[2]))
    elif cmd == "runtime-libs":
        check_runtime_libs(argv[1])
    elif cmd == "otlp-sink":
        run_otlp_sink(argv[1], argv[2], argv[3])
    elif cmd == "traces":
        check_traces(argv[1], argv[2].rstrip("/"), float(argv[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
