#!/usr/bin/env python3
"""Writes the Grafana dashboards in grafana/dashboards/ with Grafana's grafana-foundation-sdk.

The dashboards are generated rather than hand-edited so that every lesson gets the same
panels, every panel gets a unit, a description and the right datasource, and the check in
scripts/checks/stack.sh can tell whether the JSON files are up to date. The panels, queries
and dashboards are built with grafana-foundation-sdk's typed builders (the release generated
for Grafana 11.4, the image docker-compose.yml runs), pinned and hash-checked in
scripts/checks/stack/requirements.txt and installed into the stack tools venv by
scripts/checks/stack/install-tools.sh (scripts/ci-setup.sh runs it):

    py=${STALLSCOPE_TOOLS_DIR:-~/.cache/stallscope/stack-tools}/bin/python
    $py grafana/dashboards.py           # rewrite grafana/dashboards/*.json
    $py grafana/dashboards.py --check   # exit 1 if a file differs from what it would write

Started by a python3 without the SDK (`python3 grafana/dashboards.py`), it runs itself
again with that venv's python, or says how to install it.

Metric names come from src/telemetry/metric_names.rs and src/telemetry/exposition.rs;
`stallscope:*` series are the recording rules in prometheus/rules.yml.

Every panel is right for a fleet, whatever the number of replicas. The recording rules are
per instance, so each query first keeps the instances picked in the $instance menu, then:
counts are summed by exactly the labels the legend shows; ratios and means are
sum(numerator) / sum(denominator) (`ratio()`); quantiles are histogram_quantile over the
bucket rates summed across instances (`quantile()`). A panel shows one line per instance only
where its description says "per instance" and its legend names the instance. The live check
(scripts/checks/stack.sh) runs every query against three instances and fails when two series
of a panel render the same legend, or a ratio panel differs from the ratio of the raw sums.
"""

import json
import os
import sys
import urllib.parse
from pathlib import Path

TOOLS = Path(os.environ.get("STALLSCOPE_TOOLS_DIR") or Path.home() / ".cache" / "stallscope" / "stack-tools")
try:
    from grafana_foundation_sdk.builders import common as cb
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import heatmap, prometheus, stat, timeseries
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models.heatmap import HeatmapColorMode, HeatmapColorScale
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat
except ModuleNotFoundError:
    venv_python = TOOLS / "bin" / "python"
    if venv_python.exists() and Path(sys.prefix).resolve() != TOOLS.resolve():
        os.execv(venv_python, [str(venv_python), *sys.argv])
    sys.exit(f"grafana-foundation-sdk is missing: run scripts/checks/stack/install-tools.sh, "
             f"then {venv_python} {sys.argv[0]}")

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"

# Must match grafana/provisioning/datasources/datasources.yml (the check compares them).
PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="prometheus")
JAEGER = {"type": "jaeger", "uid": "jaeger"}  # inside Explore URLs: plain JSON

# What the trace links search for: the OTLP resource's service name (OTEL_SERVICE_NAME in
# docker-compose.yml) and the OpenTelemetry semantic-convention attribute of server spans.
TRACE_SERVICE = "stallscope"
TRACE_ROUTE_TAG = "http.route"

INSTANCE = 'instance=~"$instance"'
INSTANCES_QUERY = "label_values(stallscope_runtime_workers, instance)"

# The alerts the dashboards' "Stall alerts" annotation marks (prometheus/rules.yml): the ones
# about stalls, not the blocking pool or the trace export.
STALL_ALERTS = ["ExecutorStalled", "HighSlowPollRatio"]

# The lessons, their route templates and variants (src/routes/*.rs), the stalling variants
# first-class in red so they stand out, the correct ones in calm colours.
LESSONS = [
    ("Sleep lesson: /sleep/{variant}", "/sleep/{variant}", "sleep"),
    ("CPU lesson: /cpu/{variant}", "/cpu/{variant}", "cpu"),
    ("Upstream lesson: /upstream/{variant}", "/upstream/{variant}", "upstream"),
    ("Database lesson: /db/{variant}/sleep", "/db/{variant}/sleep", "db"),
    ("Database lesson: /db/{variant}/users/{id}", "/db/{variant}/users/{id}", "db users"),
]
VARIANT_COLORS = {
    "blocking": "red",
    "inline": "red",
    "block-in-place": "orange",
    "async": "green",
    "spawn-blocking": "blue",
    "rayon": "purple",
    "raw": "purple",
}

# Bucket rates of the HTTP server histogram (prometheus/rules.yml), for fleet quantiles.
HTTP_BUCKETS = "stallscope:http_request_duration_seconds_bucket:rate1m"

