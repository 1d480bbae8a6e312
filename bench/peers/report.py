"""Tables and charts from bench/peers/run.py's results.json (bench/peers.sh).

    python3 report.py RESULTS_JSON --tables OUT.md --charts DIR [--benchmarks docs/benchmarks.md]

With --benchmarks, the tables replace what stands between `<!-- peers:start -->` and
`<!-- peers:end -->` in that file. Charts are SVG, drawn with matplotlib.
"""

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402

# The FastAPI form beside each stallscope variant (bench/peers/fastapi_app.py).
FASTAPI_FORM = {
    ("sleep", "async"): "async def + await asyncio.sleep",
    ("sleep", "blocking"): "async def + time.sleep",
    ("sleep", "spawn-blocking"): "def + time.sleep",
    ("sleep", "block-in-place"): "async def + run_in_threadpool",
    ("cpu", "inline"): "async def + CPU loop",
    ("cpu", "spawn-blocking"): "def + CPU loop",
    ("cpu", "rayon"): "ProcessPoolExecutor",
    ("upstream", "async"): "httpx.AsyncClient",
    ("upstream", "blocking"): "requests in async def",
    ("upstream", "spawn-blocking"): "requests in def",
    ("db", "async"): "aiosqlite",
    ("db", "raw"): "aiosqlite, raw SQL",
    ("db", "blocking"): "sqlite3 in async def",
    ("db", "spawn-blocking"): "sqlite3 via run_in_threadpool",
}


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def experiment_table(results: dict) -> str:
    experiment = results["experiment"]
    fastapi_many = next(k for k in experiment if k.startswith("fastapi-") and k != "fastapi-1")
    rows = ["| lesson | stallscope variant | slowest / parallel, stallscope (1 worker) "
            f"| FastAPI form | FastAPI, 1 worker | FastAPI, {fastapi_many.split('-')[1]} workers |",
            "|---|---|---:|---|---:|---:|"]

    def by_variant(report):
        return {(lesson["lesson"], v["variant"]): v for lesson in report["lessons"] for v in lesson["variants"]}

    ours, one, many = (by_variant(experiment[k]) for k in ("stallscope-1", "fastapi-1", fastapi_many))
    for key, variant in ours.items():
        def cell(v):
            if v is None:
                return "—"
            verdict = v["verdict"].split(":")[0].split(",")[0]
            return f"{v['slowdown']:.2f} {verdict}"
        bold = "**" if variant["expected_to_stall"] else ""
        rows.append(f"| {key[0]} | {bold}{key[1]}{bold} | {cell(variant)} | {FASTAPI_FORM.get(key, '?')} "
                    f"| {cell(one.get(key))} | {cell(many.get(key))} |")
    return "\n".join(rows)


def throughput_table(results: dict) -> str:
    t = results["throughput"]
    sides = results["sides"]
    routes = [r for r in t if r.startswith("/")]
    hello, sleep = routes
    rows = [f"| side | × FastAPI (1 worker), `/hello` | `/hello` req/s | p99 | `{sleep}` req/s "
            f"| of Little's limit ({t['littles_law_limit']:.0f}/s) | p99 |",
            "|---|---:|---:|---:|---:|---:|---:|"]
    base = t[hello]["fastapi-1"]["requests_per_s"]
    for side in sides:
        h, s = t[hello][side], t[sleep][side]
        rows.append(f"| {side} | {h['requests_per_s'] / base:.1f} | {h['requests_per_s']:,.0f} | "
                    f"{h['p99_ms']:.1f} ms | {s['requests_per_s']:,.0f} | {s['littles_law_share']:.2f} | "
                    f"{s['p99_ms']:.0f} ms |")
    return "\n".join(rows)


def collateral_table(results: dict) -> str:
    rows = ["| side | `/hello` p99 with the fix, × quiet | quiet p99 | while loading the stalling variant "
            "| while loading its fix |", "|---|---:|---:|---:|---:|"]
    for side, loads in results["collateral"].items():
        quiet = loads["quiet"]["p99_ms"]
        rows.append(f"| {side} | {loads['fixed']['p99_ms'] / quiet:.1f} | {quiet:.1f} ms | "
                    f"{loads['stalling']['p99_ms']:.1f} ms | {loads['fixed']['p99_ms']:.1f} ms |")
    return "\n".join(rows)


def memory_table(results: dict) -> str:
    m = results["memory"]
    fastapi = m["fastapi-1"]["peak_bytes"]
    rows = ["| side | peak RSS, × FastAPI (1 worker) | at rest | peak with the requests in flight | answered 2xx |",
            "|---|---:|---:|---:|---:|"]
    for side, figures in m.items():
        rows.append(f"| {side} | {figures['peak_bytes'] / fastapi:.2f} | {mib(figures['at_rest_bytes'])} | "
                    f"{mib(figures['peak_bytes'])} | {figures['answered_2xx']:,} of {figures['requests']:,} |")
    return "\n".join(rows)


