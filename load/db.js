// CRUD mix against the database lessons: the /users API, /login, and the db lesson's user
// lookup through each of its variants.
//
//   BASE_URL=http://127.0.0.1:3000 k6 run --no-usage-report load/db.js
//
// Each iteration creates a user, reads it by id, by username and in a page of the list,
// reads it again through every variant of GET /db/{variant}/users/{id} (async, raw, blocking,
// spawn-blocking), changes its email, logs in with the right and with a wrong password,
// deletes it and checks it is gone: the proportions of a small CRUD service, plus the
// lesson's four ways to run the same query side by side. VUS users loop for DURATION
// (default 10s). Usernames are unique per run, VU and iteration, so runs never collide with
// each other or with leftovers of earlier runs in the same database.
//
// Thresholds: no unexpected status (a wrong password's 401 and a deleted user's 404 are
// expected), every check passes, and each operation's p95 stays under MAX_P95_MS (default
// 500). Password hashing (argon2id, on the blocking pool) makes create and login the slowest.
import http from 'k6/http';
import { check, fail } from 'k6';
import exec from 'k6/execution';
import { BASE_URL, envInt, durationTable, thresholdLines } from './lib.js';

const VUS = envInt('VUS', 4);
const DURATION = __ENV.DURATION || '10s';
const MAX_P95_MS = envInt('MAX_P95_MS', 500);
const JSON_HEADERS = { 'Content-Type': 'application/json' };
const DB_VARIANTS = ['async', 'raw', 'blocking', 'spawn-blocking'];

const OPS = ['create', 'read', 'search', 'list', 'update', 'login', 'login-wrong', 'delete', 'read-deleted'];

export const options = {
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
  scenarios: { crud: { executor: 'constant-vus', vus: VUS, duration: DURATION } },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    checks: ['rate>0.99'],
    ...Object.fromEntries(OPS.map((op) => [`http_req_duration{op:${op}}`, [`p(95)<${MAX_P95_MS}`]])),
    ...Object.fromEntries(
      DB_VARIANTS.map((v) => [`http_req_duration{op:db-read,variant:${v}}`, [`p(95)<${MAX_P95_MS}`]]),
    ),
  },
};

function tagged(name, op, extra = {}) {
  return { tags: { name, op, ...extra } };
}

export function setup() {
  const res = http.get(`${BASE_URL}/users?username=k6-probe`, { tags: { op: 'probe' } });
  if (res.status !== 200) {
    fail(`${BASE_URL}/users answered ${res.status}: is this a build with the database lessons, and is DATABASE_URL reachable?`);
  }
  // A run id: base-36 milliseconds, so two runs against the same database never share names.
  return { run: Date.now().toString(36) };
}

export default function (data) {
  const id = `${data.run}-${exec.vu.idInTest}-${exec.vu.iterationInScenario}`;
  const username = `k6-${id}`;
  const password = `pw-${id}-secret`;

  const created = http.post(
    `${BASE_URL}/users`,
    JSON.stringify({ username, email: `${username}@example.test`, password }),
    { headers: JSON_HEADERS, ...tagged('POST /users', 'create') },
  );
  const ok = check(created, {
    'create is 201': (r) => r.status === 201,
    'create returns an id': (r) => r.status === 201 && r.json('id') !== undefined,
    'create never returns the password': (r) => !r.body.includes(password),
  });
  if (!ok) return;
  const userId = created.json('id');

  check(http.get(`${BASE_URL}/users/${userId}`, tagged('GET /users/{id}', 'read')), {
    'read is 200': (r) => r.status === 200,
    'read returns the user': (r) => r.json('username') === username,
  });

  check(http.get(`${BASE_URL}/users?username=${encodeURIComponent(username)}`, tagged('GET /users?username=', 'search')), {
    'search is 200': (r) => r.status === 200,
    'search finds the user': (r) => (r.json('users') || []).some((u) => u.username === username),
  });

  check(http.get(`${BASE_URL}/users?limit=5&cursor=${Math.max(0, userId - 1)}`, tagged('GET /users?limit=&cursor=', 'list')), {
    'list is 200': (r) => r.status === 200,
    'list starts at the cursor': (r) => {
      const users = r.json('users') || [];
      return users.length > 0 && users[0].id === userId;
    },
  });

  for (const variant of DB_VARIANTS) {
    const res = http.get(`${BASE_URL}/db/${variant}/users/${userId}`,
      tagged('/db/{variant}/users/{id}', 'db-read', { variant }));
    check(res, {
      'db lesson read is 200': (r) => r.status === 200,
      'db lesson read is the user, served by the variant asked for': (r) =>
        r.json('variant') === variant && r.json('output.user.username') === username,
    });
  }

  const email = `${username}@changed.example.test`;
  check(http.patch(`${BASE_URL}/users/${userId}`, JSON.stringify({ email }),
    { headers: JSON_HEADERS, ...tagged('PATCH /users/{id}', 'update') }), {
    'update is 200': (r) => r.status === 200,
    'update changed the email': (r) => r.json('email') === email,
  });

  check(http.post(`${BASE_URL}/login`, JSON.stringify({ username, password }),
    { headers: JSON_HEADERS, ...tagged('POST /login', 'login') }), {
    'login is 200': (r) => r.status === 200,
    'login names the user': (r) => r.json('user.username') === username,
  });

  check(http.post(`${BASE_URL}/login`, JSON.stringify({ username, password: `${password}-wrong` }), {
    headers: JSON_HEADERS,
    responseCallback: http.expectedStatuses(401),
    ...tagged('POST /login', 'login-wrong'),
  }), { 'a wrong password is 401': (r) => r.status === 401 });

  check(http.del(`${BASE_URL}/users/${userId}`, null, tagged('DELETE /users/{id}', 'delete')), {
    'delete is 204': (r) => r.status === 204,
  });

  check(http.get(`${BASE_URL}/users/${userId}`, {
    responseCallback: http.expectedStatuses(404),
    ...tagged('GET /users/{id}', 'read-deleted'),
  }), { 'a deleted user is 404': (r) => r.status === 404 });
}

export function handleSummary(data) {
  const rows = OPS.map((op) => [op, `http_req_duration{op:${op}}`]).concat(
    DB_VARIANTS.map((v) => [`/db/${v}/users/{id}`, `http_req_duration{op:db-read,variant:${v}}`]),
  );
  return {
    stdout: `\ndb: ${VUS} users, CRUD mix for ${DURATION} against ${BASE_URL}\n\n${durationTable(data, rows)}\n\n${thresholdLines(data)}\n`,
  };
}
