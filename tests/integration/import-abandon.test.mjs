// The client of an import goes away while the engine still runs it: the
// SQL (the request's body, which the import reads from) must outlive the
// request. Run with the sanitizer build to see the use after free:
//   DSQ_BUILD=../build-address-undefined node --test integration/import-abandon.test.mjs
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { startDosqld, sleep } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

const ADMIN = 'admin-token-0123456789';
const auth = { authorization: `Bearer ${ADMIN}` };
let d;
before(async () => { d = await startDosqld({ conf: `[auth]\ntoken = ${ADMIN} admin\n` }); });
after(async () => { await d?.cleanup(); });

test('a client that goes away mid-import leaves the server whole', async () => {
  const slow = 'WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000) INSERT INTO t(a) SELECT x FROM c;';
  const body = Buffer.from(`CREATE TABLE t(a, b, c);\n${slow}\nCREATE TABLE u(x);\nINSERT INTO u VALUES ('${'y'.repeat(3000)}');\n`);
  await new Promise((resolve) => {
    const s = net.connect(d.port, '127.0.0.1', () => {
      s.write(`PUT /v1/db/gone/import HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${ADMIN}\r\n` +
        `Content-Type: application/sql\r\nContent-Length: ${body.length}\r\n\r\n`);
      s.write(body);
      setTimeout(() => { s.destroy(); resolve(); }, 300); // while the slow statement runs
    });
    s.on('error', () => {});
  });
  await sleep(3000);
  const r = await query(d.port, 'other', 'SELECT 1', undefined, { headers: auth });
  assert.deepEqual(r.rows, [[1]]);
  assert.doesNotMatch(d.stderr, /AddressSanitizer|runtime error/);
});