# Executor lag thresholds from the issue: over 10 ms amber, over 100 ms red. The stall
# watchdog's default threshold is the same 100 ms; the blocking-pool and database-pool wait
# panels use the same steps.
LAG_STEPS = [(None, "green"), (0.01, "#EAB839"), (0.1, "red")]
ERROR_STEPS = [(None, "green"), (0.01, "#EAB839"), (0.05, "red")]


# ---------------------------------------------------------------------------------------
# Queries: plain strings


def ratio(numerator, denominator, by, sel):
    """A fleet ratio: the sum of the numerator rule over the sum of the denominator rule."""
    return f"sum by ({by}) ({numerator}{{{sel}}}) / sum by ({by}) ({denominator}{{{sel}}})"


def quantile(q, bucket_rule, by, sel):
    """A fleet quantile: histogram_quantile over bucket rates summed across instances."""
    by = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({by}) ({bucket_rule}{{{sel}}}))"


def latency_by_variant(http_sel):
    """p50 and p99 of each variant's request duration: the (query, legend) pairs of a panel."""
    return [
        (quantile(q, HTTP_BUCKETS, "variant", http_sel), f"p{round(q * 100)} {{{{variant}}}}")
        for q in (0.5, 0.99)
    ]


def explore_traces(tags, min_duration):
    """A Grafana Explore URL searching Jaeger for this dashboard's time range.

    `tags` is Jaeger's logfmt tag filter; Grafana variables in it (`${...}`) are kept
    un-encoded so Grafana can interpolate them, with `:percentencode` where they are
    label values that end up inside the URL.
    """
    pane = {
        "traces": {
            "datasource": JAEGER["uid"],
            "queries": [
                {
                    "refId": "A",
                    "datasource": JAEGER,
                    "queryType": "search",
                    "service": TRACE_SERVICE,
                    "tags": tags,
                    "minDuration": min_duration,
                    "limit": 20,
                }
            ],
            "range": {"from": "${__from}", "to": "${__to}"},
        }
    }
    encoded = urllib.parse.quote(json.dumps(pane, separators=(",", ":")), safe="")
    # Give Grafana's variables back their braces: they are interpolated before the link opens.
    for var in ("__from", "__to", "__field.labels.route:percentencode"):
        encoded = encoded.replace(urllib.parse.quote("${" + var + "}", safe=""), "${" + var + "}")
    return "/explore?schemaVersion=1&orgId=1&panes=" + encoded


# ---------------------------------------------------------------------------------------
# Building blocks: the SDK's builders with this project's defaults


def trace_link(title, route, min_duration):
    """A data link to the traces of `route` (or of the clicked series' route label)."""
    return db.DashboardLink(title).url(explore_traces(f'{TRACE_ROUTE_TAG}="{route}"', min_duration))


def thresholds(steps):
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=value, color=color) for value, color in steps]
    )


def color(fixed):
    return dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": fixed})


def prom(expr, legend, ref="A"):
    return prometheus.Dataquery().datasource(PROMETHEUS).expr(expr).legend_format(legend).range().ref_id(ref)


def graph(title, description, queries, unit, *, steps=None, steps_style=cm.GraphThresholdsStyleMode.LINE_AND_AREA,
          variants=False, stack=False):
    """A time series panel, from 0, one query per (expr, legend) pair (refIds A, B, ...);
    `steps` are (value, colour) thresholds, drawn; `variants` colours the lines by variant."""
    panel = (
        timeseries.Panel().title(title).description(description).datasource(PROMETHEUS).unit(unit).min(0)
        .targets([prom(expr, legend, ref) for ref, (expr, legend) in zip("ABCDEFGH", queries)])
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(cm.GraphDrawStyle.LINE).line_width(2).fill_opacity(10)
        .show_points(cm.VisibilityMode.NEVER).span_nulls(False)
        .stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL if stack else cm.StackingMode.NONE).group("A"))
        .thresholds(thresholds(steps or [(None, "green")]))
        .thresholds_style(cb.GraphThresholdsStyleConfig().mode(steps_style if steps else cm.GraphThresholdsStyleMode.OFF))
        .legend(cb.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.TABLE)
                .placement(cm.LegendPlacement.BOTTOM).calcs(["max", "mean"]))
        .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING))
    )
    if variants:
        for variant, fixed in VARIANT_COLORS.items():
            panel.override_by_name(variant, [color(fixed)])
    return panel


class Grid:
    """Places a dashboard's rows and panels (all 8 high) left to right on Grafana's 24-column
    grid, wrapping when the next panel does not fit, and numbers them. (The SDK's own
    placement wraps only once a line is full or past it, and numbers nothing.)"""

    def __init__(self, dash):
        self.dash, self.x, self.y, self.id = dash, 0, 0, 0

    def row(self, title):
        if self.x:
            self.x, self.y = 0, self.y + 8
        self.id += 1
        self.dash.with_row(db.Row(title).id(self.id).grid_pos(dm.GridPos(h=1, w=24, x=0, y=self.y)))
        self.y += 1

    def add(self, w, panel):
        if self.x + w > 24:
            self.x, self.y = 0, self.y + 8
        self.id += 1
        self.dash.with_panel(panel.id(self.id).grid_pos(dm.GridPos(h=8, w=w, x=self.x, y=self.y)))
        self.x += w


