// Integration: the Iceberg REST catalog at /v1/iceberg (server/iceberg.c,
// docs/lakehouse.md "The catalog"), with plain fetch against a real dosqld
// whose embedded object store holds a lake written by tests/integration/lib/lake.mjs:
// config, namespaces (properties, paging, parent), tables, a table's newest
// metadata, HEAD, the ErrorModel of every refusal, the write operations
// refused, and tokens scoped to one database.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { sleep, startDosqld, within } from './lib/harness.mjs';
import { objectsDir, objectUri, putObject, putTableVersion, writeLake } from './lib/lake.mjs';

let d, lake, base;
before(async () => {
  d = await startDosqld();
  lake = writeLake(d.dataDir);
  base = `${d.url}/v1/iceberg/v1`;
});
after(async () => { await d?.cleanup(); });

async function call(p, { method = 'GET', token, body, url = base } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await within(10000, fetch(`${url}${p}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  }), `${method} ${p}`);
  const text = await r.text();
  const json = text && (r.headers.get('content-type') ?? '').includes('application/json') ? JSON.parse(text) : undefined;
  return { status: r.status, headers: r.headers, text, json };
}

// The spec's ErrorModel, with the type and code given.
function assertError(r, status, type) {
  assert.equal(r.status, status, r.text);
  assert.match(r.headers.get('content-type'), /^application\/json/);
  assert.equal(r.json.error.type, type, r.text);
  assert.equal(r.json.error.code, status);
  assert.equal(typeof r.json.error.message, 'string');
  assert.ok(r.json.error.message.length > 0);
}

test('config: defaults, overrides, and the endpoints served', async () => {
  const r = await call('/config');
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.defaults, {});
  assert.deepEqual(r.json.overrides, {});
  assert.deepEqual([...r.json.endpoints].sort(), [
    'GET /v1/{prefix}/namespaces',
    'GET /v1/{prefix}/namespaces/{namespace}',
    'GET /v1/{prefix}/namespaces/{namespace}/tables',
    'GET /v1/{prefix}/namespaces/{namespace}/tables/{table}',
    'HEAD /v1/{prefix}/namespaces/{namespace}',
    'HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}',
  ]);
  assert.equal((await call('/config?warehouse=anything')).status, 200, 'a warehouse asked for is not refused');
});

test('list namespaces: those with a namespace.json, sorted, all at once without pageToken', async () => {
  const r = await call('/namespaces');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.namespaces, [['app'], ['logs']], 'orphan has tables but no namespace.json');
  assert.equal(r.json['next-page-token'], null);
  assert.equal((await call('/namespaces?pageSize=1')).json.namespaces.length, 2, 'pageSize alone: everything');
});

test('list namespaces: pages with pageToken and pageSize', async () => {
  const p1 = await call('/namespaces?pageToken=&pageSize=1');
  assert.equal(p1.status, 200, p1.text);
  assert.deepEqual(p1.json.namespaces, [['app']]);
  assert.equal(typeof p1.json['next-page-token'], 'string');
  const p2 = await call(`/namespaces?pageToken=${encodeURIComponent(p1.json['next-page-token'])}&pageSize=1`);
  assert.deepEqual(p2.json.namespaces, [['logs']]);
  assert.equal(p2.json['next-page-token'], null);
  const whole = await call('/namespaces?pageToken=');
  assert.deepEqual(whole.json.namespaces, [['app'], ['logs']]);
  assert.equal(whole.json['next-page-token'], null);
  for (const bad of ['0', '-1', 'x', '1.5', '']) {
    assertError(await call(`/namespaces?pageToken=&pageSize=${bad}`), 400, 'BadRequestException');
  }
});

test('list namespaces under a parent: none (one level), 404 for a parent that is not there', async () => {
  const r = await call('/namespaces?parent=app');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.namespaces, []);
  assertError(await call('/namespaces?parent=nope'), 404, 'NoSuchNamespaceException');
  assert.deepEqual((await call('/namespaces?parent=')).json.namespaces, [['app'], ['logs']], '"" is no parent');
});

test('get namespace: its properties; {} when it has none', async () => {
  const r = await call('/namespaces/app');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { namespace: ['app'], properties: { owner: 'data-team', 'dosqld.database': 'app' } });
  const logs = await call('/namespaces/logs');
  assert.deepEqual(logs.json, { namespace: ['logs'], properties: {} });
});

test('404 NoSuchNamespaceException in the ErrorModel', async () => {
  assertError(await call('/namespaces/nope'), 404, 'NoSuchNamespaceException');
  assertError(await call('/namespaces/orphan'), 404, 'NoSuchNamespaceException');
  assertError(await call('/namespaces/nope/tables'), 404, 'NoSuchNamespaceException');
});

test('list tables: every directory with a vN.metadata.json, sorted, as identifiers', async () => {
  const r = await call('/namespaces/app/tables');
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json.identifiers, [
    { namespace: ['app'], name: 'orders' },
    { namespace: ['app'], name: 'orders_changelog' },
  ]);
  assert.equal(r.json['next-page-token'], null);
  assert.deepEqual((await call('/namespaces/logs/tables')).json.identifiers, []);
  const p1 = await call('/namespaces/app/tables?pageToken=&pageSize=1');
  assert.deepEqual(p1.json.identifiers.map((t) => t.name), ['orders']);
  const p2 = await call(`/namespaces/app/tables?pageToken=${encodeURIComponent(p1.json['next-page-token'])}&pageSize=1`);
  assert.deepEqual(p2.json.identifiers.map((t) => t.name), ['orders_changelog']);
  assert.equal(p2.json['next-page-token'], null);
});

test('load table: the highest version, as stored, with its full URI', async () => {
  const r = await call('/namespaces/app/tables/orders');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json['metadata-location'], objectUri(d.dataDir, 'lake/app/orders/metadata/v2.metadata.json'));
  assert.deepEqual(r.json.metadata, lake.orders, 'v2, not v1 (nor the version-hint.text, which says 1)');
  assert.deepEqual(r.json.config, {});
  assert.equal(r.json.metadata.location, `file://${objectsDir(d.dataDir)}/lake/app/orders`);
  assert.equal(r.json.metadata['current-snapshot-id'], 1001);
  const c = await call('/namespaces/app/tables/orders_changelog?snapshots=refs');
  assert.equal(c.status, 200, c.text);
  assert.deepEqual(c.json.metadata, lake.changelog);
  assertError(await call('/namespaces/app/tables/orders?snapshots=some'), 400, 'BadRequestException');
});

test('load table: a commit made since is seen at once, by number (v10 after v9)', async () => {
  for (let v = 3; v <= 10; v++) putTableVersion(d.dataDir, 'app', 'later', v);
  const r = await call('/namespaces/app/tables/later');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json['metadata-location'], objectUri(d.dataDir, 'lake/app/later/metadata/v10.metadata.json'));
  assert.equal(r.json.metadata['last-sequence-number'], 9);
  putTableVersion(d.dataDir, 'app', 'later', 11);
  const r2 = await call('/namespaces/app/tables/later');
  assert.equal(r2.json['metadata-location'], objectUri(d.dataDir, 'lake/app/later/metadata/v11.metadata.json'));
});

