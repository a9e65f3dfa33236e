// harness — start a real dosqld on a free loopback port, and talk to it
// over raw sockets (HTTP/1.1 and WebSocket frames) where a client library
// would hide what a test needs to see.
//
// Every wait is bounded: a test that hangs fails with a timeout instead.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { tmpdir } from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';

export const ROOT = path.resolve(new URL('../../..', import.meta.url).pathname);
export const BUILD = process.env.DSQ_BUILD ?? path.join(ROOT, 'build');
export const DOSQLD = process.env.DOSQLD ?? path.join(BUILD, 'dosqld');

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// LD_PRELOAD for tests/tools/syncshim.so (fsync logging and failure); a
// sanitizer build needs its runtime first in the list.
export function syncShimPreload() {
  const shim = path.join(BUILD, 'tests/tools/syncshim.so');
  const ldd = execFileSync('ldd', [DOSQLD]).toString();
  const asan = ldd.match(/libasan\.so\S* => (\S+)/);
  return asan ? `${asan[1]}:${shim}` : shim;
}

// A ThreadSanitizer build gets tests/tsan.supp (the descriptor-number
// reports libuv's raw close causes), unless TSAN_OPTIONS says otherwise.
let tsan;
function tsanEnv() {
  if (tsan === undefined) {
    const linked = /libtsan\.so/.test(execFileSync('ldd', [DOSQLD]).toString());
    tsan = linked && !process.env.TSAN_OPTIONS ? { TSAN_OPTIONS: `suppressions=${path.join(ROOT, 'tests/tsan.supp')}` } : {};
  }
  return tsan;
}

// Resolve `promise` or fail after `ms` with `what` in the message.
export function within(ms, promise, what = 'operation') {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} did not finish in ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

export function tempDir(prefix = 'dosqld-it-') {
  return mkdtempSync(path.join(tmpdir(), prefix));
}

// Start dosqld. `conf` is the config file's text; `args` more flags. By
// default it listens on 127.0.0.1:0 (a free port) and waits for as many
// "listening" lines as it has listeners (`listeners`). `dataDir` (default:
// inside the temporary directory; d.dataDir either way) outlives cleanup
// when given: a daemon started again on d.dataDir has d's data. `nofile`:
// run it under that descriptor limit, soft and hard (sh's ulimit -n), so
// that it cannot raise it.
export async function startDosqld({ conf = '', args = [], listeners = 1, env = {}, listen = true, dataDir, nofile } = {}) {
  const dir = tempDir();
  const confPath = path.join(dir, 'dosqld.conf');
  writeFileSync(confPath, conf);
  const dataPath = dataDir ?? path.join(dir, 'data');
  const argv = ['-c', confPath, '--data-dir', dataPath];
  if (listen) argv.push('--listen', '127.0.0.1:0');
  argv.push(...args);
  const [cmd, cmdArgs] = nofile === undefined
    ? [DOSQLD, argv]
    : ['/bin/sh', ['-c', `ulimit -n ${Number(nofile)} && exec "$0" "$@"`, DOSQLD, ...argv]];
  const proc = spawn(cmd, cmdArgs, { env: { ...process.env, ...tsanEnv(), ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const d = {
    proc, dir, confPath, dataDir: dataPath, addrs: [], stderr: '', stdout: '',
    exited: null,
  };
  d.exit = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      d.exited = { code, signal };
      resolve(d.exited);
    });
  });
  proc.stdout.on('data', (b) => { d.stdout += b; });
  await within(10000, new Promise((resolve, reject) => {
    proc.stderr.on('data', (b) => {
      d.stderr += b;
      for (const m of d.stderr.matchAll(/event=listening addr=(\S+) tls=(yes|no)/g)) {
        const [host, port] = [m[1].slice(0, m[1].lastIndexOf(':')), Number(m[1].slice(m[1].lastIndexOf(':') + 1))];
        if (!d.addrs.some((a) => a.port === port)) d.addrs.push({ host, port, tls: m[2] === 'yes' });
      }
      if (d.addrs.length >= listeners) resolve();
    });
    // 'close' comes after the output is read ('exit' may come first).
    proc.on('close', () => {
      if (d.exited) reject(new Error(`dosqld exited (${JSON.stringify(d.exited)}) before listening:\n${d.stderr}`));
    });
  }), 'dosqld start');
  d.port = d.addrs.find((a) => !a.tls)?.port;
  d.tlsPort = d.addrs.find((a) => a.tls)?.port;
  d.url = `http://127.0.0.1:${d.port}`;
  // Stop with a signal; resolves to { code, signal }. Kills after `ms`.
  d.stop = async (sig = 'SIGTERM', ms = 15000) => {
    if (!d.exited) proc.kill(sig);
    const timer = setTimeout(() => proc.kill('SIGKILL'), ms);
    const e = await d.exit;
    clearTimeout(timer);
    return e;
  };
  // End the daemon the way an operator would and hold it to a clean exit:
  // status 0 and nothing from a sanitizer (leaks, undefined behaviour).
  d.cleanup = async () => {
    const wasRunning = !d.exited;
    const e = await d.stop('SIGTERM', 15000);
    rmSync(dir, { recursive: true, force: true });
    const report = /(AddressSanitizer|LeakSanitizer|ThreadSanitizer|UndefinedBehaviorSanitizer|runtime error:)[^\n]*/.exec(d.stderr);
    if (report) throw new Error(`sanitizer report from dosqld: ${report[0]}\n${d.stderr.slice(-4000)}`);
    if (wasRunning && (e.code !== 0 || e.signal !== null)) {
      throw new Error(`dosqld did not exit cleanly: ${JSON.stringify(e)}\n${d.stderr.slice(-2000)}`);
    }
  };
  return d;
}

