// Integration: the process — flags, --check-config, refusals, signals,
// sd_notify, the systemd unit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import WebSocket from 'ws';
import {
  BUILD, DOSQLD, ROOT, startDosqld, runDosqld, Raw, request, tempDir, within, sleep,
} from './lib/harness.mjs';

test('--version, --help, and a bad flag', async () => {
  const v = await runDosqld(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^dosqld \d+\.\d+\.\d+\n$/);
  const h = await runDosqld(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /--check-config/);
  const bad = await runDosqld(['--nope']);
  assert.equal(bad.code, 2);
  const extra = await runDosqld(['stray']);
  assert.equal(extra.code, 2);
});

test('--check-config: the shipped file is valid; errors name their line', async (t) => {
  const ok = await runDosqld(['--check-config', '-c', path.join(ROOT, 'conf/dosqld.conf')]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /configuration ok/);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bad = path.join(dir, 'bad.conf');
  writeFileSync(bad, '[server]\nlisten = 127.0.0.1:1\nmax_body_size = huge\n[servr]\nx = 1\n');
  const r = await runDosqld(['--check-config', '-c', bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /bad\.conf:3: server\.max_body_size: 'huge' is not a size/);
  assert.match(r.stderr, /bad\.conf:4: unknown section \[servr\]/);
  assert.match(r.stderr, /2 problems/);
  writeFileSync(bad, '[auth]\n\ntoken = short read\n');
  const tok = await runDosqld(['--check-config', '-c', bad]);
  assert.equal(tok.code, 1);
  assert.match(tok.stderr, /bad\.conf:3: auth\.token: a token must be at least 16 characters/);
  const missing = await runDosqld(['--check-config', '-c', path.join(dir, 'nope.conf')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot open/);
  const flag = await runDosqld(['--check-config', '--log-level', 'loud']);
  assert.equal(flag.code, 1);
  assert.match(flag.stderr, /log\.level: 'loud'/);
});

test('refuses a non-loopback listener without tokens (checked before any bind)', async (t) => {
  const r = await runDosqld(['--check-config', '--listen', '0.0.0.0:8787']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to listen on 0\.0\.0\.0:8787 without auth tokens/);
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const conf = path.join(dir, 'open.conf');
  writeFileSync(conf, '[auth]\nallow_unauthenticated = yes\n');
  const allowed = await runDosqld(['--check-config', '-c', conf, '--listen', '0.0.0.0:8787']);
  assert.equal(allowed.code, 0, allowed.stderr);
  writeFileSync(conf, '[auth]\ntoken = some-long-token-0123456789 read\n');
  const withToken = await runDosqld(['--check-config', '-c', conf, '--listen', '[::]:8787']);
  assert.equal(withToken.code, 0, withToken.stderr);
});

test('start-up failures exit 1 with the reason', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A port that is taken.
  const blocker = net.createServer();
  await new Promise((r) => blocker.listen(0, '127.0.0.1', r));
  const port = blocker.address().port;
  let r = await runDosqld(['--listen', `127.0.0.1:${port}`, '--data-dir', path.join(dir, 'd')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /event=start_failed reason="cannot listen on 127\.0\.0\.1:\d+: address already in use"/);
  blocker.close();
  // A certificate that is not there.
  const conf = path.join(dir, 'tls.conf');
  writeFileSync(conf, `[server]\ntls_listen = 127.0.0.1:0\ntls_cert = ${dir}/none.pem\ntls_key = ${dir}/none.key\n`);
  r = await runDosqld(['-c', conf, '--listen', '127.0.0.1:0']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /TLS: .*none\.pem/);
  // A data dir that cannot be made.
  writeFileSync(path.join(dir, 'file'), 'x');
  r = await runDosqld(['--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'file', 'sub')]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /cannot create/);
});

test('several listeners, IPv4 and IPv6 loopback, serve the same routes', async (t) => {
  const v6 = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '::1', () => { s.close(); resolve(true); }).on('error', () => resolve(false));
  });
  const args = ['--listen', '127.0.0.2:0'];
  if (v6) args.push('--listen', '[::1]:0');
  const d = await startDosqld({ args, listeners: v6 ? 3 : 2 });
  t.after(() => d.cleanup());
  assert.equal(d.addrs.length, v6 ? 3 : 2);
  for (const a of d.addrs) {
    const host = a.host.replace(/^\[|\]$/g, '');
    const text = await within(5000, new Promise((resolve, reject) => {
      const s = net.connect({ host, port: a.port }, () => s.write('GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n'));
      let buf = '';
      s.on('data', (b) => { buf += b; });
      s.on('end', () => resolve(buf));
      s.on('error', reject);
    }), `healthz on ${a.host}`);
    assert.match(text, /^HTTP\/1\.1 200 OK/, `${a.host}:${a.port}`);
  }
  if (!v6) t.diagnostic('no IPv6 loopback here: tested IPv4 only');
});

test('the data dir is created private', async () => {
  const d = await startDosqld();
  try {
    const st = statSync(path.join(d.dir, 'data'));
    assert.ok(st.isDirectory());
    assert.equal(st.mode & 0o777, 0o700);
  } finally {
    await d.cleanup();
  }
});

test('SIGTERM the moment it reports listening still drains and exits 0', async () => {
  for (let i = 0; i < 5; i++) {
    const d = await startDosqld();
    d.proc.kill('SIGTERM');
    assert.deepEqual(await within(5000, d.exit, 'exit'), { code: 0, signal: null });
    await d.cleanup();
  }
});

test('SIGTERM during traffic: every answered request is whole, exit 0', async () => {
  const d = await startDosqld({ conf: '[server]\nshutdown_timeout = 5s\n' });
  try {
    let complete = 0, stop = false;
    const worker = async () => {
      const c = await Raw.connect(d.port);
      for (let i = 0; i < 100000 && !stop; i++) {
        c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
        let r;
        try { r = await c.readResponse({ ms: 5000 }); } catch { break; } // closed by the drain
        assert.equal(r.status, 200);
        assert.equal(r.text, 'ok\n');
        complete++;
        if (r.headers['connection'] === 'close') break;
      }
      await c.readClose(7000);
    };
    const workers = Array.from({ length: 8 }, worker);
    await sleep(300);
    const sent = complete;
    assert.ok(sent > 0);
    d.proc.kill('SIGTERM');
    const exit = await within(10000, d.exit, 'exit after SIGTERM');
    stop = true;
    await Promise.all(workers);
    assert.deepEqual(exit, { code: 0, signal: null });
    assert.match(d.stderr, /event=shutdown signal=SIGTERM/);
    assert.match(d.stderr, /event=stopped/);
  } finally {
    await d.cleanup();
  }
});

test('SIGINT exits 0; WebSockets get 1001 Going Away', async () => {
  const d = await startDosqld();
  try {
    const ws = new WebSocket(`ws://127.0.0.1:${d.port}/v1/rpc`);
    await within(5000, new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); }), 'open');
    const closed = new Promise((res) => ws.on('close', (code) => res(code)));
    d.proc.kill('SIGINT');
    assert.equal(await within(5000, closed, 'close'), 1001);
    assert.deepEqual(await within(10000, d.exit, 'exit'), { code: 0, signal: null });
  } finally {
    await d.cleanup();
  }
});

