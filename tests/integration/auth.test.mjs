// Integration: bearer tokens, scopes, database globs, WebSocket ?token=,
// SIGHUP reload of tokens.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { startDosqld, Raw, request, tempDir, within, sleep } from './lib/harness.mjs';

const READ = 'read-token-for-app-0123';
const ADMIN = 'admin-token-0123456789';
const FILE_TOKEN = 'file-token-0123456789';
const NEW_TOKEN = 'new-token-after-reload-0123';

let d, tokensFile, tokensDir;
before(async () => {
  tokensDir = tempDir();
  tokensFile = path.join(tokensDir, 'tokens');
  writeFileSync(tokensFile, `# one token\n${FILE_TOKEN} write\n`);
  d = await startDosqld({
    conf: `[auth]
token = ${READ} read app-*
token = ${ADMIN} admin
tokens_file = ${tokensFile}
`,
  });
});
after(async () => {
  await d?.cleanup();
  rmSync(tokensDir, { recursive: true, force: true });
});

const bearer = (t) => ({ Authorization: `Bearer ${t}` });

test('health is public; metrics needs a token', async () => {
  assert.equal((await request(d.port, 'GET', '/healthz')).status, 200);
  const r = await request(d.port, 'GET', '/metrics');
  assert.equal(r.status, 401);
  assert.equal((await request(d.port, 'GET', '/metrics', { headers: bearer(READ) })).status, 200);
});

test('no token, a bad token: 401 UNAUTHORIZED with WWW-Authenticate', async () => {
  let r = await request(d.port, 'POST', '/v1/db/app-1/query', { body: '{}' });
  assert.equal(r.status, 401);
  assert.equal(r.json.error.code, 'UNAUTHORIZED');
  assert.equal(r.headers['www-authenticate'], 'Bearer realm="dosqld"');
  assert.match(r.json.error.message, /missing/);
  r = await request(d.port, 'POST', '/v1/db/app-1/query', { body: '{}', headers: bearer('not-a-token-at-all-xx') });
  assert.equal(r.status, 401);
  assert.match(r.json.error.message, /invalid token/);
  r = await request(d.port, 'POST', '/v1/db/app-1/query', { body: '{}', headers: { Authorization: `Basic ${READ}` } });
  assert.equal(r.status, 401, 'only the Bearer scheme counts');
});

test('scope and database glob: 403 FORBIDDEN outside them', async () => {
  let r = await request(d.port, 'POST', '/v1/db/other/query', { body: '{}', headers: bearer(READ) });
  assert.equal(r.status, 403, 'outside app-*');
  assert.equal(r.json.error.code, 'FORBIDDEN');
  r = await request(d.port, 'POST', '/v1/db/app-1/query', { body: '{"sql":"SELECT 1"}', headers: bearer(READ) });
  assert.equal(r.status, 200, 'authorized');
  r = await request(d.port, 'POST', '/v1/db/app-1/query', { body: '{"sql":"CREATE TABLE t(x)"}', headers: bearer(READ) });
  assert.equal(r.status, 403, 'read scope may not write');
  assert.equal(r.json.error.code, 'FORBIDDEN');
  r = await request(d.port, 'GET', '/v1/db', { headers: bearer(READ) });
  assert.equal(r.status, 403, 'listing databases needs admin');
  r = await request(d.port, 'GET', '/v1/db', { headers: bearer(ADMIN) });
  assert.equal(r.status, 200);
  assert.ok(Array.isArray(r.json));
  r = await request(d.port, 'DELETE', '/v1/db/app-1', { headers: bearer(FILE_TOKEN) });
  assert.equal(r.status, 403, 'write is not admin');
  r = await request(d.port, 'POST', '/v1/db/anything/query', { body: '{"sql":"CREATE TABLE t(x)"}', headers: bearer(FILE_TOKEN) });
  assert.equal(r.status, 200, 'a token from tokens_file with the default glob *');
});

test('JSON-RPC with a token', async () => {
  const r = await request(d.port, 'POST', '/v1/rpc', { body: '{"id":1,"method":"ping"}', headers: bearer(READ) });
  assert.equal(r.status, 200);
  assert.equal(r.json.result.pong, true);
});

test('the token query parameter counts for WebSocket upgrades only', async () => {
  let r = await request(d.port, 'POST', `/v1/rpc?token=${READ}`, { body: '{"id":1,"method":"ping"}' });
  assert.equal(r.status, 401, 'not for plain requests');
  const ok = new WebSocket(`ws://127.0.0.1:${d.port}/v1/rpc?token=${encodeURIComponent(READ)}`);
  await within(5000, new Promise((res, rej) => { ok.on('open', res); ok.on('error', rej); }), 'open');
  const reply = within(5000, new Promise((res) => ok.on('message', (m) => res(JSON.parse(m.toString())))), 'reply');
  ok.send('{"id":5,"method":"ping"}');
  assert.equal((await reply).id, 5);
  ok.close();
  const hdr = new WebSocket(`ws://127.0.0.1:${d.port}/v1/rpc`, { headers: bearer(ADMIN) });
  await within(5000, new Promise((res, rej) => { hdr.on('open', res); hdr.on('error', rej); }), 'open');
  hdr.close();
  const denied = new WebSocket(`ws://127.0.0.1:${d.port}/v1/rpc`);
  const status = await within(5000, new Promise((res) => {
    denied.on('unexpected-response', (req, resp) => res(resp.statusCode));
    denied.on('open', () => res(101));
    denied.on('error', () => {});
  }), 'refusal');
  assert.equal(status, 401);
});

test('Expect: 100-continue without a token is refused before the body', async () => {
  const c = await Raw.connect(d.port);
  c.write('POST /v1/rpc HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1000\r\n\r\n');
  const r = await c.readResponse();
  assert.equal(r.status, 401);
  assert.equal(r.headers['connection'], 'close');
  await c.readClose();
});

test('SIGHUP reloads tokens; a broken file changes nothing', async () => {
  writeFileSync(tokensFile, `${NEW_TOKEN} read\n`);
  d.proc.kill('SIGHUP');
  await within(5000, (async () => {
    while (!/event=reloaded tokens=3/.test(d.stderr)) await sleep(20);
  })(), 'reload');
  let r = await request(d.port, 'GET', '/metrics', { headers: bearer(FILE_TOKEN) });
  assert.equal(r.status, 401, 'the removed token no longer works');
  r = await request(d.port, 'GET', '/metrics', { headers: bearer(NEW_TOKEN) });
  assert.equal(r.status, 200, 'the new one does');

  writeFileSync(tokensFile, 'short read\n');
  d.proc.kill('SIGHUP');
  await within(5000, (async () => {
    while (!/event=reload_failed/.test(d.stderr)) await sleep(20);
  })(), 'reload failure');
  assert.match(d.stderr, /at least 16 characters/);
  r = await request(d.port, 'GET', '/metrics', { headers: bearer(NEW_TOKEN) });
  assert.equal(r.status, 200, 'the previous tokens stay in force');
  assert.equal(d.exited, null);
});