def detection_line(benchmarks: Path | None) -> str:
    """The stall detection figures of `cargo bench --bench watchdog_latency`, as its own
    section of docs/benchmarks.md last recorded them (a build of its own; not re-run here)."""
    if benchmarks is None or not benchmarks.is_file():
        return ""
    block = re.search(r"<!-- watchdog:start -->\n(.*?)\n.*?\| p50.*?\n\|[-:| ]+\n(\|.*?\|)\n",
                      benchmarks.read_text(), re.S)
    if not block:
        return ""
    setup, row = block.group(1), block.group(2)
    cells = [c.strip() for c in row.strip("|").split("|")]
    return (f"\n**Stall detection** ([its own section](#stall-detection-latency), "
            f"`cargo bench --bench watchdog_latency`): {setup.split('. ')[0]}: reported "
            f"{cells[0]} (p50), {cells[2]} (max) after the threshold was crossed.\n")


def tables(results: dict, command: str, benchmarks: Path | None = None) -> str:
    plan, machine = results["plan"], results["machine"]
    detection = detection_line(benchmarks)
    scrape = results["scrape"]
    return f"""Measured {machine['date']} on {machine['cores']} × {machine['cpu']}, oha on the same cores,
`{command}` ({plan['rounds']} rounds of every side, medians; {plan['seconds']} s per load).

**The tutorial's lesson, request for request**: two requests at once per variant of
{plan['experiment_ms']} ms each (`stallscope experiment`, which also measures the FastAPI app
through `--url`); ≈ 1 is parallel, ≈ 2 serialised. Bold: the variant the lesson says stalls.

{experiment_table(results)}

**Throughput** at {plan['connections']} connections:

{throughput_table(results)}

**Collateral damage**: `/hello` p99 (4 connections) while {plan['collateral_clients']} other
clients load `/sleep/blocking?ms=50`, then `/sleep/spawn-blocking?ms=50`:

{collateral_table(results)}

**Memory** with {plan['memory_requests']:,} requests of `/sleep/async?ms={plan['memory_sleep_ms']}` in
flight at once (RSS of the whole process tree, sampled every 100 ms):

{memory_table(results)}

**Scrape**: stallscope's `/metrics` after every route and variant was served once:
{scrape['series']} series, {scrape['bytes']:,} bytes, {scrape['median_ms']:.1f} ms median
(max {scrape['max_ms']:.1f} ms) over 20 scrapes.
{detection}"""


def charts(results: dict, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    plt.rcParams.update({"font.size": 10, "svg.hashsalt": "stallscope", "svg.fonttype": "none"})
    t = results["throughput"]
    hello, sleep = [r for r in t if r.startswith("/")]
    sides = results["sides"]
    colors = ["#999999" if s.startswith("fastapi") else "#d2691e" if s == "stallscope" else "#4c72b0"
              for s in sides]
    written = []

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.barh(sides, [t[hello][s]["requests_per_s"] for s in sides], color=colors)
    left.set_title(f"GET /hello, {results['plan']['connections']} connections: requests/s")
    left.invert_yaxis()
    right.barh(sides, [t[sleep][s]["littles_law_share"] for s in sides], color=colors)
    right.axvline(1.0, color="black", linewidth=0.8, linestyle="--")
    right.set_xlim(0, 1.1)
    right.set_title(f"GET {sleep}: share of Little's-law limit")
    right.invert_yaxis()
    right.set_yticklabels([])
    fig.tight_layout()
    path = directory / "peers-throughput.svg"
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    written.append(path)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    c = results["collateral"]
    names = list(c)
    width = 0.25
    for i, load in enumerate(("quiet", "stalling", "fixed")):
        ax.bar([x + (i - 1) * width for x in range(len(names))], [c[n][load]["p99_ms"] for n in names],
               width, label={"quiet": "quiet", "stalling": "loading the stalling variant",
                             "fixed": "loading its fix"}[load])
    ax.set_xticks(range(len(names)), names)
    ax.set_yscale("log")
    ax.set_ylabel("/hello p99, ms (log)")
    ax.set_title("Collateral damage: a fast route's p99 beside a blocking one")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = directory / "peers-collateral.svg"
    fig.savefig(path, metadata={"Date": None})
    plt.close(fig)
    written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=Path)
    parser.add_argument("--tables", type=Path, required=True)
    parser.add_argument("--charts", type=Path, required=True)
    parser.add_argument("--benchmarks", type=Path)
    parser.add_argument("--command", default="bench/peers.sh")
    args = parser.parse_args()
    results = json.loads(args.results.read_text())
    text = tables(results, args.command, args.benchmarks)
    args.tables.write_text(text)
    for path in charts(results, args.charts):
        print(f"chart: {path}")
    if args.benchmarks:
        doc = args.benchmarks.read_text()
        block = f"<!-- peers:start -->\n{text}<!-- peers:end -->"
        new, count = re.subn(r"<!-- peers:start -->.*?<!-- peers:end -->", lambda _: block, doc, flags=re.S)
        if count != 1:
            raise SystemExit(f"{args.benchmarks} has no peers:start/end markers")
        args.benchmarks.write_text(new)
    print(text)


if __name__ == "__main__":
    main()