// Run dosqld to completion (for --version, --check-config, refusals).
export function runDosqld(args, { timeoutMs = 10000 } = {}) {
  return within(timeoutMs, new Promise((resolve) => {
    const p = spawn(DOSQLD, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '', err = '';
    p.stdout.on('data', (b) => { out += b; });
    p.stderr.on('data', (b) => { err += b; });
    p.on('exit', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  }), `dosqld ${args.join(' ')}`);
}

// ---- raw connections ------------------------------------------------------

export class Raw {
  static connect(port, { secure = false, tlsOptions = {} } = {}) {
    return within(5000, new Promise((resolve, reject) => {
      const sock = secure
        ? tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...tlsOptions })
        : net.connect({ host: '127.0.0.1', port });
      sock.once(secure ? 'secureConnect' : 'connect', () => resolve(new Raw(sock)));
      sock.once('error', reject);
    }), 'connect');
  }

  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.closed = false;
    this.error = null;
    this.waiters = new Set();
    sock.on('data', (d) => { this.buf = Buffer.concat([this.buf, d]); this.wake(); });
    sock.on('close', () => { this.closed = true; this.wake(); });
    sock.on('end', () => { this.ended = true; this.wake(); });
    sock.on('error', (e) => { this.error = e; this.wake(); });
  }

  wake() { for (const w of this.waiters) w(); }

  write(data) { this.sock.write(data); }

  // Wait until pred() is true (checked on every event). Rejects on timeout.
  waitFor(pred, ms = 5000, what = 'condition') {
    if (pred()) return Promise.resolve();
    let w;
    return within(ms, new Promise((resolve) => {
      w = () => { if (pred()) resolve(); };
      this.waiters.add(w);
    }), what).finally(() => this.waiters.delete(w));
  }

  // Wait for the peer to close (FIN or reset); resolves to the unread bytes.
  async readClose(ms = 5000) {
    await this.waitFor(() => this.closed || this.ended, ms, 'connection close');
    return this.buf;
  }

  // Read one HTTP/1.1 response. `head: true` for a HEAD request (no body).
  async readResponse({ ms = 5000, head = false } = {}) {
    let res;
    await this.waitFor(() => {
      res = parseResponse(this.buf, head);
      return res !== null || this.closed || this.ended;
    }, ms, 'HTTP response');
    if (res === null) throw new Error(`connection closed before a whole response: ${JSON.stringify(this.buf.toString('latin1'))}`);
    this.buf = this.buf.subarray(res.size);
    return res;
  }

  end() { this.sock.end(); }
  destroy() { this.sock.destroy(); }
}

