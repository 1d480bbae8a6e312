// Collateral damage: does a burst to one endpoint slow down a *different*, healthy one?
//
//   BASE_URL=http://127.0.0.1:3000 k6 run --no-usage-report load/collateral.js
//
// Steady healthy traffic to /sleep/async (HEALTHY_RATE req/s, HEALTHY_MS each) runs in three
// windows, each its own scenario so its latency is a separate tagged sub-metric (after a
// one-second warm-up that opens the connections and is not measured):
//
//   healthy_baseline               alone
//   healthy_during_blocking        while BURST_VUS users hammer /sleep/blocking
//   healthy_during_spawn_blocking  while the same users hammer /sleep/spawn-blocking
//
// /sleep/blocking runs std::thread::sleep on a runtime worker: once the burst has a request on
// every worker, the healthy requests queue behind it and their p99 grows to about BURST_MS.
// /sleep/spawn-blocking sleeps on the blocking pool: the workers stay free, and the healthy
// p99 stays at baseline even if the pool itself is saturated. The thresholds are that
// comparison: p99 above DEGRADED_MS during the blocking burst, below HEALTHY_P99_MS in the
// other two windows. BURST_VUS must be at least the service's --workers (default 8).
import http from 'k6/http';
import { check } from 'k6';
import { BASE_URL, envInt, durationTable, thresholdLines } from './lib.js';

const HEALTHY_RATE = envInt('HEALTHY_RATE', 20);
const HEALTHY_MS = envInt('HEALTHY_MS', 10);
const BURST_VUS = envInt('BURST_VUS', 8);
const BURST_MS = envInt('BURST_MS', 200);
// Healthy: the requested sleep plus scheduling noise. Degraded: at least one burst request's
// worth of waiting, which is what queuing behind a blocked worker costs.
const HEALTHY_P99_MS = envInt('HEALTHY_P99_MS', HEALTHY_MS + 140);
const DEGRADED_MS = envInt('DEGRADED_MS', BURST_MS);

// Timeline (seconds): warm-up 0-1, baseline 1-4; blocking burst 4.5-8.5 with healthy probes
// 5-8; spawn-blocking burst 10.5-14.5 with healthy probes 11-14. The gaps let queues drain.
function healthy(startTime, duration = '3s') {
  return {
    executor: 'constant-arrival-rate',
    rate: HEALTHY_RATE,
    timeUnit: '1s',
    duration,
    startTime,
    preAllocatedVUs: 10,
    maxVUs: 100,
    exec: 'healthyRequest',
  };
}
function burst(startTime, variant) {
  return {
    executor: 'constant-vus',
    vus: BURST_VUS,
    duration: '4s',
    startTime,
    gracefulStop: '10s',
    exec: 'burstRequest',
    env: { BURST_VARIANT: variant },
  };
}

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: {
    warmup: healthy('0s', '1s'),
    healthy_baseline: healthy('1s'),
    burst_blocking: burst('4500ms', 'blocking'),
    healthy_during_blocking: healthy('5s'),
    burst_spawn_blocking: burst('10500ms', 'spawn-blocking'),
    healthy_during_spawn_blocking: healthy('11s'),
  },
  thresholds: {
    'http_req_duration{scenario:healthy_baseline}': [`p(99)<${HEALTHY_P99_MS}`],
    // The lesson: a blocking burst elsewhere degrades the healthy endpoint...
    'http_req_duration{scenario:healthy_during_blocking}': [`p(99)>${DEGRADED_MS}`],
    // ...and the same burst on the blocking pool does not.
    'http_req_duration{scenario:healthy_during_spawn_blocking}': [`p(99)<${HEALTHY_P99_MS}`],
    'http_req_duration{scenario:burst_blocking}': ['max>0'],
    'http_req_duration{scenario:burst_spawn_blocking}': ['max>0'],
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
  },
};

export function healthyRequest() {
  const res = http.get(`${BASE_URL}/sleep/async?ms=${HEALTHY_MS}`, {
    tags: { name: '/sleep/{variant}', variant: 'async' },
  });
  check(res, { 'healthy request ok': (r) => r.status === 200 });
}

export function burstRequest() {
  const variant = __ENV.BURST_VARIANT;
  const res = http.get(`${BASE_URL}/sleep/${variant}?ms=${BURST_MS}`, {
    tags: { name: '/sleep/{variant}', variant },
  });
  check(res, { 'burst request ok': (r) => r.status === 200 });
}

function p99(data, scenario) {
  const m = data.metrics[`http_req_duration{scenario:${scenario}}`];
  return m ? m.values['p(99)'] : undefined;
}

export function handleSummary(data) {
  const base = p99(data, 'healthy_baseline');
  const blocking = p99(data, 'healthy_during_blocking');
  const pool = p99(data, 'healthy_during_spawn_blocking');
  const ratio = (v) => (base && v !== undefined ? `${(v / base).toFixed(1)}x baseline` : '?');
  const rows = [
    ['/sleep/async alone', 'http_req_duration{scenario:healthy_baseline}'],
    ['/sleep/async during /sleep/blocking burst', 'http_req_duration{scenario:healthy_during_blocking}'],
    ['/sleep/async during /sleep/spawn-blocking', 'http_req_duration{scenario:healthy_during_spawn_blocking}'],
    ['  the /sleep/blocking burst itself', 'http_req_duration{scenario:burst_blocking}'],
    ['  the /sleep/spawn-blocking burst itself', 'http_req_duration{scenario:burst_spawn_blocking}'],
  ];
  const verdict =
    blocking > DEGRADED_MS && pool < HEALTHY_P99_MS
      ? 'the blocking burst stalled the healthy endpoint; the spawn-blocking burst did not'
      : 'the expected contrast did not show (see the thresholds below)';
  return {
    stdout:
      `\ncollateral: ${HEALTHY_RATE} req/s to /sleep/async?ms=${HEALTHY_MS}; bursts of ${BURST_VUS} users` +
      ` x ${BURST_MS} ms against ${BASE_URL}\n\n${durationTable(data, rows)}\n\n` +
      `healthy p99 during the blocking burst: ${ratio(blocking)}; during the spawn-blocking burst: ${ratio(pool)}\n` +
      `=> ${verdict}\n\n${thresholdLines(data)}\n`,
  };
}
