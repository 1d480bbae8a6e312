// CRUD mix against the database lessons' /users API.
//
//   BASE_URL=http://127.0.0.1:3000 k6 run --no-usage-report load/db.js
//
// Each iteration creates a user, reads it by id and by username, updates its email and
// deletes it: writes and reads in the proportions of a small CRUD service (1 create, 2 reads,
// 1 update, 1 delete). VUS users loop for DURATION (default 10s). Usernames are unique per
// run, VU and iteration, so runs never collide with each other or with leftovers.
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { BASE_URL, envInt, durationTable, thresholdLines } from './lib.js';

const VUS = envInt('VUS', 4);
const DURATION = __ENV.DURATION || '10s';
const JSON_HEADERS = { 'Content-Type': 'application/json' };

const OPS = ['create', 'read', 'search', 'update', 'delete'];

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: { crud: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    ...Object.fromEntries(OPS.map((op) => [`http_req_duration{op:${op}}`, ['p(95)<500']])),
  },
};

export function setup() {
  const res = http.get(`${BASE_URL}/users?username=__k6_probe__`, {
    tags: { op: 'probe' },
    responseCallback: http.expectedStatuses(200, 404),
  });
  if (res.status === 404 && String(res.headers['Content-Type']).includes('problem')) {
    // A route-level 404 (not an empty search result) means the lessons are not there.
    const body = res.json();
    if (body && String(body.detail || body.title || '').toLowerCase().includes('route')) {
      fail(`${BASE_URL} has no /users API: is this a build with the database lessons?`);
    }
  }
  return { run: `${Date.now().toString(36)}` };
}

export default function (data) {
  const id = `${data.run}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const username = `k6-${id}`;

  const created = http.post(
    `${BASE_URL}/users`,
    JSON.stringify({ username, email: `${username}@example.test`, password: `pw-${id}-secret` }),
    { headers: JSON_HEADERS, tags: { name: 'POST /users', op: 'create' } },
  );
  const ok = check(created, {
    'create is 201': (r) => r.status === 201,
    'create returns an id': (r) => r.json('id') !== undefined,
    'create never returns the password': (r) => !r.body.includes(`pw-${id}-secret`),
  });
  if (!ok) return;
  const userId = created.json('id');

  const read = http.get(`${BASE_URL}/users/${userId}`, { tags: { name: 'GET /users/{id}', op: 'read' } });
  check(read, {
    'read is 200': (r) => r.status === 200,
    'read returns the user': (r) => r.json('username') === username,
  });

  const search = http.get(`${BASE_URL}/users?username=${encodeURIComponent(username)}`, {
    tags: { name: 'GET /users?username=', op: 'search' },
  });
  check(search, {
    'search is 200': (r) => r.status === 200,
    'search finds the user': (r) => JSON.stringify(r.json()).includes(username),
  });

  const patched = http.patch(
    `${BASE_URL}/users/${userId}`,
    JSON.stringify({ email: `${username}@changed.example.test` }),
    { headers: JSON_HEADERS, tags: { name: 'PATCH /users/{id}', op: 'update' } },
  );
  check(patched, {
    'update is 200': (r) => r.status === 200,
    'update changed the email': (r) => r.json('email') === `${username}@changed.example.test`,
  });

  const deleted = http.del(`${BASE_URL}/users/${userId}`, null, {
    tags: { name: 'DELETE /users/{id}', op: 'delete' },
  });
  check(deleted, { 'delete is 204 or 200': (r) => r.status === 204 || r.status === 200 });
}

export function handleSummary(data) {
  const rows = OPS.map((op) => [op, `http_req_duration{op:${op}}`]);
  return {
    stdout: `\ndb: ${VUS} users, CRUD mix for ${DURATION} against ${BASE_URL}\n\n${durationTable(data, rows)}\n\n${thresholdLines(data)}\n`,
  };
}
