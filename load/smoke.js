// Smoke test: every endpoint and every lesson variant answers, quickly, with the right body.
//
//   BASE_URL=http://127.0.0.1:3000 k6 run --no-usage-report load/smoke.js
//
// One virtual user goes round all endpoints for DURATION (default 5s). Requests are small
// (SLEEP_MS, UPSTREAM_MS, DB_SLEEP_MS default 20; CPU_ITERATIONS default 100000), so even the blocking
// variants are quick: this checks that the service works, not how it behaves under load.
import http from 'k6/http';
import { check, sleep } from 'k6';
import { BASE_URL, LESSONS, envInt, servedBy, thresholdLines } from './lib.js';

// Each lesson's smoke-sized request, unless SLEEP_MS, CPU_ITERATIONS, UPSTREAM_MS or
// DB_SLEEP_MS say otherwise. Passed to query() rather than written into __ENV: k6 does not
// hand __ENV assignments on to the VUs, whose requests would then use the lessons' 100 ms
// defaults (and stall the executor on every blocking variant).
const SMOKE_SIZE = { sleep: 20, cpu: 100000, upstream: 20, db: 20 };

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: {
    smoke: { executor: 'constant-vus', vus: 1, duration: __ENV.DURATION || '5s' },
  },
  thresholds: {
    checks: ['rate==1'],
    http_req_failed: ['rate==0'],
    'http_req_duration{kind:service}': ['p(95)<200'],
    'http_req_duration{kind:lesson}': ['p(95)<1000'],
    iterations: ['count>=1'],
  },
};

// version 00, 32 hex trace id, 16 hex span id, flags.
const TRACEPARENT = /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/;

// Probes and /metrics on a new connection are answered by the front door's own thread (so they
// answer during any stall), outside the route layer: no request ids there (`false`).
const SERVICE = [
  ['/healthz', (r) => r.json('status') === 'ok', false],
  ['/readyz', (r) => r.json('status') === 'ready', false],
  ['/hello', (r) => r.body.includes('Hello'), true],
  ['/metrics', (r) => r.body.includes('stallscope_executor_lag_seconds'), false],
  ['/openapi.json', (r) => r.json('paths') !== undefined, true],
];

export default function () {
  for (const [path, bodyOk, ids] of SERVICE) {
    const res = http.get(`${BASE_URL}${path}`, { tags: { name: path, kind: 'service' } });
    check(res, {
      [`${path} is 200`]: (r) => r.status === 200,
      [`${path} body`]: bodyOk,
      [`${path} has x-request-id`]: (r) => !ids || !!r.headers['X-Request-Id'],
      [`${path} has a W3C traceparent`]: (r) => !ids || TRACEPARENT.test(r.headers['Traceparent'] || ''),
    });
  }
  for (const [lesson, l] of Object.entries(LESSONS)) {
    for (const variant of l.variants) {
      const res = http.get(
        `${BASE_URL}${l.route.replace('{variant}', variant)}?${l.query(SMOKE_SIZE[lesson])}`,
        { tags: { name: l.route, kind: 'lesson', lesson, variant } },
      );
      check(res, {
        [`${lesson}/${variant} is 200`]: (r) => r.status === 200,
        [`${lesson}/${variant} served by ${variant}`]: (r) => servedBy(r, variant),
        // The server span's ids: what to paste into Jaeger's trace search.
        [`${lesson}/${variant} has a W3C traceparent`]: (r) => TRACEPARENT.test(r.headers['Traceparent'] || ''),
      });
    }
  }
  // Unknown variants are a 404 problem document, not a 500.
  const bad = http.get(`${BASE_URL}/sleep/nope?ms=1`, {
    tags: { name: '/sleep/{variant}', kind: 'service' },
    responseCallback: http.expectedStatuses(404),
  });
  check(bad, {
    'unknown variant is 404': (r) => r.status === 404,
    'unknown variant is problem+json': (r) =>
      (r.headers['Content-Type'] || '').startsWith('application/problem+json'),
  });
  sleep(envInt('PAUSE_S', 0.2));
}

export function handleSummary(data) {
  const it = data.metrics.iterations ? data.metrics.iterations.values.count : 0;
  return {
    stdout: `\nsmoke: ${it} rounds of every endpoint against ${BASE_URL}\n${thresholdLines(data)}\n`,
  };
}
