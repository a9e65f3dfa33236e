// Integration: the build's own promises — configure names a missing
// package, make install lays out binary, config and systemd files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, tempDir } from './lib/harness.mjs';

test('configure prints the exact apt-get line for a missing library', (t) => {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  // A pkg-config that has never heard of inih.
  const fake = path.join(dir, 'pkg-config');
  writeFileSync(fake, '#!/bin/sh\ncase "$*" in *inih*) exit 1 ;; esac\nexec pkg-config "$@"\n');
  chmodSync(fake, 0o755);
  const before = readFileSync(path.join(ROOT, 'config.mk'), 'utf8');
  const r = spawnSync('./configure', ['--no-install'], {
    cwd: ROOT, encoding: 'utf8', env: { ...process.env, PKG_CONFIG: fake }, timeout: 60000,
  });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /missing dependencies/);
  assert.match(r.stderr, /^ {4}apt-get install -y libinih-dev$/m);
  assert.equal(readFileSync(path.join(ROOT, 'config.mk'), 'utf8'), before, 'a failed configure leaves config.mk alone');
});

test('make install with PREFIX and DESTDIR', (t) => {
  const dest = tempDir();
  t.after(() => rmSync(dest, { recursive: true, force: true }));
  const args = ['-s', 'install', `DESTDIR=${dest}`, 'PREFIX=/usr'];
  if (process.env.SANITIZE) args.push(`SANITIZE=${process.env.SANITIZE}`);
  const r = spawnSync('make', args, { cwd: ROOT, encoding: 'utf8', timeout: 300000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const bin = path.join(dest, 'usr/bin/dosqld');
  assert.ok(statSync(bin).mode & 0o111, 'the binary is executable');
  const v = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  assert.match(v.stdout, /^dosqld /);
  assert.equal(readFileSync(path.join(dest, 'etc/dosqld/dosqld.conf'), 'utf8'),
    readFileSync(path.join(ROOT, 'conf/dosqld.conf'), 'utf8'));
  const unit = readFileSync(path.join(dest, 'usr/lib/systemd/system/dosqld.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/dosqld -c \/etc\/dosqld\/dosqld\.conf --data-dir \/var\/lib\/dosqld$/m);
  assert.doesNotMatch(unit, /@[A-Z]+@/, 'every placeholder is filled');
  assert.ok(existsSync(path.join(dest, 'usr/lib/sysusers.d/dosqld.conf')));
  assert.ok(existsSync(path.join(dest, 'usr/lib/tmpfiles.d/dosqld.conf')));
  // A second install keeps an edited configuration.
  writeFileSync(path.join(dest, 'etc/dosqld/dosqld.conf'), '[log]\nlevel = warn\n');
  const again = spawnSync('make', args, { cwd: ROOT, encoding: 'utf8', timeout: 300000 });
  assert.equal(again.status, 0);
  assert.equal(readFileSync(path.join(dest, 'etc/dosqld/dosqld.conf'), 'utf8'), '[log]\nlevel = warn\n');
});