def dashboard(uid, title, description):
    """A dashboard with the Instance menu, the stall-alert annotations and the links all share."""
    dash = (
        db.Dashboard(title).uid(uid).description(description).tags(["stallscope"]).timezone("browser")
        .editable().tooltip(dm.DashboardCursorSync.CROSSHAIR).version(1).refresh("5s").time("now-15m", "now")
        .annotation(
            db.AnnotationQuery().name("Annotations & Alerts").type("dashboard").built_in(1)
            .datasource(dm.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True).hide(True).icon_color("rgba(0, 211, 255, 1)")
        )
        .annotation(
            db.AnnotationQuery().name("Stall alerts").datasource(PROMETHEUS).enable(True).icon_color("red")
            .expr(f'ALERTS{{alertstate="firing", alertname=~"{"|".join(STALL_ALERTS)}", {INSTANCE}}}')
        )
        .link(
            db.DashboardLink("stallscope dashboards").type(dm.DashboardLinkType.DASHBOARDS).tags(["stallscope"])
            .as_dropdown(True).include_vars(True).keep_time(True)
        )
        .link(
            db.DashboardLink("Jaeger UI").type(dm.DashboardLinkType.LINK).icon("external link").target_blank(True)
            .url(f"http://localhost:16686/search?service={TRACE_SERVICE}")
        )
        .with_variable(
            db.QueryVariable("instance").label("Instance").datasource(PROMETHEUS)
            .query({"query": INSTANCES_QUERY, "refId": "instance"})
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".+")
            .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
        )
    )
    return dash, Grid(dash)


def render(dash):
    doc = json.loads(JSONEncoder().encode(dash.build()))
    # What the SDK's Grafana 11.4 schema has no setter for: the Prometheus annotation's title,
    # text and step, and the variable's definition (the query the variables page shows).
    stall_alerts = next(a for a in doc["annotations"]["list"] if a["name"] == "Stall alerts")
    stall_alerts.update(titleFormat="{{alertname}}", textFormat="{{instance}} {{route}} {{variant}}", step="15s")
    doc["templating"]["list"][0]["definition"] = INSTANCES_QUERY
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# ---------------------------------------------------------------------------------------
# Executor health