test('404 NoSuchTableException', async () => {
  assertError(await call('/namespaces/app/tables/nope'), 404, 'NoSuchTableException');
  assertError(await call('/namespaces/app/tables/staging'), 404, 'NoSuchTableException', 'data but no metadata');
  assertError(await call('/namespaces/nope/tables/orders'), 404, 'NoSuchTableException');
});

test('a metadata file that is not a JSON object: 500, named', async () => {
  putObject(d.dataDir, 'lake/app/broken/metadata/v1.metadata.json', '{"format-version": 2,');
  const r = await call('/namespaces/app/tables/broken');
  assertError(r, 500, 'InternalServerError');
  assert.match(r.json.error.message, /lake\/app\/broken\/metadata\/v1\.metadata\.json/);
});

test('HEAD: 204 with no body when there, 404 when not', async () => {
  for (const [p, want] of [
    ['/namespaces/app', 204], ['/namespaces/nope', 404],
    ['/namespaces/app/tables/orders', 204], ['/namespaces/app/tables/nope', 404], ['/namespaces/nope/tables/orders', 404],
  ]) {
    const r = await call(p, { method: 'HEAD' });
    assert.equal(r.status, want, p);
    assert.equal(r.text, '', p);
    if (want === 204) assert.equal(r.headers.get('content-length'), null, 'no Content-Length on a 204');
  }
});