test('the drain is bounded by shutdown_timeout', async () => {
  const d = await startDosqld({ conf: '[server]\nshutdown_timeout = 500ms\nheader_timeout = 60s\n' });
  try {
    const c = await Raw.connect(d.port);
    c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n'); // a request that never finishes
    await sleep(100);
    const t0 = Date.now();
    d.proc.kill('SIGTERM');
    const exit = await within(5000, d.exit, 'exit');
    assert.equal(exit.code, 0);
    assert.ok(Date.now() - t0 < 4000, 'ended by the shutdown timeout, not the header timeout');
    assert.match(d.stderr, /event=shutdown_forced reason=shutdown_timeout/);
    c.destroy();
  } finally {
    await d.cleanup();
  }
});

test('sd_notify: READY=1, RELOADING=1 on SIGHUP, STOPPING=1', async (t) => {
  const sinkDir = tempDir();
  t.after(() => rmSync(sinkDir, { recursive: true, force: true }));
  const sock = path.join(sinkDir, 'notify');
  const sink = spawn(path.join(BUILD, 'tests/tools/notify_sink'), [sock, '20']);
  let got = '';
  sink.stdout.on('data', (b) => { got += b; });
  await within(5000, (async () => { while (!got.includes('ready')) await sleep(10); })(), 'sink');
  const d = await startDosqld({ env: { NOTIFY_SOCKET: sock } });
  try {
    await within(5000, (async () => { while (!got.includes('READY=1')) await sleep(10); })(), 'READY=1');
    assert.match(got, /MAINPID=\d+/);
    d.proc.kill('SIGHUP');
    await within(5000, (async () => { while (!got.includes('RELOADING=1')) await sleep(10); })(), 'RELOADING=1');
    d.proc.kill('SIGTERM');
    await within(5000, (async () => { while (!got.includes('STOPPING=1')) await sleep(10); })(), 'STOPPING=1');
    assert.equal((await d.exit).code, 0);
  } finally {
    sink.kill();
    await d.cleanup();
  }
});

