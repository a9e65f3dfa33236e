// Integration: TLS listeners beside plain ones, same routes, TLS 1.2+.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import path from 'node:path';
import WebSocket from 'ws';
import { startDosqld, Raw, request, tempDir, within } from './lib/harness.mjs';

let d, certDir, ca;
before(async () => {
  certDir = tempDir('dosqld-cert-');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1',
    '-nodes', '-keyout', path.join(certDir, 'key.pem'), '-out', path.join(certDir, 'cert.pem'),
    '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'],
  { stdio: 'ignore' });
  ca = readFileSync(path.join(certDir, 'cert.pem'));
  d = await startDosqld({
    listeners: 2,
    conf: `[server]
tls_listen = 127.0.0.1:0
tls_cert = ${certDir}/cert.pem
tls_key = ${certDir}/key.pem
`,
  });
  assert.ok(d.tlsPort && d.port && d.tlsPort !== d.port);
});
after(async () => {
  await d?.cleanup();
  rmSync(certDir, { recursive: true, force: true });
});

function httpsGet(pathname, opts = {}) {
  return within(5000, new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: d.tlsPort, path: pathname, ca, servername: 'localhost', agent: false, ...opts }, (res) => {
      const protocol = res.socket.getProtocol();
      let body = '';
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body, protocol }));
    });
    req.on('error', reject);
    req.end();
  }), 'https request');
}

test('HTTPS round trip with a verified self-signed certificate', async () => {
  const r = await httpsGet('/healthz');
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok\n');
  const m = await httpsGet('/metrics');
  assert.equal(m.status, 200);
  assert.ok(m.body.length > 2000, 'a body larger than one TLS record fragment is fine');
});

test('keep-alive and pipelining over one TLS connection', async () => {
  const c = await Raw.connect(d.tlsPort, { secure: true, tlsOptions: { ca, servername: 'localhost', rejectUnauthorized: true } });
  c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'.repeat(20));
  for (let i = 0; i < 20; i++) assert.equal((await c.readResponse()).status, 200);
  c.write('POST /v1/rpc HTTP/1.1\r\nHost: x\r\nContent-Length: 24\r\n\r\n{"id":1,"method":"ping"}');
  const r = await c.readResponse();
  assert.equal(r.json.result.pong, true);
  c.destroy();
});

test('WebSocket over TLS (wss)', async () => {
  const ws = new WebSocket(`wss://127.0.0.1:${d.tlsPort}/v1/rpc`, { ca, servername: 'localhost' });
  await within(5000, new Promise((res, rej) => { ws.on('open', res); ws.on('error', rej); }), 'wss open');
  const reply = within(5000, new Promise((res) => ws.on('message', (m) => res(JSON.parse(m.toString())))), 'reply');
  ws.send(JSON.stringify({ id: 'tls', method: 'ping' }));
  assert.equal((await reply).id, 'tls');
  ws.close();
});

test('TLS 1.1 is refused; TLS 1.2 and 1.3 are accepted', async () => {
  for (const v of ['TLSv1.2', 'TLSv1.3']) {
    const r = await httpsGet('/healthz', { minVersion: v, maxVersion: v });
    assert.equal(r.status, 200, v);
    assert.equal(r.protocol, v);
  }
  const err = await within(5000, new Promise((resolve) => {
    const s = tls.connect({ host: '127.0.0.1', port: d.tlsPort, ca, servername: 'localhost',
      minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT:@SECLEVEL=0' });
    s.on('secureConnect', () => { s.destroy(); resolve(null); });
    s.on('error', (e) => resolve(e));
  }), 'TLS 1.1 attempt');
  assert.ok(err, 'a TLS 1.1 handshake must fail');
});

test('plain HTTP on the TLS port is dropped; both ports keep serving', async () => {
  const c = await Raw.connect(d.tlsPort);
  c.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  await c.readClose();
  assert.doesNotMatch(c.buf.toString('latin1'), /HTTP\/1\.1 200/);
  assert.equal((await httpsGet('/healthz')).status, 200);
  assert.equal((await request(d.port, 'GET', '/healthz')).status, 200);
});
