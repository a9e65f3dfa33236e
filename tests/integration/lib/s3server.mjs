// tests/integration/lib/s3server.mjs — an S3-compatible server for the
// tests: s3rver (npm) behind a proxy of ours on 127.0.0.1.
//
//   node --openssl-legacy-provider s3server.mjs DIR BUCKET KEY SECRET
//
// Prints one JSON line {"port": P} (the proxy's) when ready; runs until
// SIGTERM. s3rver keeps the objects; it does not check SigV4 signatures,
// conditional puts, or hash the payload, so the proxy does, before it
// forwards a request:
// - every request must carry a valid AWS SigV4 Authorization for KEY and
//   SECRET (region any, service s3): 403 SignatureDoesNotMatch otherwise;
// - x-amz-content-sha256 must be the SHA-256 of the body received
//   (XAmzContentSHA256Mismatch otherwise);
// - PUT with If-None-Match: * on an existing key: 412 PreconditionFailed;
// - Host BUCKET.localhost:P (virtual-host style) is mapped to path style.
// It also injects faults on request: POST /__fault with JSON
// {mode: "500"|"slow"|"truncate"|"corrupt"|"drop"|"down", count: N,
// delayMs: ms, match: "GET"|"PUT"|..., path: a RegExp of the path}: the
// next N matching requests
// answer 500, wait delayMs first, send half their body then cut the
// connection, answer with one byte of the body changed, or are cut without
// an answer; "down" refuses connections (the listener closed) for delayMs. GET /__stats gives {requests, byMethod, rejected, faults}.
// (--openssl-legacy-provider: s3rver makes its list continuation tokens
// with DES, which OpenSSL 3 refuses otherwise.)
import crypto from 'node:crypto';
import http from 'node:http';
import S3rver from 's3rver';

const [, , dir, bucket, accessKey, secretKey] = process.argv;

const s3 = new S3rver({ address: '127.0.0.1', port: 0, silent: true, directory: dir,
  configureBuckets: [{ name: bucket }] });
const { port: s3port } = await s3.run();

const stats = { requests: 0, byMethod: {}, rejected: 0, faults: 0, inflight: 0, maxInflight: 0 };
let fault = null;

const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');
const hmac = (k, s) => crypto.createHmac('sha256', k).update(s).digest();
const enc = (s) => encodeURIComponent(s).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());