test('write operations: 406 UnsupportedOperationException, and the lake is left as it was', async () => {
  const table = { name: 't', schema: { type: 'struct', 'schema-id': 0, fields: [] } };
  const writes = [
    ['POST', '/namespaces', { namespace: ['made'] }],
    ['DELETE', '/namespaces/app'],
    ['DELETE', '/namespaces/logs'],
    ['POST', '/namespaces/app/properties', { updates: { owner: 'x' } }],
    ['POST', '/namespaces/app/tables', table],
    ['POST', '/namespaces/app/register', { name: 'r', 'metadata-location': 'file:///x' }],
    ['POST', '/namespaces/app/tables/orders', { requirements: [], updates: [] }],
    ['DELETE', '/namespaces/app/tables/orders'],
    ['DELETE', '/namespaces/app/tables/orders?purgeRequested=true'],
    ['POST', '/tables/rename', { source: { namespace: ['app'], name: 'orders' }, destination: { namespace: ['app'], name: 'o2' } }],
    ['POST', '/transactions/commit', { 'table-changes': [] }],
  ];
  for (const [method, p, body] of writes) {
    const r = await call(p, { method, body });
    assertError(r, 406, 'UnsupportedOperationException');
    assert.match(r.json.error.message, /read-only/);
  }
  assert.ok(existsSync(path.join(objectsDir(d.dataDir), 'lake/app/orders/metadata/v2.metadata.json')));
  assert.ok(existsSync(path.join(objectsDir(d.dataDir), 'lake/logs/namespace.json')));
  assert.ok(!existsSync(path.join(objectsDir(d.dataDir), 'lake/made')));
  assert.deepEqual((await call('/namespaces')).json.namespaces, [['app'], ['logs']]);
  assert.equal((await call('/namespaces/app/tables/orders/metrics', { method: 'POST', body: { 'report-type': 'scan-report' } })).status, 204,
    'a scan report is taken (and not kept)');
  assertError(await call('/namespaces', { method: 'PUT', body: {} }), 405, 'BadRequestException');
  assertError(await call('/namespaces/app/views'), 406, 'UnsupportedOperationException');
});

test('malformed namespaces and names: 400; a well-formed multi-level namespace: 404', async () => {
  for (const p of ['/namespaces/.x', '/namespaces/a%20b', '/namespaces/.x/tables', '/namespaces/a%2Fb/tables',
    '/namespaces/a%1F/tables', '/namespaces/app/tables/a%01b', '/namespaces/app/tables/a%5Cb', '/namespaces/%zz']) {
    assertError(await call(p), 400, 'BadRequestException');
  }
  assertError(await call('/namespaces/app%1Forders'), 404, 'NoSuchNamespaceException');
  assertError(await call('/namespaces/app%1Fx/tables'), 404, 'NoSuchNamespaceException');
  assertError(await call('/namespaces/app%1Fx/tables/orders'), 404, 'NoSuchNamespaceException');
  assertError(await call('/nope'), 404, 'NotFoundException');
  assertError(await call('', { url: `${d.url}/v1/iceberg` }), 404, 'NotFoundException');
});

test('tokens: one scoped to a database sees only that namespace and is refused the others', async () => {
  const APP = 'app-only-token-0123456789';
  const ALL = 'read-all-token-0123456789';
  const t = await startDosqld({ conf: `[auth]\ntoken = ${APP} read app\ntoken = ${ALL} read\n` });
  try {
    writeLake(t.dataDir);
    const u = `${t.url}/v1/iceberg/v1`;
    const get = (p, token, method) => call(p, { url: u, token, method });
    for (const p of ['/config', '/namespaces', '/namespaces/app', '/namespaces/app/tables/orders']) {
      const r = await get(p);
      assertError(r, 401, 'NotAuthorizedException');
      assert.match(r.headers.get('www-authenticate'), /^Bearer/);
      assertError(await get(p, 'not-a-token-we-know-01234'), 401, 'NotAuthorizedException');
    }
    assertError(await call('/namespaces', { url: u, method: 'POST', body: { namespace: ['x'] } }), 401, 'NotAuthorizedException');
    assert.equal((await get('/config', APP)).status, 200);
    assert.deepEqual((await get('/namespaces', APP)).json.namespaces, [['app']]);
    assert.deepEqual((await get('/namespaces', ALL)).json.namespaces, [['app'], ['logs']]);
    assert.deepEqual((await get('/namespaces?pageToken=&pageSize=1', APP)).json, { namespaces: [['app']], 'next-page-token': null });
    assert.equal((await get('/namespaces/app', APP)).status, 200);
    assert.equal((await get('/namespaces/app/tables', APP)).status, 200);
    const load = await get('/namespaces/app/tables/orders', APP);
    assert.equal(load.status, 200, load.text);
    assert.equal(load.json['metadata-location'], objectUri(t.dataDir, 'lake/app/orders/metadata/v2.metadata.json'));
    for (const p of ['/namespaces/logs', '/namespaces/logs/tables', '/namespaces/logs/tables/x', '/namespaces?parent=logs',
      '/namespaces/nope']) {
      assertError(await get(p, APP), 403, 'ForbiddenException');
    }
    assert.equal((await get('/namespaces/logs', APP, 'HEAD')).status, 403);
    assert.equal((await get('/namespaces/logs', ALL)).status, 200);
    assertError(await call('/namespaces', { url: u, token: APP, method: 'POST', body: { namespace: ['x'] } }), 406, 'UnsupportedOperationException');
  } finally {
    await t.cleanup();
  }
});