// Parse one response from `buf`, or null if it is not complete yet.
export function parseResponse(buf, head = false) {
  const end = buf.indexOf('\r\n\r\n');
  if (end < 0) return null;
  const lines = buf.subarray(0, end).toString('latin1').split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(lines[0]);
  if (!m) throw new Error(`bad status line: ${lines[0]}`);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    headers[l.slice(0, i).toLowerCase()] = l.slice(i + 1).trim();
  }
  const status = Number(m[1]);
  let pos = end + 4;
  let body = Buffer.alloc(0);
  if (status >= 200 && status !== 204 && status !== 304 && !head) {
    if (headers['transfer-encoding'] === 'chunked') {
      const parts = [];
      for (;;) {
        const le = buf.indexOf('\r\n', pos);
        if (le < 0) return null;
        const n = parseInt(buf.subarray(pos, le).toString(), 16);
        if (buf.length < le + 2 + n + 2) return null;
        parts.push(buf.subarray(le + 2, le + 2 + n));
        pos = le + 2 + n + 2;
        if (n === 0) break;
      }
      body = Buffer.concat(parts);
    } else if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      if (buf.length < pos + n) return null;
      body = buf.subarray(pos, pos + n);
      pos += n;
    }
  }
  const text = body.toString('utf8');
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status, reason: m[2], headers, body, text, json, size: pos };
}

// One request on a fresh connection; resolves to the parsed response.
export async function request(port, method, target, { headers = {}, body, secure = false } = {}) {
  const c = await Raw.connect(port, { secure });
  try {
    const b = body === undefined ? null : Buffer.from(body);
    let h = `${method} ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
    for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
    if (b) h += `Content-Length: ${b.length}\r\n`;
    c.write(h + '\r\n');
    if (b) c.write(b);
    return await c.readResponse({ head: method === 'HEAD' });
  } finally {
    c.destroy();
  }
}

// Fetch /metrics and return the value of one sample (0 when absent).
export async function metric(port, sample, headers = {}) {
  const r = await request(port, 'GET', '/metrics', { headers });
  for (const line of r.text.split('\n')) {
    if (line.startsWith(sample + ' ')) return Number(line.slice(sample.length + 1));
  }
  return 0;
}

// ---- WebSocket frames (client side: masked) ----------------------------------

export function wsFrame(opcode, payload = Buffer.alloc(0), { fin = true, mask = true, rsv = 0 } = {}) {
  const p = Buffer.from(payload);
  const head = [(fin ? 0x80 : 0) | (rsv << 4) | opcode];
  const m = mask ? 0x80 : 0;
  if (p.length < 126) head.push(m | p.length);
  else if (p.length < 65536) head.push(m | 126, p.length >> 8, p.length & 0xff);
  else {
    head.push(m | 127);
    const l = BigInt(p.length);
    for (let i = 7; i >= 0; i--) head.push(Number((l >> BigInt(8 * i)) & 0xffn));
  }
  if (!mask) return Buffer.concat([Buffer.from(head), p]);
  const key = crypto.randomBytes(4);
  const out = Buffer.alloc(p.length);
  for (let i = 0; i < p.length; i++) out[i] = p[i] ^ key[i % 4];
  return Buffer.concat([Buffer.from(head), key, out]);
}

// Parse server frames from the front of `buf`: [{opcode, payload, fin}], rest.
export function wsParse(buf) {
  const frames = [];
  let o = 0;
  while (buf.length - o >= 2) {
    const fin = (buf[o] & 0x80) !== 0;
    const opcode = buf[o] & 0x0f;
    let len = buf[o + 1] & 0x7f;
    let h = 2;
    if (len === 126) { if (buf.length - o < 4) break; len = buf.readUInt16BE(o + 2); h = 4; }
    else if (len === 127) { if (buf.length - o < 10) break; len = Number(buf.readBigUInt64BE(o + 2)); h = 10; }
    if (buf.length - o < h + len) break;
    frames.push({ fin, opcode, payload: buf.subarray(o + h, o + h + len) });
    o += h + len;
  }
  return { frames, rest: buf.subarray(o) };
}

// Open a WebSocket over a raw connection: send the upgrade, read the 101.
export async function wsRaw(port, target = '/v1/rpc', { headers = {} } = {}) {
  const c = await Raw.connect(port);
  let h = `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n`;
  for (const [k, v] of Object.entries(headers)) h += `${k}: ${v}\r\n`;
  c.write(h + '\r\n');
  const res = await c.readResponse();
  c.upgrade = res;
  return c;
}

// Read server frames from a raw WebSocket until pred(frames) holds.
export async function wsReadUntil(c, pred, ms = 5000) {
  let frames = [];
  await c.waitFor(() => {
    const r = wsParse(c.buf);
    frames = r.frames;
    return pred(frames) || c.closed || c.ended;
  }, ms, 'WebSocket frames');
  return frames;
}

export function closeCode(frame) {
  return frame.payload.length >= 2 ? frame.payload.readUInt16BE(0) : 1005;
}