function xmlError(res, status, code, message) {
  res.writeHead(status, { 'content-type': 'application/xml' });
  res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`);
}

// The SigV4 check, from the request as it arrived: null if it holds, else why.
function verify(req, rawPath, rawQuery, body) {
  const auth = req.headers.authorization || '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return ['AccessDenied', 'no or malformed AWS4-HMAC-SHA256 authorization'];
  const [, key, date, region, service, signedHeaders, signature] = m;
  if (key !== accessKey) return ['InvalidAccessKeyId', `unknown access key ${key}`];
  if (service !== 's3') return ['SignatureDoesNotMatch', `service ${service}`];
  const amzDate = req.headers['x-amz-date'];
  if (!amzDate || !amzDate.startsWith(date)) return ['AccessDenied', 'x-amz-date missing or not of the credential date'];
  const names = signedHeaders.split(';');
  if (!names.includes('host')) return ['SignatureDoesNotMatch', 'host is not signed'];
  const payload = req.headers['x-amz-content-sha256'];
  if (!payload) return ['InvalidRequest', 'missing x-amz-content-sha256'];
  if (payload !== 'UNSIGNED-PAYLOAD' && payload !== sha256(body)) {
    return ['XAmzContentSHA256Mismatch', 'the body is not what x-amz-content-sha256 says'];
  }
  const query = rawQuery === '' ? [] : rawQuery.split('&').map((kv) => {
    const i = kv.indexOf('=');
    const k = decodeURIComponent(i < 0 ? kv : kv.slice(0, i));
    const v = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1).replace(/\+/g, '%20'));
    return [enc(k), enc(v)];
  }).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0));
  const canonical = [
    req.method,
    rawPath,
    query.map(([k, v]) => `${k}=${v}`).join('&'),
    names.map((n) => `${n}:${String(req.headers[n] ?? '').trim().replace(/\s+/g, ' ')}\n`).join(''),
    signedHeaders,
    payload,
  ].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256(canonical)].join('\n');
  let k = hmac('AWS4' + secretKey, date);
  k = hmac(k, region);
  k = hmac(k, service);
  k = hmac(k, 'aws4_request');
  const want = hmac(k, toSign).toString('hex');
  if (want !== signature) return ['SignatureDoesNotMatch', 'the request signature we calculated does not match the signature you provided'];
  return null;
}

function forward(method, path, headers, body) {
  return new Promise((resolve, reject) => {
    const h = { ...headers };
    delete h.authorization; // s3rver takes anonymous requests as they are
    delete h['x-amz-content-sha256'];
    delete h['x-amz-date'];
    h.host = `127.0.0.1:${s3port}`;
    const r = http.request({ host: '127.0.0.1', port: s3port, method, path, headers: h }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    r.on('error', reject);
    r.end(body);
  });
}

function takeFault(method, rawPath) {
  if (!fault || fault.count <= 0 || (fault.match && fault.match !== method)) return null;
  if (fault.path && !new RegExp(fault.path).test(rawPath)) return null;
  fault.count--;
  stats.faults++;
  return fault;
}

async function handle(req, res) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const body = Buffer.concat(chunks);
  const [rawPath0, rawQuery = ''] = req.url.split(/\?(.*)/s);
  if (rawPath0 === '/__fault') {
    fault = JSON.parse(body.toString() || '{}');
    res.end('{}');
    if (fault.mode === 'down') {
      server.close();
      for (const s of sockets) s.destroy();
      setTimeout(() => { server.listen(proxyPort, '127.0.0.1'); fault = null; }, fault.delayMs || 1000);
    }
    return;
  }
  if (rawPath0 === '/__stats') {
    if (req.method === 'POST') stats.maxInflight = 0;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats));
    return;
  }
  stats.requests++;
  stats.byMethod[req.method] = (stats.byMethod[req.method] || 0) + 1;
  const why = verify(req, rawPath0, rawQuery, body);
  if (why) {
    stats.rejected++;
    xmlError(res, 403, why[0], why[1]);
    return;
  }
  // Virtual-host style: BUCKET.localhost[:port] names the bucket.
  const host = String(req.headers.host || '').split(':')[0];
  let rawPath = rawPath0;
  if (host.endsWith('.localhost')) rawPath = '/' + host.slice(0, -'.localhost'.length) + rawPath0;
  const f = takeFault(req.method, rawPath);
  if (f?.mode === '500') return xmlError(res, 500, 'InternalError', 'injected');
  if (f?.mode === 'drop') return req.socket.destroy();
  if (f?.mode === 'slow') await new Promise((r) => setTimeout(r, f.delayMs || 1000));
  const path = rawPath + (rawQuery ? '?' + rawQuery : '');
  if (req.method === 'PUT' && req.headers['if-none-match'] === '*') {
    const head = await forward('HEAD', rawPath, {}, Buffer.alloc(0));
    if (head.status === 200) return xmlError(res, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
  }
  const out = await forward(req.method, path, req.headers, body);
  const headers = { ...out.headers };
  delete headers['transfer-encoding'];
  delete headers.connection;
  if (f?.mode === 'truncate' && out.body.length > 1) {
    headers['content-length'] = String(out.body.length);
    res.writeHead(out.status, headers);
    res.write(out.body.subarray(0, out.body.length >> 1), () => req.socket.destroy());
    return;
  }
  if (f?.mode === 'corrupt' && out.body.length > 0) out.body[out.body.length >> 1] ^= 0x20;
  res.writeHead(out.status, headers);
  res.end(req.method === 'HEAD' ? undefined : out.body);
}

const sockets = new Set();
const server = http.createServer((req, res) => {
  if (!req.url.startsWith('/__')) {
    stats.inflight++;
    stats.maxInflight = Math.max(stats.maxInflight, stats.inflight);
    res.on('close', () => { stats.inflight--; });
  }
  handle(req, res).catch((e) => { if (!res.headersSent) xmlError(res, 500, 'ProxyError', String(e)); else res.destroy(); });
});
server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
await new Promise((r) => server.listen(0, '127.0.0.1', r));
const proxyPort = server.address().port;
process.stdout.write(JSON.stringify({ port: proxyPort, s3port }) + '\n');
process.on('SIGTERM', async () => {
  server.close();
  for (const s of sockets) s.destroy();
  await s3.close();
  process.exit(0);
});
