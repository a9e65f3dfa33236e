// Integration: every statement ends within query_timeout (plus a small
// margin) whatever SQL functions it calls, and values follow
// max_result_bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startDosqld, within } from './lib/harness.mjs';
import { post } from './lib/rpc.mjs';

let d;
before(async () => {
  d = await startDosqld({
    conf: `[engine]
workers = 2
query_timeout = 2s
max_result_bytes = 32M
`,
  });
});
after(async () => { await d?.cleanup(); });

// Run `sql` on `db`; resolves to { status, json, ms }.
async function timed(db, sql) {
  const t0 = Date.now();
  const r = await within(60000, post(d.port, `/v1/db/${db}/query`, { sql }), sql.slice(0, 60));
  return { ...r, ms: Date.now() - t0 };
}

// It failed, and fast: TIMEOUT, or RESOURCE_EXHAUSTED before making a value too big.
function boundedFailure(r, sql) {
  assert.ok(['TIMEOUT', 'RESOURCE_EXHAUSTED'].includes(r.json?.error?.code), `${sql}: ${r.text}`);
  assert.ok(r.ms < 4000, `${sql} took ${r.ms} ms (query_timeout 2 s)`);
}

const HUGE_PRINTF = "select length(printf('%.*c', 2000000000, 'x'))";

test('a huge printf padding fails at once, alone or six in one SELECT', async () => {
  let r = await timed('pf', HUGE_PRINTF);
  boundedFailure(r, HUGE_PRINTF);
  assert.equal(r.json.error.code, 'RESOURCE_EXHAUSTED');
  assert.match(r.json.error.message, /too big/);
  const six = `select ${Array.from({ length: 6 }, (_, i) => `length(printf('%.*c', 2000000000, '${i}'))`).join(', ')}`;
  r = await timed('pf', six);
  boundedFailure(r, six);
  for (const sql of ["select length(format('%2000000000d', 1))", "select length(printf('%.*f', 2000000000, 1.0))"]) {
    r = await timed('pf', sql);
    boundedFailure(r, sql);
  }
  // printf itself still works.
  r = await timed('pf', "select printf('%5.2f|%-4s|%03d|%q', 3.14159, 'ab', 7, 'it''s') as v");
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.rows, [[' 3.14|ab  |007|it\'\'s']]);
});

test('quadratic replace, instr and trim stop at query_timeout', async () => {
  for (const sql of [
    "select instr(printf('%.*c', 20000000, 'a'), printf('%.*c', 10000000, 'a') || 'b')",
    "select length(replace(printf('%.*c', 20000000, 'a'), printf('%.*c', 10000000, 'a') || 'b', 'x'))",
    "select length(trim(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'b') || 'a'))",
  ]) {
    const r = await timed('quad', sql);
    boundedFailure(r, sql);
    assert.equal(r.json.error.code, 'TIMEOUT', sql);
  }
  const r = await timed('quad', 'select 1 as one');
  assert.equal(r.status, 200, r.text);
});

test('no value is larger than max_result_bytes', async () => {
  const r = await timed('big', 'select length(zeroblob(33554433))');
  assert.equal(r.json?.error?.code, 'RESOURCE_EXHAUSTED', r.text);
  const ok = await timed('big', 'select length(zeroblob(1000000)) as n');
  assert.deepEqual(ok.json.rows, [[1000000]]);
});

test('several long statements at once do not stall another database past the timeout', async () => {
  const slow = [
    HUGE_PRINTF, HUGE_PRINTF,
    "select instr(printf('%.*c', 20000000, 'a'), printf('%.*c', 10000000, 'a') || 'b')",
    "select length(trim(printf('%.*c', 2000000, 'a'), printf('%.*c', 1000000, 'b') || 'a'))",
  ].map((sql, i) => timed(`par${i}`, sql).then((r) => ({ r, sql })));
  await new Promise((res) => setTimeout(res, 200));
  const one = await timed('other', 'select 1 as one');
  assert.equal(one.status, 200, one.text);
  assert.ok(one.ms < 4000, `select 1 on another database took ${one.ms} ms`);
  for (const { r, sql } of await Promise.all(slow)) boundedFailure(r, sql);
});

test('a client that goes away stops its quadratic instr too', async () => {
  const d2 = await startDosqld({ conf: '[engine]\nquery_timeout = 60s\n' });
  try {
    const req = http.request({ host: '127.0.0.1', port: d2.port, method: 'POST', path: '/v1/db/gone/query',
      headers: { 'content-type': 'application/json' } });
    req.on('error', () => {}); // it is destroyed below
    req.end(JSON.stringify({ sql: "select instr(printf('%.*c', 20000000, 'a'), printf('%.*c', 10000000, 'a') || 'b')" }));
    await new Promise((res) => setTimeout(res, 500));
    const t0 = Date.now();
    req.destroy();
    // Its database answers again at once, not after the 60 s timeout.
    const r = await within(5000, post(d2.port, '/v1/db/gone/query', { sql: 'select 1 as one' }), 'the database after the cancel');
    assert.equal(r.status, 200, r.text);
    console.log(`the database answered again ${Date.now() - t0} ms after the client went away`);
  } finally {
    await d2.cleanup();
  }
});
