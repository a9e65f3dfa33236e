// Object store: engine/tier/objstore through tests/tools/
// objcli, against the S3-compatible server of lib/s3server.mjs (s3rver
// behind a proxy that checks every SigV4 signature and payload hash, and
// injects faults) and against file://, the same operations on both.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { BUILD, tempDir, within } from './lib/harness.mjs';
import { startS3 } from './lib/s3.mjs';

const OBJCLI = path.join(BUILD, 'tests/tools/objcli');
let s3;
let fileDir;

before(async () => {
  s3 = await startS3();
  fileDir = tempDir('dosqld-obj-');
});
after(async () => {
  await s3?.stop();
  if (fileDir) rmSync(fileDir, { recursive: true, force: true });
});

// Run objcli; resolves {code, out, err}. Bounded in time.
function cli(args, input) {
  return within(60000, new Promise((resolve, reject) => {
    const p = spawn(OBJCLI, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out = [];
    let err = '';
    p.stdout.on('data', (d) => out.push(d));
    p.stderr.on('data', (d) => { err += d; });
    p.on('error', reject);
    p.on('exit', (code) => resolve({ code, out: Buffer.concat(out), err }));
    p.stdin.on('error', () => {}); // it may exit (refused at once) before reading its input
    p.stdin.end(input ?? '');
  }), `objcli ${args.join(' ')}`);
}

const S3 = () => ['-e', s3.endpoint, '-k', s3.key, '-s', s3.secret, '-b', '5'];
const backends = {
  's3 path style': () => [...S3(), `s3://${s3.bucket}/path-style`],
  's3 virtual-host style': () => ['-V', '-e', `http://localhost:${s3.port}`, '-k', s3.key, '-s', s3.secret,
    `s3://${s3.bucket}/vhost`],
  file: () => [`file://${fileDir}/store`],
};

for (const [name, base] of Object.entries(backends)) {
  test(`${name}: put, get, ranges, head, list, conditional put, delete`, async () => {
    const b = base();
    const body = Buffer.from('0123456789'.repeat(100));
    let r = await cli([...b, 'put', 'db/one/wal/00000001.seg', '-'], body);
    assert.equal(r.code, 0, r.err);
    r = await cli([...b, 'get', 'db/one/wal/00000001.seg']);
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out, body);
    r = await cli([...b, 'get', 'db/one/wal/00000001.seg', '995', '10']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.toString(), '56789', 'a range past the end is cut at the end');
    r = await cli([...b, 'get', 'db/one/wal/00000001.seg', '12', '3']);
    assert.equal(r.out.toString(), '234');
    r = await cli([...b, 'get', 'db/one/wal/00000001.seg', '1000', '1']);
    assert.equal(r.code, 4, `a range starting at the end: ${r.err}`);
    r = await cli([...b, 'head', 'db/one/wal/00000001.seg']);
    assert.equal(r.out.toString(), '1000\n');
    r = await cli([...b, 'get', 'db/one/wal/00000009.seg']);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, /^not found/);
    r = await cli([...b, 'head', 'db/one/nothing']);
    assert.equal(r.code, 2, r.err);

    // Conditional: the first wins, the second is refused and changes nothing.
    r = await cli([...b, 'putnew', 'db/one/manifest', '-'], 'first');
    assert.equal(r.code, 0, r.err);
    r = await cli([...b, 'putnew', 'db/one/manifest', '-'], 'second');
    assert.equal(r.code, 3, r.err);
    assert.match(r.err, /^exists/);
    r = await cli([...b, 'get', 'db/one/manifest']);
    assert.equal(r.out.toString(), 'first');

    await cli([...b, 'put', 'db/one/ckpt/0000000000000010.ckpt', '-'], 'ck');
    await cli([...b, 'put', 'db/two/wal/00000001.seg', '-'], 'x');
    r = await cli([...b, 'list', 'db/one/']);
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.toString(),
      'db/one/ckpt/0000000000000010.ckpt 2\ndb/one/manifest 5\ndb/one/wal/00000001.seg 1000\n');
    r = await cli([...b, 'list', 'db/']);
    assert.equal(r.out.toString().split('\n').filter(Boolean).length, 4);
    r = await cli([...b, 'list', 'elsewhere/']);
    assert.equal(r.code, 0);
    assert.equal(r.out.toString(), '');

    r = await cli([...b, 'delete', 'db/one/manifest']);
    assert.equal(r.code, 0, r.err);
    r = await cli([...b, 'get', 'db/one/manifest']);
    assert.equal(r.code, 2);
    r = await cli([...b, 'delete', 'db/one/manifest']);
    assert.equal(r.code, 0, 'deleting what is gone is done');
    r = await cli([...b, 'get', '../escape']);
    assert.equal(r.code, 5);
    assert.match(r.err, /invalid object key/);
  });

  test(`${name}: many requests at once, then a list longer than one page`, async () => {
    const b = base();
    let r = await cli(['-i', '8', ...b, 'par', '64', '100000']);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out.toString(), /64 objects of 100000 bytes written and read back/);
    // S3 answers at most 1,000 keys a page: 1,005 objects take two.
    r = await cli(['-i', '16', ...b, 'par', '1005', '8']);
    assert.equal(r.code, 0, r.err);
    r = await cli([...b, 'list', 'par/']);
    assert.equal(r.code, 0, r.err);
    const keys = r.out.toString().split('\n').filter(Boolean).map((l) => l.split(' ')[0]);
    assert.equal(keys.length, 1005);
    assert.equal(keys[0], 'par/0000');
    assert.equal(keys[1004], 'par/1004');
    assert.deepEqual([...keys].sort(), keys, 'in key order');
  });
}