def executor_health():
    dash, grid = dashboard(
        "stallscope-executor",
        "Executor health",
        "Is the Tokio runtime keeping up? Lag, stalls, worker and queue figures.",
    )
    grid.row("Is the executor keeping up?")
    grid.add(12, graph(
        "Executor lag p50 / p99",
        "How late the canary's 10 ms tick fires: the time a task that is ready to run waits "
        "for a runtime worker. Healthy is well under 1 ms. Over 10 ms (amber) requests are "
        "already queuing behind something; over 100 ms (red) a handler is holding a worker "
        "with blocking or CPU-heavy code, and every request on that worker waits as long. "
        "A late tick also counts the ticks it swallowed, so a 1 s stall weighs a hundred "
        "samples and moves p99 for a minute. p50 and p99 are over every tick of the "
        "instances picked in the Instance menu (their histograms summed), so one stalled "
        "instance among many healthy ones lifts p99 less than it lifts its own; 'max' is the "
        "largest lag any of them saw between two scrapes over the last minute, so even one "
        "short stall on one instance shows. Pick a single instance to see its own figures. "
        "If p99 jumps while p50 stays low, one worker is stuck and the others still run.",
        [
            (quantile(0.5, "stallscope:executor_lag_seconds_bucket:rate1m", "", INSTANCE), "p50"),
            (quantile(0.99, "stallscope:executor_lag_seconds_bucket:rate1m", "", INSTANCE), "p99"),
            (f"max(stallscope:executor_lag_max_seconds:max1m{{{INSTANCE}}})", "max"),
        ],
        "s",
        steps=LAG_STEPS,
    ))
    grid.add(8, graph(
        "Stalls per second by route",
        "Polls the stall watchdog caught holding a worker longer than the stall threshold "
        "(default 100 ms), by route and variant, summed over the instances picked in the "
        "Instance menu. Any non-zero line is a handler doing blocking work on the executor: "
        "the variant label names the culprit (sleep 'blocking', cpu 'inline', upstream "
        "'blocking'); the red line at 0.001 stalls/s is where that starts. route=\"task\" is "
        "a background task, not a request. Click a series for traces of that route slower "
        "than 100 ms.",
        [(f"sum by (route, variant) (stallscope:stalls:rate1m{{{INSTANCE}}})", "{{route}} {{variant}}")],
        "suffix: stalls/s",
        steps=[(None, "green"), (0.001, "red")],
        steps_style=cm.GraphThresholdsStyleMode.LINE,
    ).data_links([
        trace_link("Slow traces of ${__field.labels.route}", "${__field.labels.route:percentencode}", "100ms")
    ]))
    grid.add(8, graph(
        "Host delay: stalls while the worker waited for a CPU",
        "Stalls where the worker thread spent most of the stall runnable but not running "
        "(the machine was overloaded, or the container hit its CPU limit and was "
        "throttled), summed over the instances picked in the Instance menu. These are not "
        "counted against any route in 'Stalls per second by route': no handler caused "
        "them. Healthy is 0; a rise here with no code stalls means: give the service more "
        "CPU, or fewer neighbours.",
        [(f"sum(stallscope:host_stalls:rate1m{{{INSTANCE}}})", "host delay")],
        "suffix: stalls/s",
        steps=[(None, "green"), (0.001, "#EAB839")],
        steps_style=cm.GraphThresholdsStyleMode.LINE,
    ))
    grid.add(4, (
        stat.Panel().title("Stalls in progress")
        .description(
            "Stalls the watchdog has reported that are still holding a worker right now: the "
            "total over the instances picked in the Instance menu (0 until the first stall, not "
            "'No data'), then by route and variant for each route that has stalled. The lag "
            "canary cannot tick while every worker is blocked, so during a total stall this is "
            "the panel that still shows it. Red means a worker is blocked at this moment."
        )
        .datasource(PROMETHEUS)
        .with_target(prom(f"sum(stallscope_stalls_in_progress{{{INSTANCE}}}) or vector(0)", "all routes", "A"))
        .with_target(prom(f"sum by (route, variant) (stallscope_stalls_in_progress{{{INSTANCE}}})",
                          "{{route}} {{variant}}", "B"))
        .unit("short")
        .color_scheme(db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds([(None, "green"), (1, "red")]))
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .color_mode(cm.BigValueColorMode.BACKGROUND).graph_mode(cm.BigValueGraphMode.AREA)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME).orientation(cm.VizOrientation.AUTO)
        .justify_mode(cm.BigValueJustifyMode.AUTO)
    ))
    grid.add(12, graph(
        "Stall victims per second by culprit",
        "Requests that were in flight on an instance while another request's poll stalled "
        "one of its workers, by the culprit's route and variant, summed over the instances "
        "picked in the Instance menu. This is the collateral damage: a blocking handler "
        "delays every request that shares its runtime, and each line says whose fault it "
        "was. Zero when healthy; compare with 'Stalls per second by route': one stall with "
        "many victims is a busy service paying for one bad handler. The victims' spans "
        "carry the overlap and a link to the culprit's trace.",
        [(
            f"sum by (culprit_route, culprit_variant) (stallscope:stall_victims:rate1m{{{INSTANCE}}})",
            "{{culprit_route}} {{culprit_variant}}",
        )],
        "suffix: victims/s",
    ))
    grid.add(12, graph(
        "Worker busy ratio per worker",
        "Per worker, per instance: the share of wall time each runtime worker of each "
        "instance spends polling tasks (1 = never idle); the legend names both. Async "
        "handlers keep this low even under heavy traffic, because waiting costs no "
        "worker time. One worker pinned at 100% while the others idle is the signature of "
        "a blocking handler; all workers near 100% is CPU saturation (move CPU work to "
        "spawn_blocking or rayon).",
        [(f"sum by (instance, worker) (stallscope:worker_busy:ratio_rate1m{{{INSTANCE}}})", "worker {{worker}} {{instance}}")],
        "percentunit",
        steps=[(None, "green"), (0.8, "#EAB839"), (0.95, "red")],
    ).max(1))
    grid.add(24, (
        heatmap.Panel().title("Poll time heatmap")
        .description(
            "Every task poll on the service runtimes of the instances picked in the "
            "Instance menu, by duration (Tokio's poll-time histogram, power-of-two buckets; the "
            "instances' counts summed per bucket). A healthy async service is a band in the "
            "microseconds: a poll runs until the next .await and returns. Cells at 100 ms and above "
            "are polls that blocked a worker; the brighter the cell, the more polls. The top bucket "
            "also holds everything longer than --poll-histogram-max-ms."
        )
        .datasource(PROMETHEUS)
        .with_target(
            prom(f"sum by (le) (increase(stallscope_runtime_poll_duration_seconds_bucket{{{INSTANCE}}}[$__rate_interval]))", "{{le}}")
            .format(PromQueryFormat.HEATMAP)
        )
        .unit("short")
        .hide_from(cb.HideSeriesConfig().legend(False).tooltip(False).viz(False))
        .calculate(False).cell_gap(1)
        .color(
            heatmap.HeatmapColorOptions().mode(HeatmapColorMode.SCHEME).scheme("Oranges")
            .scale(HeatmapColorScale.EXPONENTIAL).exponent(0.5).fill("dark-orange").steps(64).reverse(False)
        )
        .filter_values(heatmap.FilterValueRange().le(1e-9))
        .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))
        .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT).unit("s").reverse(False))
        .cell_values(heatmap.CellValues().unit("short"))
        .mode(cm.TooltipDisplayMode.SINGLE).show_y_histogram().show_color_scale(True)
        .show_legend().exemplars_color("rgba(255,0,255,0.7)")
    ))

    grid.row("Queues and tasks")
    grid.add(12, graph(
        "Global and local queue depth",
        "Per instance: tasks that are ready to run and waiting for a worker, in each "
        "instance's global (injection) queue, where wake-ups from outside the runtime land, "
        "and in the local queue of each of its workers (the legend names the instance). "
        "Near zero when healthy. A local queue that grows while its worker's busy "
        "ratio is 100% holds tasks stuck behind a blocking poll (other workers steal some "
        "of them, which is why lag rises less with more workers).",
        [
            (f"sum by (instance) (stallscope_runtime_global_queue_depth{{{INSTANCE}}})", "global {{instance}}"),
            (
                f"sum by (instance, worker) (stallscope_runtime_worker_local_queue_depth{{{INSTANCE}}})",
                "local worker {{worker}} {{instance}}",
            ),
        ],
        "short",
    ))
    grid.add(12, graph(
        "Alive tasks",
        "Per instance: tasks spawned and not yet finished on each instance's runtime, one "
        "per open connection plus background tasks (canary, signal listener). It follows concurrency; a line that keeps climbing "
        "while traffic is flat means tasks pile up, for example requests waiting behind a "
        "stalled worker.",
        [(f"sum by (instance) (stallscope_runtime_alive_tasks{{{INSTANCE}}})", "{{instance}}")],
        "short",
    ))

    grid.row("Blocking pool")
    grid.add(12, graph(
        "Blocking pool: threads, idle, queue depth",
        "Per instance (each has its own pool and --max-blocking-threads cap): the pool that "
        "spawn_blocking and block_in_place hand work to: threads alive, threads idle, and "
        "jobs queued for a thread. Threads are created on demand up to the cap and linger "
        "when idle. Idle at 0 with a queue above 0 means "
        "the pool is at its cap (like FastAPI's 40-thread limiter for plain def routes): "
        "jobs wait, but the executor is unaffected.",
        [
            (f"sum by (instance) (stallscope_runtime_blocking_threads{{{INSTANCE}}})", "threads {{instance}}"),
            (f"sum by (instance) (stallscope_runtime_blocking_idle_threads{{{INSTANCE}}})", "idle {{instance}}"),
            (f"sum by (instance) (stallscope_runtime_blocking_queue_depth{{{INSTANCE}}})", "queued {{instance}}"),
        ],
        "short",
    ))
    grid.add(12, graph(
        "Blocking-pool queue wait p99 by call site",
        "How long spawn_blocking jobs waited between submission and start, per call site, "
        "over the jobs of every instance picked in the Instance menu (their histograms "
        "summed; BlockingPoolSaturated fires per instance). "
        "Thread start-up costs tens of microseconds; waits of 10 ms and more mean every "
        "thread is busy and jobs queue (the BlockingPoolSaturated alert fires above 100 ms). "
        "This slows only the requests using that call site, unlike an executor stall, "
        "which slows everyone.",
        [(quantile(0.99, "stallscope:blocking_queue_wait_seconds_bucket:rate1m", "call_site", INSTANCE), "{{call_site}}")],
        "s",
        steps=LAG_STEPS,
    ))
    return dash