// An S3 endpoint that answers 403 to the listing of lake/down/ and never
// answers anything else: the catalog's 503, and requests still at the
// store when the daemon stops (abandoned by their client, or cut by the
// drain) freed as the store is closed (the harness holds the daemon to a
// clean exit, and a sanitizer build to no report).
test('an object store that fails or does not answer: 503, and a clean stop with requests at the store', async () => {
  const seen = [];
  const socks = new Set();
  const hole = net.createServer((sock) => {
    socks.add(sock);
    let buf = Buffer.alloc(0);
    let skip = 0; // body bytes of the last request still to come
    sock.on('data', (b) => {
      buf = Buffer.concat([buf, b]);
      const drop = Math.min(skip, buf.length);
      buf = buf.subarray(drop);
      skip -= drop;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = buf.subarray(0, end).toString();
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      buf = buf.subarray(end + 4);
      const dropBody = Math.min(len, buf.length);
      buf = buf.subarray(dropBody);
      skip = len - dropBody;
      const line = head.split('\r\n')[0];
      const url = decodeURIComponent(line.split(' ')[1] ?? '');
      seen.push(url);
      const answer = (status, body) => sock.write(`HTTP/1.1 ${status}\r\ncontent-type: application/xml\r\n` +
        `content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      if (url.includes('lake/down/')) {
        answer('403 Forbidden', '<?xml version="1.0"?><Error><Code>AccessDenied</Code><Message>no</Message></Error>');
      } else if (!url.includes('lake/')) { /* (the daemon's own: an empty store) */
        if (url.includes('list-type=2')) {
          answer('200 OK', '<?xml version="1.0"?><ListBucketResult><Name>lake-bucket</Name><KeyCount>0</KeyCount>' +
            '<IsTruncated>false</IsTruncated></ListBucketResult>');
        } else if (line.startsWith('PUT ')) {
          answer('200 OK', '');
        } else {
          answer('404 Not Found', '<?xml version="1.0"?><Error><Code>NoSuchKey</Code><Message>no</Message></Error>');
        }
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => socks.delete(sock));
  });
  await new Promise((r) => hole.listen(0, '127.0.0.1', r));
  const t = await startDosqld({
    conf: `[server]\nshutdown_timeout = 1s\n[storage]\nobject_store = s3://lake-bucket/pre\n` +
      `[object_store]\nendpoint = http://127.0.0.1:${hole.address().port}\naccess_key = AKIAIOSFODNN7EXAMPLE\n` +
      `secret_key = wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY\nretries = 0\nrequest_timeout = 60s\nconnect_timeout = 2s\n`,
  });
  const u = `${t.url}/v1/iceberg/v1`;
  let pending;
  try {
    const r = await call('/namespaces/down/tables', { url: u });
    assertError(r, 503, 'ServiceUnavailableException');
    assert.match(r.json.error.message, /list lake\/down\//);
    // One request abandoned by its client while at the store, one still
    // waiting when the daemon is told to stop.
    const ac = new AbortController();
    const gone = fetch(`${u}/namespaces`, { signal: ac.signal }).catch(() => 'aborted');
    const waitFor = async (what, re) => {
      for (let i = 0; i < 200 && !seen.some((x) => re.test(x)); i++) await sleep(25);
      assert.ok(seen.some((x) => re.test(x)), `${what} reached the store: ${JSON.stringify(seen)}`);
    };
    await waitFor('the list of lake/', /prefix=pre\/lake\/(&|$)/);
    ac.abort();
    assert.equal(await within(5000, gone, 'the aborted fetch'), 'aborted');
    pending = fetch(`${u}/namespaces/app/tables/orders`).then((x) => x.status, () => 'cut');
    await waitFor('the list of a table', /prefix=pre\/lake\/app\/orders\/metadata\//);
  } finally {
    await t.cleanup();
    for (const s of socks) s.destroy();
    hole.close();
  }
  const st = await within(5000, pending, 'the request cut by the stop');
  assert.ok(st === 'cut' || st === 503, String(st));
});

test('the rest of the server is as it was', async () => {
  const r = await within(10000, fetch(`${d.url}/healthz`), 'healthz');
  assert.equal(r.status, 200);
  const m = await (await within(10000, fetch(`${d.url}/metrics`), 'metrics')).text();
  assert.match(m, /route="iceberg"/);
});
