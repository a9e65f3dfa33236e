// s3 — start the tests' S3-compatible server (lib/s3server.mjs: s3rver
// behind a proxy that checks SigV4 signatures and injects faults) on a
// free loopback port. Every wait is bounded.
import { spawn } from 'node:child_process';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { tempDir, within } from './harness.mjs';

export const S3_KEY = 'dsqtestkey';
export const S3_SECRET = 'dsqtestsecret';

export async function startS3({ bucket = 'dsq-test' } = {}) {
  const dir = tempDir('dosqld-s3-');
  const script = path.join(path.dirname(new URL(import.meta.url).pathname), 's3server.mjs');
  const child = spawn(process.execPath, ['--openssl-legacy-provider', script, dir, bucket, S3_KEY, S3_SECRET],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr.on('data', (d) => { err += d; });
  const line = await within(20000, new Promise((resolve, reject) => {
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
      const i = out.indexOf('\n');
      if (i >= 0) resolve(out.slice(0, i));
    });
    child.on('exit', (code) => reject(new Error(`s3server exited ${code}: ${err}`)));
  }), 's3server start');
  const { port } = JSON.parse(line);
  const endpoint = `http://127.0.0.1:${port}`;
  const ctl = async (p, body) => {
    const res = await fetch(`${endpoint}${p}`, body ? { method: 'POST', body: JSON.stringify(body) } : {});
    return res.json();
  };
  return {
    port,
    endpoint,
    bucket,
    key: S3_KEY,
    secret: S3_SECRET,
    // Fault injection for the next `count` requests (see s3server.mjs).
    fault: (mode, { count = 1, delayMs, match, path } = {}) => ctl('/__fault', { mode, count, delayMs, match, path }),
    stats: () => ctl('/__stats'),
    resetStats: () => ctl('/__stats', {}),
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await within(10000, new Promise((r) => child.on('exit', r)), 's3server stop').catch(() => child.kill('SIGKILL'));
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
