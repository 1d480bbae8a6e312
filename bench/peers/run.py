"""stallscope beside the FastAPI tutorial's own stack and the limits, in one run (bench/peers.sh).

Sides, all on this machine, loopback, with oha as the load generator on the same cores:
    bare           stallscope --no-instrumentation (the axum router alone), 2 workers
    conventional   bench/conventional: TraceLayer + axum-prometheus + tokio-metrics, 2 workers
    stallscope     stallscope on its defaults, 2 workers
    fastapi-1      bench/peers/fastapi_app.py under uvicorn[standard], one worker process
    fastapi-N      the same with --workers N (N = the machine's cores)

Parts (rounds alternate the sides, and each figure is the median round):
    experiment   `stallscope experiment` against stallscope (in-process, one worker) and the
                 FastAPI app (one worker, then N): the tutorial's lesson, variant by variant
    throughput   /hello and /sleep/async?ms=100 at C connections: requests/s, p99, and for the
                 sleep the share of Little's law's limit (C / 0.1 s)
    collateral   p99 of /hello while other clients load the stalling variant, then its fix
    memory       RSS with M sleeping requests in flight (/sleep/async?ms=…)
    scrape       stallscope's /metrics after every route and variant has been served: time, size

    python3 run.py --out DIR [--smoke]

Writes DIR/results.json; bench/peers/report.py turns it into tables and charts. --smoke is a
short run that checks every part works (CI), not the numbers; it leaves out the conventional
side, whose crate is a build of its own.
"""

import argparse
import json
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CORES = os.cpu_count() or 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def wait_until_up(url: str, process: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode} before {url} answered")
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def tree_rss_bytes(pid: int) -> int:
    """RSS of a process and its descendants (uvicorn --workers N forks N processes)."""
    children = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


class Side:
    """One server under test: started on a free port, stopped with its whole process group."""

    def __init__(self, name: str, command: list[str], env: dict | None = None):
        self.name, self.command, self.env = name, command, env
        self.process = None
        self.port = 0

    def __enter__(self):
        self.port = free_port()
        command = [part.replace("{port}", str(self.port)) for part in self.command]
        self.log = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})}, start_new_session=True,
        )
        wait_until_up(f"{self.url}/healthz", self.process)
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.log.close()


def oha(url: str, *, seconds: float | None = None, requests: int | None = None,
        connections: int, timeout_s: int = 30) -> dict:
    """One oha run: requests/s, p50 and p99 in ms, and the failed share."""
    command = ["oha", "--no-tui", "--output-format", "json", "-c", str(connections),
               "-t", f"{timeout_s}s"]
    command += ["-z", f"{seconds}s"] if seconds else ["-n", str(requests)]
    result = subprocess.run(command + [url], capture_output=True, text=True, check=True)
    report = json.loads(result.stdout)
    summary, percentiles = report["summary"], report["latencyPercentiles"]
    statuses = report.get("statusCodeDistribution", {})
    ok = sum(count for status, count in statuses.items() if status.startswith("2"))
    # `-z` cancels the requests still in flight when its time is up: not failures.
    errors = {e: n for e, n in report.get("errorDistribution", {}).items() if "deadline" not in e}
    total = sum(statuses.values()) + sum(errors.values())
    return {
        "requests_per_s": summary["requestsPerSec"],
        "p50_ms": (percentiles.get("p50") or 0) * 1000,
        "p99_ms": (percentiles.get("p99") or 0) * 1000,
        "ok_share": ok / total if total else 0.0,
    }