test('SIGHUP reloads the log level', async () => {
  const d = await startDosqld({ conf: '[log]\nlevel = info\n' });
  try {
    await request(d.port, 'GET', '/healthz');
    await sleep(50);
    assert.doesNotMatch(d.stderr, /event=request /);
    writeFileSync(d.confPath, '[log]\nlevel = debug\n');
    d.proc.kill('SIGHUP');
    await within(5000, (async () => { while (!/event=reloaded/.test(d.stderr)) await sleep(10); })(), 'reload');
    await request(d.port, 'GET', '/healthz');
    await within(5000, (async () => { while (!/event=request .*path=\/healthz status=200/.test(d.stderr)) await sleep(10); })(), 'debug line');
  } finally {
    await d.cleanup();
  }
});

test('systemd unit passes systemd-analyze verify', async (t) => {
  const which = spawnSync('sh', ['-c', 'command -v systemd-analyze']);
  if (which.status !== 0) {
    t.skip('systemd-analyze is not installed here');
    return;
  }
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const unit = path.join(dir, 'dosqld.service');
  const text = readFileSync(path.join(ROOT, 'systemd/dosqld.service.in'), 'utf8')
    .replaceAll('@BINDIR@', path.dirname(DOSQLD))
    .replaceAll('@SYSCONFDIR@', '/etc');
  writeFileSync(unit, text);
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', `warnings: ${r.stderr}`);
  for (const key of ['Type=notify', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes',
    'NoNewPrivileges=yes', 'RestrictAddressFamilies=', 'SystemCallFilter=@system-service',
    'LimitNOFILE=', 'StateDirectory=dosqld', 'User=dosqld']) {
    assert.ok(text.includes(key), `unit lacks ${key}`);
  }
  assert.ok(existsSync(path.join(ROOT, 'systemd/dosqld.sysusers')));
  assert.ok(existsSync(path.join(ROOT, 'systemd/dosqld.tmpfiles')));
});

test('object store: file:// by default under the data directory; s3:// without credentials or an http:// URL are refused at start', async (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const d = await startDosqld({ dataDir: path.join(dir, 'data') });
  await d.stop();
  assert.ok(statSync(path.join(dir, 'data/objects')).isDirectory(), 'the embedded store is made at start');
  const n = await startDosqld({ dataDir: path.join(dir, 'none'), args: ['--object-store', 'none'] });
  try {
    const st = await (await fetch(`${n.url}/v1/rpc`, { method: 'POST', body: JSON.stringify({ id: 1, method: 'getStats' }) })).json();
    assert.equal(st.result.server.objectStore, null, 'none: no copies');
    assert.ok(!existsSync(path.join(dir, 'none/objects')));
  } finally {
    await n.cleanup();
  }

  const env = { ...process.env };
  for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_ENDPOINT_URL']) delete env[k];
  const r = spawnSync(DOSQLD, ['--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'd2'),
    '--object-store', 's3://some-bucket/prefix'], { env, timeout: 10000 });
  assert.equal(r.status, 1, r.stderr.toString());
  assert.match(r.stderr.toString(),
    /event=start_failed reason="object store 's3:\/\/some-bucket\/prefix': no credentials \(object_store\.access_key and secret_key, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY\)"/);
  writeFileSync(path.join(dir, 'c.conf'), '[storage]\nsync = normal\nsync_to_object_store = commit\nobject_store = none\n');
  const c = spawnSync(DOSQLD, ['--check-config', '-c', path.join(dir, 'c.conf')], { timeout: 10000 });
  assert.equal(c.status, 1);
  assert.match(c.stderr.toString(), /sync_to_object_store = commit needs storage\.sync = full/);
  assert.match(c.stderr.toString(), /sync_to_object_store = commit needs an object store/);
  const u = spawnSync(DOSQLD, ['--listen', '127.0.0.1:0', '--data-dir', path.join(dir, 'd3'),
    '--object-store', 'http://127.0.0.1:9000/bucket'], { timeout: 10000 });
  assert.equal(u.status, 1);
  assert.match(u.stderr.toString(), /storage\.object_store: 'http:\/\/127\.0\.0\.1:9000\/bucket' is not a file:\/\/ or s3:\/\/ URL/);
});
