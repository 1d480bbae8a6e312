// Every variant of every lesson at the same arrival rate, side by side.
//
//   BASE_URL=http://127.0.0.1:3000 k6 run --no-usage-report load/variants.js
//
// One constant-arrival-rate scenario per variant: RATE requests/s each (default 2) for
// DURATION (default 10s), every request asking for the same work (SLEEP_MS, UPSTREAM_MS,
// CPU_ITERATIONS). Arrival-rate scenarios keep sending on schedule however slow the service
// gets, as real clients do, so a stalling variant cannot hide by slowing its own load down.
// Watch the "Handler variants" dashboard while it runs; the summary prints each variant's
// latency so the same comparison shows in the terminal.
//
// Thresholds: every request succeeds, and no variant's median exceeds MAX_MEDIAN_MS
// (default 2000): the lessons are slow by design, so this is a sanity bound, not a target.
import { check } from 'k6';
import { BASE_URL, LESSONS, envInt, lessonRequest, servedBy, durationTable, thresholdLines } from './lib.js';

const RATE = envInt('RATE', 2);
const DURATION = __ENV.DURATION || '10s';
const MAX_MEDIAN_MS = envInt('MAX_MEDIAN_MS', 2000);

const scenarios = {};
const thresholds = {
  checks: ['rate>0.99'],
  http_req_failed: ['rate<0.01'],
};
const rows = [];
for (const [lesson, l] of Object.entries(LESSONS)) {
  for (const variant of l.variants) {
    const name = `${lesson}_${variant.replace(/-/g, '_')}`;
    scenarios[name] = {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(2, RATE * 2),
      maxVUs: Math.max(10, RATE * 20),
      exec: 'hit',
      env: { LESSON: lesson, VARIANT: variant },
      tags: { lesson, variant },
    };
    const key = `http_req_duration{lesson:${lesson},variant:${variant}}`;
    thresholds[key] = [`med<${MAX_MEDIAN_MS}`];
    thresholds[`http_req_failed{lesson:${lesson},variant:${variant}}`] = ['rate<0.01'];
    rows.push([`${l.route.replace('{variant}', variant)}`, key]);
  }
}

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios,
  thresholds,
};

export function hit() {
  const res = lessonRequest(__ENV.LESSON, __ENV.VARIANT);
  check(res, {
    'status 200': (r) => r.status === 200,
    'served by the variant asked for': (r) => servedBy(r, __ENV.VARIANT),
  });
}

export function handleSummary(data) {
  const dropped = data.metrics.dropped_iterations ? data.metrics.dropped_iterations.values.count : 0;
  return {
    stdout:
      `\nvariants: ${RATE} req/s per variant for ${DURATION} against ${BASE_URL}` +
      ` (${dropped} requests not sent: no VU free)\n\n` +
      `${durationTable(data, rows)}\n\n${thresholdLines(data)}\n`,
  };
}
