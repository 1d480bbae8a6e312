// Shared by the k6 scripts in this folder.
import http from 'k6/http';

// Where stallscope listens: `BASE_URL=http://127.0.0.1:3000 k6 run load/smoke.js`.
export const BASE_URL = (__ENV.BASE_URL || 'http://127.0.0.1:3000').replace(/\/+$/, '');

// An integer from the environment, or the default.
export function envInt(name, fallback) {
  const raw = __ENV[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`${name} must be a number, got ${raw}`);
  return n;
}

// The lessons: route template, variants (src/routes/*.rs), and the query that sizes a request:
// `query(fallback)` reads the lesson's variable from the environment, or uses `fallback` (a
// script's own default), or the lesson's. A script cannot change the defaults by assigning to
// __ENV: k6 does not hand such assignments on to the VUs, which would still read the
// lesson's default here.
export const LESSONS = {
  sleep: {
    route: '/sleep/{variant}',
    variants: ['async', 'blocking', 'spawn-blocking', 'block-in-place'],
    query: (fallback = 100) => `ms=${envInt('SLEEP_MS', fallback)}`,
  },
  cpu: {
    route: '/cpu/{variant}',
    variants: ['inline', 'spawn-blocking', 'rayon'],
    // ~20 M SHA-256 rounds/s in a release build: 1.5 M is ~75 ms of one core.
    query: (fallback = 1500000) => `iterations=${envInt('CPU_ITERATIONS', fallback)}`,
  },
  upstream: {
    route: '/upstream/{variant}',
    variants: ['async', 'blocking', 'spawn-blocking'],
    query: (fallback = 100) => `ms=${envInt('UPSTREAM_MS', fallback)}`,
  },
  // The database waits (pg_sleep, SLEEP(), SQLite's stallscope_sleep).
  db: {
    route: '/db/{variant}/sleep',
    variants: ['async', 'raw', 'blocking', 'spawn-blocking'],
    query: (fallback = 100) => `ms=${envInt('DB_SLEEP_MS', fallback)}`,
  },
};

// One request to a lesson variant, tagged so that thresholds and the summary can pick it out
// without a metric series per URL.
export function lessonRequest(lesson, variant, extraTags = {}) {
  const l = LESSONS[lesson];
  const path = l.route.replace('{variant}', variant);
  return http.get(`${BASE_URL}${path}?${l.query()}`, {
    tags: { name: l.route, lesson, variant, ...extraTags },
  });
}

// The lesson body names the variant that served it: a wrong route would not.
export function servedBy(res, variant) {
  try {
    return res.json('variant') === variant;
  } catch (_) {
    return false;
  }
}

// Summary lines: "name  p50  p99  count" for the given sub-metrics of http_req_duration.
export function durationTable(data, rows) {
  const fmt = (v) => (v === undefined ? '     -' : `${v.toFixed(1).padStart(8)} ms`);
  const lines = [`${'requests'.padEnd(44)}${'p50'.padStart(11)}${'p99'.padStart(11)}${'max'.padStart(11)}`];
  for (const [label, key] of rows) {
    const m = data.metrics[key];
    const v = m ? m.values : {};
    lines.push(`${label.padEnd(44)}${fmt(v['med'])}${fmt(v['p(99)'])}${fmt(v['max'])}`);
  }
  return lines.join('\n');
}

// Every threshold and whether it held, for the end-of-test summary.
export function thresholdLines(data) {
  const lines = [];
  for (const [name, metric] of Object.entries(data.metrics)) {
    for (const [expr, result] of Object.entries(metric.thresholds || {})) {
      lines.push(`${result.ok ? '  ok  ' : '  FAIL'} ${name}: ${expr}`);
    }
  }
  return lines.sort().join('\n');
}
