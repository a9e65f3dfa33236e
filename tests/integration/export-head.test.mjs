// HEAD /v1/db/{db}/export: the head of the answer, no body (RFC 9110
// 9.3.2); a body there is read as the next response on the connection.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startDosqld } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

let d;
before(async () => { d = await startDosqld(); });
after(async () => { await d?.cleanup(); });

test('HEAD of an export sends no body; the next response on the connection is whole', async () => {
  await query(d.port, 'h', 'CREATE TABLE t(a); INSERT INTO t VALUES (randomblob(100000))');
  const got = await new Promise((resolve) => {
    let b = Buffer.alloc(0);
    const s = net.connect(d.port, '127.0.0.1', () => {
      s.write('HEAD /v1/db/h/export HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    s.on('data', (x) => { b = Buffer.concat([b, x]); });
    s.on('error', () => {});
    setTimeout(() => { s.destroy(); resolve(b.toString('latin1')); }, 1500);
  });
  const first = got.indexOf('\r\n\r\n');
  assert.match(got.slice(0, first), /^HTTP\/1\.1 200/);
  assert.match(got.slice(first + 4, first + 4 + 12), /^HTTP\/1\.1 /, 'bytes after the HEAD response\'s head');
  assert.ok(got.length < 10000, `${got.length} bytes for a HEAD and a /healthz`);
});
