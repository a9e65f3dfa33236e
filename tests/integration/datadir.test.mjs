// Integration: a data directory belongs to one process at a time
// (DATA_DIR/LOCK): a second dosqld, or a `dosqld --restore`, on a
// directory a running dosqld holds refuses and names the holder's pid;
// the holder serves on; the lock dies with its process, kill -9 too. And
// `--restore` that would restore nothing is an error, not "restored at
// LSN 0".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import { DOSQLD, sleep, startDosqld, tempDir, within } from './lib/harness.mjs';
import { query } from './lib/rpc.mjs';

// Run dosqld to its end, killed (SIGKILL) if still running after `ms`:
// a dosqld that should have refused but serves is not left behind. A
// sanitizer's report (a leak on the way out of a refusal) fails the test.
async function runBounded(args, ms = 10000) {
  const r = await new Promise((resolve) => {
    const p = spawn(DOSQLD, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '', stderr = '';
    p.stdout.on('data', (b) => { stdout += b; });
    p.stderr.on('data', (b) => { stderr += b; });
    const timer = setTimeout(() => p.kill('SIGKILL'), ms);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  assert.doesNotMatch(r.stderr, /AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:/);
  return r;
}

test('a second dosqld on a held data directory refuses and names the holder; after kill -9 a new one starts', async (t) => {
  const root = tempDir('dosqld-datadir-');
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = path.join(root, 'data');
  const first = await startDosqld({ dataDir });
  t.after(() => first.stop('SIGKILL'));
  await query(first.port, 'app', 'CREATE TABLE t(n INTEGER PRIMARY KEY, who TEXT)');
  await query(first.port, 'app', "INSERT INTO t VALUES (1, 'first')");
  assert.equal(readFileSync(path.join(dataDir, 'LOCK'), 'utf8'), `${first.proc.pid}\n`, 'LOCK holds the holder\'s pid');

  const second = await runBounded(['--data-dir', dataDir, '--listen', '127.0.0.1:0']);
  assert.equal(second.signal, null, `the second dosqld did not exit by itself:\n${second.stderr}`);
  assert.notEqual(second.code, 0);
  assert.match(second.stderr, new RegExp(`event=start_failed reason="data directory \\S+ is in use by process ${first.proc.pid} `));
  assert.doesNotMatch(second.stderr, /event=listening|journal_replayed/, 'it touched nothing before refusing');

  // Nor may a restore write into it.
  const restore = await runBounded(['--data-dir', dataDir, '--restore', 'other']);
  assert.equal(restore.code, 1, restore.stderr);
  assert.match(restore.stderr, new RegExp(`^dosqld: restore other: data directory \\S+ is in use by process ${first.proc.pid} `));
  assert.equal(restore.stdout, '');
  assert.ok(!existsSync(path.join(dataDir, 'db/other')));

  // The first serves on, its commits its own.
  await query(first.port, 'app', "INSERT INTO t VALUES (2, 'first')");
  assert.deepEqual((await query(first.port, 'app', 'SELECT n, who FROM t ORDER BY n')).rows,
    [[1, 'first'], [2, 'first']]);

  // kill -9: the kernel drops the lock with the process.
  first.proc.kill('SIGKILL');
  await within(10000, first.exit, 'the first dosqld to die');
  const next = await startDosqld({ dataDir });
  try {
    assert.equal(readFileSync(path.join(dataDir, 'LOCK'), 'utf8'), `${next.proc.pid}\n`);
    assert.deepEqual((await query(next.port, 'app', 'SELECT n, who FROM t ORDER BY n')).rows,
      [[1, 'first'], [2, 'first']], 'every acknowledged commit is there');
  } finally {
    await next.cleanup();
  }
  assert.equal(readFileSync(path.join(dataDir, 'LOCK'), 'utf8'), '', 'a clean stop empties LOCK');
  // Stopped: the directory is free for a restore (which finds nothing here).
  const free = await runBounded(['--data-dir', dataDir, '--restore', 'other']);
  assert.equal(free.code, 1);
  assert.match(free.stderr, /restore other: the object store has no such database/);
});

test('--restore that would restore nothing is an error, not "restored at LSN 0"', async (t) => {
  const root = tempDir('dosqld-datadir-');
  t.after(() => rmSync(root, { recursive: true, force: true }));
  const dataDir = path.join(root, 'data');
  const store = `file://${path.join(dataDir, 'objects')}`;
  // While a database is open its log goes up in whole chunks only
  // (chunk_size, 2 MiB): a few small commits leave its copy at LSN 0.
  const d = await startDosqld({ dataDir });
  t.after(() => d.stop('SIGKILL'));
  await query(d.port, 'app', 'CREATE TABLE t(n)');
  const { lsn } = await query(d.port, 'app', 'INSERT INTO t VALUES (1)');
  await query(d.port, 'empty', 'SELECT 1'); // made, never written
  const manifest = path.join(dataDir, 'objects/db/app/manifest.json');
  await within(10000, (async () => { while (!existsSync(manifest)) await sleep(20); })(), 'the first manifest');

  const restore = (dir, db) => runBounded(['--data-dir', path.join(root, dir), '--object-store', store, '--restore', db], 30000);
  // app is open and its commits have not gone up.
  let r = await restore('r1', 'app');
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.equal(r.stdout, '');
  assert.match(r.stderr, /^dosqld: restore app: the object store holds no commit of app \(its copy is at LSN 0\): nothing to restore/);
  assert.ok(!existsSync(path.join(root, 'r1/db/app')), 'nothing left behind');
  assert.deepEqual(readdirSync(path.join(root, 'r1/db')), [], 'not even the temporary directory');

  // A database the store does not have.
  r = await restore('r1', 'never');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /restore never: the object store has no such database/);

  // A clean stop sends every commit up: now it restores; the database
  // that never had a commit still restores nothing.
  assert.equal((await d.stop()).code, 0);
  r = await restore('r2', 'app');
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^restored app at LSN ${lsn} into `));
  r = await restore('r3', 'empty');
  assert.equal(r.code, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /the object store holds no commit of empty/);
  assert.ok(!existsSync(path.join(root, 'r3/db/empty')));
});