# ---------------------------------------------------------------------------------------
# Handler variants


def handler_variants():
    dash, grid = dashboard(
        "stallscope-variants",
        "Handler variants",
        "Each lesson's variants side by side: the stalling one stands out.",
    )
    for row_title, route, lesson in LESSONS:
        # `invalid` collects requests for unknown variant names: not a variant to compare.
        sel = f'{INSTANCE}, route="{route}", variant!="invalid"'
        http_sel = f'{INSTANCE}, http_route="{route}", variant!="invalid"'
        grid.row(row_title)
        grid.add(8, graph(
            f"{lesson}: request rate by variant",
            "Requests per second that reached each variant's handler, summed over the "
            "instances picked in the Instance menu. Give the variants "
            "the same arrival rate (load/variants.js) and compare the other panels of "
            "this row: the work asked for is the same, the way it waits is not.",
            [(f"sum by (variant) (stallscope:task_requests:rate1m{{{sel}}})", "{{variant}}")],
            "reqps",
            variants=True,
        ))
        grid.add(8, graph(
            f"{lesson}: error rate (5xx share) by variant",
            "Share of each variant's responses that were 5xx, over all the picked "
            "instances' responses (5xx summed over responses summed). Stalls rarely produce "
            "errors at first: they produce latency. Errors appear once timeouts kick in "
            "(504 from the upstream lesson's time limit, 503 when the database is away).",
            [(ratio("stallscope:http_request_errors:rate1m", "stallscope:http_requests:rate1m", "variant", http_sel), "{{variant}}")],
            "percentunit",
            steps=ERROR_STEPS,
        ).data_links([trace_link("Traces of " + route, route, "1ms")]))
        grid.add(8, graph(
            f"{lesson}: latency p50 / p99 per variant",
            "p50 and p99 of each variant, side by side, over the requests of every picked "
            "instance (the HTTP histograms summed): the stalling variant's p99 stands out. "
            "Both start when the router gets the request: they include waiting for "
            "a worker after that (an async sleep that woke while a blocking handler held the "
            "worker), not the wait to be read at all, which only executor lag and the client "
            "see (k6 prints it per variant). A p99 far above every variant's mean is requests "
            "queuing behind a stalling variant. Click for the slowest traces of this route.",
            latency_by_variant(http_sel),
            "s",
            variants=True,
        ).data_links([trace_link("Slowest traces of " + route, route, "100ms")]))
        grid.add(8, graph(
            f"{lesson}: slow-poll ratio by variant",
            "Share of each variant's polls that ran longer than the slow-poll threshold "
            "(default 1 ms): slow polls over polls, each summed over the picked instances "
            "(HighSlowPollRatio judges each instance on its own). An async handler is polled briefly each time it wakes up; a "
            "blocking handler has one poll that lasts the whole request, so its ratio sits "
            "near 100% (red, and the HighSlowPollRatio alert above 50%). block-in-place is "
            "slow by design but hands its worker's queue to another thread first. When the "
            "CPU lesson saturates every core, the OS preempts workers mid-poll and even correct "
            "variants show some slow polls: look for the line pinned near 100%.",
            [(ratio("stallscope:task_slow_polls:rate1m", "stallscope:task_polls:rate1m", "variant", sel), "{{variant}}")],
            "percentunit",
            steps=[(None, "green"), (0.1, "#EAB839"), (0.5, "red")],
            variants=True,
        ).max(1))
        grid.add(8, graph(
            f"{lesson}: mean poll time by variant",
            "Average time one poll of each variant's handler held a worker (polling time over "
            "polls, each summed over the picked instances). Microseconds for "
            "async code; for a blocking variant it is the whole sleep, hash or upstream call. "
            "Above the slow-poll threshold (1 ms, amber) the variant is doing work between "
            ".awaits; above the stall threshold (100 ms, red) it stalls the executor.",
            [(ratio("stallscope:task_poll_duration_seconds:rate1m", "stallscope:task_polls:rate1m", "variant", sel), "{{variant}}")],
            "s",
            steps=[(None, "green"), (0.001, "#EAB839"), (0.1, "red")],
            variants=True,
        ))
        grid.add(8, graph(
            f"{lesson}: scheduled delay by variant",
            "Mean time each variant's request futures waited in a run queue after being woken "
            "(first poll included) before a worker picked them up: waiting time over waits, "
            "each summed over the picked instances. This is the damage a stall "
            "does to *other* requests: when a blocking variant runs, the correct variants' "
            "delay rises too. Same thresholds as executor lag: 10 ms amber, 100 ms red.",
            [(
                ratio("stallscope:task_run_queue_wait_seconds:rate1m", "stallscope:task_run_queue_waits:rate1m", "variant", sel),
                "{{variant}}",
            )],
            "s",
            steps=LAG_STEPS,
            variants=True,
        ))
    return dash