def median_round(rounds: list[dict], key: str) -> dict:
    """The round whose `key` is the median (so its other figures come from the same run)."""
    ordered = sorted(rounds, key=lambda r: r[key])
    return ordered[len(ordered) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--stallscope", default=str(REPO / "target/release/stallscope"))
    parser.add_argument("--conventional", default=str(REPO / "bench/conventional/target/release/conventional"))
    parser.add_argument("--python", default=sys.executable, help="the venv with FastAPI and uvicorn")
    args = parser.parse_args()
    smoke = args.smoke
    plan = {
        "seconds": 2 if smoke else 10,
        "connections": 50 if smoke else 1000,
        "rounds": 1 if smoke else 3,
        "sleep_ms": 100,
        "experiment_ms": 200 if smoke else 1000,
        "collateral_clients": 4 if smoke else 8,
        "memory_requests": 300 if smoke else 10_000,
        "memory_sleep_ms": 3000 if smoke else 8000,
    }
    # 10 000 connections need 10 000 descriptors on both ends.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="stallscope-peers-"))
    upstream_port = free_port()
    upstream = subprocess.Popen([args.stallscope, "upstream", "--bind", f"127.0.0.1:{upstream_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    upstream_url = f"http://127.0.0.1:{upstream_port}"
    quiet = {"RUST_LOG": "warn"}
    stallscope_env = {**quiet, "STALLSCOPE_UPSTREAM_URL": upstream_url}

    def stallscope_side(name, *extra, database):
        return Side(name, [args.stallscope, "serve", "--bind", "127.0.0.1:{port}", "--workers", "2",
                           "--database-url", f"sqlite://{scratch}/{database}.db", *extra],
                    stallscope_env)

    def fastapi_side(workers: int):
        return Side(f"fastapi-{workers}",
                    [args.python, "-m", "uvicorn", "fastapi_app:app", "--app-dir", str(Path(__file__).parent),
                     "--port", "{port}", "--workers", str(workers), "--log-level", "warning",
                     "--no-access-log", "--backlog", "16384"],
                    {"PEER_UPSTREAM_URL": upstream_url, "PEER_DATABASE": str(scratch / "peer.db")})

    sides = {
        "bare": lambda: stallscope_side("bare", "--no-instrumentation", database="bare"),
        "conventional": lambda: Side("conventional", [args.conventional, "--bind", "127.0.0.1:{port}"], quiet),
        "stallscope": lambda: stallscope_side("stallscope", database="stallscope"),
        "fastapi-1": lambda: fastapi_side(1),
        f"fastapi-{CORES}": lambda: fastapi_side(CORES),
    }
    if smoke:
        del sides["conventional"]
    results = {"plan": plan, "machine": machine(), "sides": list(sides)}
    try:
        results["experiment"] = experiments(args, plan, fastapi_side)
        results["throughput"] = throughput(sides, plan)
        results["collateral"] = collateral(plan, stallscope_side, fastapi_side)
        results["memory"] = memory(sides, plan)
        results["scrape"] = scrape(stallscope_side)
    finally:
        upstream.terminate()
        upstream.wait()
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"results: {args.out / 'results.json'}")


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    return {"cpu": model, "cores": CORES, "date": time.strftime("%Y-%m-%d")}


def experiments(args, plan, fastapi_side) -> dict:
    """The tutorial's lesson: two requests at once per variant, one worker (then N for FastAPI)."""
    ms = str(plan["experiment_ms"])
    base = [args.stallscope, "experiment", "--json", "--ms", ms]
    print("experiment: stallscope, one worker", flush=True)
    # In-process: it starts its own service, whose SQLite file lands in the working directory.
    with tempfile.TemporaryDirectory() as scratch:
        out = {"stallscope-1": json.loads(subprocess.run(
            base, capture_output=True, text=True, check=True, cwd=scratch,
            env={**os.environ, "RUST_LOG": "warn"}).stdout)}
    for workers in (1, CORES):
        print(f"experiment: FastAPI, {workers} worker(s)", flush=True)
        with fastapi_side(workers) as fastapi:
            command = base + ["--url", fastapi.url, "--workers", str(workers)]
            out[f"fastapi-{workers}"] = json.loads(subprocess.run(command, capture_output=True, text=True,
                                                                  check=True).stdout)
    return out


def throughput(sides, plan) -> dict:
    """/hello and /sleep/async?ms=100 at C connections, every side once per round."""
    out = {}
    for route in ("/hello", f"/sleep/async?ms={plan['sleep_ms']}"):
        per_side = {name: [] for name in sides}
        for round_number in range(plan["rounds"]):
            for name, make in sides.items():
                print(f"throughput {route}: {name}, round {round_number + 1}", flush=True)
                with make() as side:
                    oha(side.url + route, seconds=1, connections=min(50, plan["connections"]))  # warm-up
                    per_side[name].append(oha(side.url + route, seconds=plan["seconds"],
                                              connections=plan["connections"]))
        out[route] = {name: {**median_round(rounds, "requests_per_s"), "rounds": rounds}
                      for name, rounds in per_side.items()}
    sleep_route = f"/sleep/async?ms={plan['sleep_ms']}"
    limit = plan["connections"] / (plan["sleep_ms"] / 1000)
    for figures in out[sleep_route].values():
        figures["littles_law_share"] = figures["requests_per_s"] / limit
    out["littles_law_limit"] = limit
    return out


def collateral(plan, stallscope_side, fastapi_side) -> dict:
    """p99 of /hello, quiet and while other clients load the stalling variant or its fix."""
    out = {}
    loads = {"quiet": None, "stalling": "/sleep/blocking?ms=50", "fixed": "/sleep/spawn-blocking?ms=50"}
    for name, make in (("stallscope", lambda: stallscope_side("stallscope", database="collateral")),
                       ("fastapi-1", lambda: fastapi_side(1))):
        out[name] = {}
        for load_name, load in loads.items():
            print(f"collateral: {name}, {load_name}", flush=True)
            with make() as side:
                background = None
                if load:
                    background = subprocess.Popen(
                        ["oha", "--no-tui", "-c", str(plan["collateral_clients"]), "-z",
                         f"{plan['seconds'] + 2}s", side.url + load],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1)
                out[name][load_name] = oha(side.url + "/hello", seconds=plan["seconds"], connections=4)
                if background:
                    background.wait()
    return out


def memory(sides, plan) -> dict:
    """RSS at rest and its peak with M sleeping requests in flight at once."""
    out = {}
    n, ms = plan["memory_requests"], plan["memory_sleep_ms"]
    for name, make in sides.items():
        print(f"memory: {name}, {n} sleeping requests", flush=True)
        with make() as side:
            at_rest = tree_rss_bytes(side.process.pid)
            load = subprocess.Popen(
                ["oha", "--no-tui", "--output-format", "json", "-c", str(n), "-n", str(n),
                 "-t", f"{ms // 1000 + 60}s", f"{side.url}/sleep/async?ms={ms}"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            peak = at_rest
            while load.poll() is None:
                peak = max(peak, tree_rss_bytes(side.process.pid))
                time.sleep(0.1)
            report = json.loads(load.stdout.read())
            statuses = report.get("statusCodeDistribution", {})
            out[name] = {"at_rest_bytes": at_rest, "peak_bytes": peak,
                         "answered_2xx": sum(c for s, c in statuses.items() if s.startswith("2")),
                         "requests": n}
    return out


def scrape(stallscope_side) -> dict:
    """/metrics after every route and variant was served once: its size and time."""
    with stallscope_side("stallscope", "--max-cpu-iterations", "1000", database="scrape") as side:
        document = json.loads(get(side.url + "/openapi.json"))
        for path, item in document["paths"].items():
            if "get" not in item or path == "/metrics":
                continue
            variants = [None]
            for parameter in item["get"].get("parameters", []):
                if parameter["name"] == "variant":
                    variants = parameter["schema"]["enum"]
            for variant in variants:
                url = path.replace("{variant}", variant or "").replace("{id}", "1")
                query = "?ms=1" if "ms" in str(item["get"].get("parameters")) else "?iterations=1000"
                try:
                    get(side.url + url + query)
                except OSError:
                    pass  # a 404 for a missing user still creates its series
        times, size, series = [], 0, 0
        for _ in range(20):
            started = time.perf_counter()
            body = get(side.url + "/metrics")
            times.append((time.perf_counter() - started) * 1000)
            size = len(body)
            series = sum(1 for line in body.decode().splitlines() if line and not line.startswith("#"))
        return {"median_ms": statistics.median(times), "max_ms": max(times), "bytes": size,
                "series": series}


if __name__ == "__main__":
    main()