test('s3: a wrong secret or an unknown key is refused at once, not retried', async () => {
  const before = (await s3.stats()).rejected;
  let r = await cli(['-e', s3.endpoint, '-k', s3.key, '-s', 'not-the-secret', `s3://${s3.bucket}/x`, 'put', 'k', '-'], 'v');
  assert.equal(r.code, 5, r.err);
  assert.match(r.err, /HTTP 403 SignatureDoesNotMatch/);
  assert.match(r.err, /attempts=1 /);
  r = await cli(['-e', s3.endpoint, '-k', 'nobody', '-s', s3.secret, `s3://${s3.bucket}/x`, 'get', 'k']);
  assert.equal(r.code, 5, r.err);
  assert.match(r.err, /InvalidAccessKeyId/);
  assert.equal((await s3.stats()).rejected, before + 2);
  r = await cli([...S3(), 's3://no-such-bucket/x', 'get', 'k']);
  assert.equal(r.code, 5, r.err);
  assert.match(r.err, /HTTP 404 NoSuchBucket/);
});

test('s3: 500s, truncated bodies and dropped connections are retried with backoff', async () => {
  const b = [...S3(), `s3://${s3.bucket}/faults`];
  const body = Buffer.alloc(300000, 'z');
  let r = await cli([...b, 'put', 'obj', '-'], body);
  assert.equal(r.code, 0, r.err);

  await s3.fault('500', { count: 2 });
  r = await cli([...b, 'get', 'obj']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /attempts=3 /);
  assert.equal(r.out.length, body.length);

  await s3.fault('truncate', { count: 1, match: 'GET' });
  r = await cli([...b, 'get', 'obj']);
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /attempts=2 /);
  assert.deepEqual(r.out, body, 'the whole body, from the second attempt');

  await s3.fault('drop', { count: 1, match: 'PUT' });
  r = await cli([...b, 'put', 'obj2', '-'], 'after a drop');
  assert.equal(r.code, 0, r.err);
  assert.match(r.err, /attempts=2 /);
  r = await cli([...b, 'get', 'obj2']);
  assert.equal(r.out.toString(), 'after a drop');

  // More failures than retries: the error says so.
  await s3.fault('500', { count: 10 });
  r = await cli(['-R', '2', ...b, 'get', 'obj']);
  assert.equal(r.code, 5, r.err);
  assert.match(r.err, /HTTP 500 InternalError: injected \(after 3 attempts\)/);
  await s3.fault('500', { count: 0 });
});

test('s3: a slow server times out each attempt; a server that is down for a while is waited out', async () => {
  const b = [...S3(), `s3://${s3.bucket}/slow`];
  let r = await cli([...b, 'put', 'obj', '-'], 'v');
  assert.equal(r.code, 0, r.err);
  await s3.fault('slow', { count: 2, delayMs: 1500 });
  const t0 = Date.now();
  r = await cli(['-t', '300', '-R', '1', ...b, 'get', 'obj']);
  assert.equal(r.code, 6, r.err);
  assert.match(r.err, /^timed out: .*after 2 attempts/);
  assert.ok(Date.now() - t0 < 5000);
  await new Promise((res) => setTimeout(res, 3000)); // let the slow answers drain

  await s3.fault('down', { delayMs: 1500 });
  r = await cli(['-R', '10', ...S3(), '-b', '400', `s3://${s3.bucket}/slow`, 'get', 'obj']);
  assert.equal(r.code, 0, r.err);
  assert.equal(r.out.toString(), 'v');
  assert.match(r.err, /attempts=([2-9]|1[01]) /, 'connections were refused, then it came back');
});