# ---------------------------------------------------------------------------------------
# Dependencies


def dependencies():
    route = "/upstream/{variant}"
    http_sel = f'{INSTANCE}, http_route="{route}", variant!="invalid"'
    dash, grid = dashboard(
        "stallscope-dependencies",
        "Dependencies",
        "Latency and pool figures of what the handlers call (the slow upstream and the database), and the trace export.",
    )
    grid.row("Upstream: the slow HTTP service behind /upstream/{variant}")
    grid.add(12, graph(
        "Upstream latency p50 / p99 by client variant",
        "Time to answer /upstream/* requests, per client variant, from the HTTP histogram's "
        "variant label, over the requests of every picked instance (histograms summed). They wait for the slow upstream (the `ms` parameter sets how long it "
        "takes). With the async client, p99 stays at the requested time however many calls "
        "are in flight. With the blocking client on a runtime worker, calls queue behind "
        "each other and p99 grows with concurrency. Click for the slowest traces: the "
        "upstream call's span shows where the time went.",
        latency_by_variant(http_sel),
        "s",
        variants=True,
    ).data_links([trace_link("Slowest upstream traces", route, "100ms")]))
    grid.add(12, graph(
        "Upstream mean latency by client variant",
        "Mean handler time per client: async (reqwest, awaits the response), blocking "
        "(a synchronous client on the runtime worker: stalls it), spawn-blocking (the same "
        "synchronous client on the blocking pool). Equal load, equal upstream delay: any "
        "gap between the lines is time spent waiting for a worker or a pool thread. The "
        "mean is over the requests of every picked instance (time summed over requests "
        "summed).",
        [(
            ratio("stallscope:task_latency_seconds:rate1m", "stallscope:task_finished:rate1m", "variant",
                  f'{INSTANCE}, route="{route}", variant!="invalid"'),
            "{{variant}}",
        )],
        "s",
        variants=True,
    ))
    grid.add(8, graph(
        "Upstream requests by status",
        "Responses per second from the upstream lesson, by status code, summed over the "
        "picked instances. 504 means the "
        "upstream call outlived --upstream-timeout-ms; 502 that the upstream could not be "
        "reached. A stalled executor can turn a healthy upstream into timeouts: the reply "
        "arrives, but no worker is free to read it.",
        [(
            f"sum by (http_response_status_code) (stallscope:http_requests:rate1m{{{http_sel}}})",
            "{{http_response_status_code}}",
        )],
        "reqps",
        stack=True,
    ))
    grid.add(8, graph(
        "Upstream error rate (5xx share) by client variant",
        "Share of each client variant's upstream-lesson responses that were 5xx (5xx over "
        "all responses, each summed over the picked instances). Over 1% "
        "amber, over 5% red. Compare with the latency panel: timeouts follow once p99 "
        "reaches the client's time limit.",
        [(ratio("stallscope:http_request_errors:rate1m", "stallscope:http_requests:rate1m", "variant", http_sel), "{{variant}}")],
        "percentunit",
        steps=ERROR_STEPS,
        variants=True,
    ).data_links([trace_link("Upstream traces", route, "1ms")]))
    grid.add(8, graph(
        "Upstream calls in flight",
        "Upstream-lesson requests being served right now (connections in use), and "
        "blocking-client calls handed to the blocking pool (queued or running), summed over "
        "the picked instances. In flight "
        "= rate x latency: if it climbs at a steady request rate, calls are getting slower.",
        [
            (f"sum(http_server_active_requests{{{http_sel}}})", "requests in flight"),
            (
                f'sum by (call_site) (stallscope_blocking_in_flight{{{INSTANCE}, call_site=~"upstream/.*"}})',
                "blocking pool: {{call_site}}",
            ),
        ],
        "short",
    ))
    grid.add(24, graph(
        "Blocking client: pool acquire wait p99",
        "How long the spawn-blocking upstream client waited for a blocking-pool thread "
        "before its call could start: the connection-pool 'acquire wait' of a synchronous "
        "client, over the calls of every picked instance (histograms summed). Near zero "
        "until an instance's pool is at --max-blocking-threads; then every extra call "
        "queues (10 ms amber, 100 ms red, as for the blocking pool).",
        [(
            quantile(0.99, "stallscope:blocking_queue_wait_seconds_bucket:rate1m", "call_site",
                     f'{INSTANCE}, call_site=~"upstream/.*"'),
            "{{call_site}}",
        )],
        "s",
        steps=LAG_STEPS,
    ))
    grid.row("Database: diesel-async and sync diesel pools (DATABASE_URL)")
    grid.add(12, graph(
        "Query latency p50 / p99 by operation",
        "How long each kind of query takes from sending it to having its result (pool "
        "checkout excluded), whichever variant issued it, per backend (sqlite, postgres, "
        "mysql: DATABASE_URL), over the queries of every picked instance (histograms "
        "summed). `sleep` is the lesson's database-side delay, so it sits at the "
        "requested ms; the CRUD operations of /users should stay in single milliseconds. "
        "The query time is the same for the async and the blocking variant: what differs is "
        "whether a runtime worker waited for it (compare the Handler variants dashboard's "
        "database rows). Click for the slowest database-lesson traces: their `db query` "
        "client spans show each query.",
        [
            (quantile(0.5, "stallscope:db_query_duration_seconds_bucket:rate1m", "backend, operation", INSTANCE),
             "p50 {{operation}} ({{backend}})"),
            (quantile(0.99, "stallscope:db_query_duration_seconds_bucket:rate1m", "backend, operation", INSTANCE),
             "p99 {{operation}} ({{backend}})"),
        ],
        "s",
    ).data_links([trace_link("Slowest traces of /db/{variant}/users/{id}", "/db/{variant}/users/{id}", "10ms")]))
    grid.add(12, graph(
        "Queries per second by operation",
        "Queries sent per second, by operation and backend, summed over the picked "
        "instances: the load the handlers put on the "
        "database. Read it with the latency panel: latency that rises with this rate is the "
        "database (or the pool) running out of room; latency that rises without it is "
        "something else, such as a stalled worker that cannot read the answer.",
        [(f"sum by (backend, operation) (stallscope:db_queries:rate1m{{{INSTANCE}}})", "{{operation}} ({{backend}})")],
        "reqps",
        stack=True,
    ))
    grid.add(8, graph(
        "Pool connections: in use / idle / max",
        "Connections of the async pool (diesel-async with deadpool: the async and raw "
        "variants and /users) and the sync pool (diesel with r2d2: the blocking and "
        "spawn-blocking variants), per instance and backend: each instance has its own "
        "pools, and the legend names it. Connections open lazily, so "
        "idle starts at 0. In use reaching max (the `max` line, "
        "--db-pool-size) means the next checkout waits: see the acquire wait next to it.",
        [
            (f"sum by (instance, backend, pool, state) (stallscope_db_pool_connections{{{INSTANCE}}})",
             "{{pool}} {{state}} ({{backend}} {{instance}})"),
            (f"sum by (instance, backend, pool) (stallscope_db_pool_max_connections{{{INSTANCE}}})",
             "{{pool}} max ({{backend}} {{instance}})"),
        ],
        "short",
    ))
    grid.add(8, graph(
        "Pool utilisation (in use / max)",
        "Per instance: the share of each instance's pools' connections checked out (in "
        "use over max; the legend names the instance). Below 80% (green) the pool has "
        "room; at 100% (red) every connection is busy and new queries queue for one. A sync "
        "pool stuck at 100% while the async one idles is the blocking variant holding "
        "connections, and workers, at once.",
        [(
            f'sum by (instance, backend, pool) (stallscope_db_pool_connections{{{INSTANCE}, state="in_use"}})'
            f" / sum by (instance, backend, pool) (stallscope_db_pool_max_connections{{{INSTANCE}}})",
            "{{pool}} ({{backend}} {{instance}})",
        )],
        "percentunit",
        steps=[(None, "green"), (0.8, "#EAB839"), (1, "red")],
    ).max(1))
    grid.add(8, graph(
        "Pool acquire wait p99",
        "How long a query waited to check a connection out of its instance's pool, "
        "connecting included, over the checkouts of every picked instance (histograms "
        "summed), per backend and pool (10 ms amber, 100 ms red). Near zero while the pool has idle connections "
        "(the first checkout of a connection pays the connect). It climbs when the pool is "
        "too small for the concurrency, or when the blocking variant holds connections "
        "while it also holds the only worker. Checkouts give up after "
        "--db-acquire-timeout-ms (503).",
        [(quantile(0.99, "stallscope:db_pool_acquire_wait_seconds_bucket:rate1m", "backend, pool", INSTANCE), "{{pool}} ({{backend}})")],
        "s",
        steps=LAG_STEPS,
    ))
    grid.row("Trace export: OTLP to the trace backend")
    grid.add(24, graph(
        "OTLP spans exported / dropped per second",
        "Spans sent to the trace backend (OTEL_EXPORTER_OTLP_ENDPOINT) per second, and spans "
        "lost, by reason, summed over the picked instances: export_failed (the collector is down or refused the batch), "
        "queue_full (spans end faster than the exporter sends them: raise "
        "OTEL_BSP_MAX_QUEUE_SIZE or sample), shut_down (ended after shutdown began). The "
        "exporter runs on its own thread and never slows a request: when export fails, the "
        "cost is missing traces, so the trace links on these dashboards find nothing. Dropped "
        "lines are orange; the OtelSpansDropped alert fires when an instance loses over 1% "
        "of its spans for 5 minutes. Every line is there from the start, at 0 until the "
        "first span or drop; 'exported' staying at 0 while requests flow and nothing is "
        "dropped means export is off (no endpoint set).",
        [
            (f"sum(stallscope:otel_spans_exported:rate1m{{{INSTANCE}}})", "exported"),
            (f"sum by (reason) (stallscope:otel_spans_dropped:rate1m{{{INSTANCE}}})", "dropped: {{reason}}"),
        ],
        "suffix: spans/s",
    ).override_by_regexp("dropped.*", [color("orange")]))
    return dash


DASHBOARDS = {
    "executor-health.json": executor_health,
    "handler-variants.json": handler_variants,
    "dependencies.json": dependencies,
}


def main(argv):
    check = "--check" in argv
    OUT.mkdir(exist_ok=True)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build())
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print(f"out of date (run {TOOLS / 'bin' / 'python'} grafana/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
