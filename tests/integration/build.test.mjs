// Integration: the build's own promises — configure names a missing
// package and builds the daemon without the shell's, the tests' and the
// benchmarks' packages, flags from the command line are added, the daemon is hardened, make install lays out binary, config and systemd files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { ROOT, tempDir } from './lib/harness.mjs';

// configure in a copy of what it reads (so that the tree's config.mk
// stays), with a pkg-config that has never heard of the libraries named
// (and ENV added to the environment, ARGS given to configure).
function configureWithout(t, libs, env = {}, args = []) {
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fake = path.join(dir, 'pkg-config');
  const known = libs.length ? libs.map((l) => `*${l}*`).join('|') : '--no-library-is-missing';
  writeFileSync(fake, `#!/bin/sh\ncase "$*" in ${known}) exit 1 ;; esac\nexec pkg-config "$@"\n`);
  chmodSync(fake, 0o755);
  const tree = path.join(dir, 'tree');
  mkdirSync(path.join(tree, 'tests/fuzz'), { recursive: true });
  for (const f of ['configure', 'VERSION', 'tests/fuzz/toolchain']) copyFileSync(path.join(ROOT, f), path.join(tree, f));
  chmodSync(path.join(tree, 'configure'), 0o755);
  chmodSync(path.join(tree, 'tests/fuzz/toolchain'), 0o755);
  const r = spawnSync('./configure', args, { cwd: tree, encoding: 'utf8', env: { ...process.env, PKG_CONFIG: fake, ...env }, timeout: 60000 });
  const mk = path.join(tree, 'config.mk');
  return { ...r, config: existsSync(mk) ? readFileSync(mk, 'utf8') : null };
}

test('configure fails with the exact apt-get line when a library of the daemon is missing', (t) => {
  const r = configureWithout(t, ['inih']);
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, /the daemon's dependencies are missing/);
  assert.match(r.stderr, /^ {4}apt-get install -y libinih-dev$/m);
  assert.equal(r.config, null, 'a failed configure writes no config.mk');
});

test('the daemon builds without the shell\'s and the tests\' libraries: configure says what they need', (t) => {
  const r = configureWithout(t, ['libedit', 'criterion']);
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.config, /^HAVE_SHELL = no$/m);
  assert.match(r.config, /^HAVE_TESTS = no$/m);
  assert.match(r.stdout, /no shell \(dosql\) without: apt-get install -y libedit-dev/);
  assert.match(r.stdout, /no tests without: apt-get install -y libcriterion-dev/);
});

test('the daemon builds without the benchmarks\' peers: configure says what they need', (t) => {
  const r = configureWithout(t, [], { PGBIN: '/nonexistent' });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.config, /^HAVE_BENCH = no$/m);
  assert.match(r.stdout, /no benchmarks without: apt-get install -y (\S+ )*postgresql\b/);
});

test('configure --missing bench names the benchmarks\' missing packages; the default groups leave them out', (t) => {
  // A PATH of the shell tools configure uses, the benchmarks' peers and
  // tools as stubs, all but wrk, gnuplot and etcd (which the tests use
  // too: named by the default groups as well); PostgreSQL in PGBIN.
  const dir = tempDir();
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const bin = path.join(dir, 'bin');
  const pg = path.join(dir, 'pg');
  mkdirSync(bin);
  mkdirSync(pg);
  for (const tool of ['sh', 'awk', 'tr', 'sed', 'sort', 'tail', 'ls', 'cat', 'mktemp', 'rm']) {
    const p = spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim();
    if (p) symlinkSync(p, path.join(bin, tool));
  }
  const stub = (file) => { writeFileSync(file, '#!/bin/sh\nexit 0\n'); chmodSync(file, 0o755); };
  for (const tool of ['nginx', 'redis-server', 'redis-benchmark', 'redis-cli', 'curl', 'node', 'npm', 'socat', 'sqlite3'])
    stub(path.join(bin, tool));
  for (const tool of ['pgbench', 'initdb']) stub(path.join(pg, tool));
  const env = { PATH: bin, PGBIN: pg };
  const r = configureWithout(t, [], env, ['--missing', 'bench']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, 'wrk gnuplot-nox etcd-server\n');
  assert.equal(r.config, null, '--missing writes nothing');
  const none = configureWithout(t, [], { ...env, PGBIN: '/nonexistent' }, ['--missing', 'bench']);
  assert.equal(none.stdout, 'wrk gnuplot-nox etcd-server postgresql\n');
  const all = configureWithout(t, [], env, ['--missing']);
  assert.equal(all.status, 0, all.stderr);
  assert.doesNotMatch(all.stdout, /wrk|gnuplot/, 'bench is asked for by name');
  assert.match(all.stdout, /\betcd-server\b/, 'the tests\' etcd (not on that PATH), by its Debian package');
  const both = configureWithout(t, [], env, ['--missing', 'shell', 'bench']);
  assert.match(both.stdout, /\bwrk gnuplot-nox etcd-server$/m);
});

test('flags from the command line are added to the build\'s, not put in their place; the daemon is hardened', () => {
  // (Into a build directory of its own, which make -n leaves empty.)
  // (The plain build's flags, also when the suite runs on a sanitizer
  // build, which leaves _FORTIFY_SOURCE out.)
  const r = spawnSync('make', ['-n', 'SANITIZE=', 'B=build-flagcheck', 'CFLAGS=-O1', 'LDFLAGS=-Wl,--as-needed',
    'build-flagcheck/obj/common/util.o', 'build-flagcheck/dosqld'], { cwd: ROOT, encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stderr);
  const cc = r.stdout.split('\n').find((l) => l.includes('-c -o build-flagcheck/obj/common/util.o'));
  for (const flag of ['-g', '-MMD', '-Wall', '-Wextra', '-fstack-protector-strong', '-D_FORTIFY_SOURCE=2', '-O1'])
    assert.ok(cc.split(/\s+/).includes(flag), `${flag} in: ${cc}`);
  assert.ok(cc.indexOf(' -O1') > cc.indexOf(' -O2'), 'the user\'s -O1 comes last, so it wins');
  const ld = r.stdout.split('\n').find((l) => l.includes('-o build-flagcheck/dosqld '));
  for (const flag of ['-pie', '-Wl,-z,relro,-z,now', '-Wl,--as-needed'])
    assert.ok(ld.split(/\s+/).includes(flag), `${flag} in: ${ld}`);
  // The daemon the tests run: a position-independent executable, its
  // relocations read-only after start.
  const dosqld = path.join(ROOT, 'build/dosqld');
  if (!existsSync(dosqld)) return;
  const h = spawnSync('readelf', ['-h', '-d', '-l', '-W', dosqld], { encoding: 'utf8' }).stdout;
  assert.match(h, /Type:\s+DYN/);
  assert.match(h, /BIND_NOW/);
  assert.match(h, /GNU_RELRO/);
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

// The unit runs as user dosqld (group dosqld): the configuration it is
// started with must be readable by it, and by no one else (it may hold
// tokens and object-store keys). Needs root: it makes the dosqld user if
// this machine has none (and removes it after), installs, and runs
// dosqld as that user.
test('the installed configuration is readable by the service user, and only by it', (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root: makes the dosqld user and runs as it');
    return;
  }
  const sh = (cmd, args) => spawnSync(cmd, args, { encoding: 'utf8', timeout: 30000 });
  const id = (what) => {
    const r = sh('getent', [what, 'dosqld']);
    return r.status === 0 ? Number(r.stdout.split(':')[2]) : null;
  };
  const madeGroup = id('group') === null;
  const madeUser = id('passwd') === null;
  if (madeUser) {
    const r = sh('useradd', ['--system', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin',
      ...(madeGroup ? ['--user-group'] : ['--gid', 'dosqld']), 'dosqld']);
    assert.equal(r.status, 0, r.stderr);
  } else if (madeGroup) {
    const r = sh('groupadd', ['--system', 'dosqld']);
    assert.equal(r.status, 0, r.stderr);
  }
  t.after(() => {
    if (madeUser) sh('userdel', ['dosqld']);
    if (madeGroup && id('group') !== null) sh('groupdel', ['dosqld']);
  });
  const uid = id('passwd');
  const gid = id('group');
  assert.ok(uid !== null && gid !== null);

  const dest = tempDir();
  t.after(() => rmSync(dest, { recursive: true, force: true }));
  chmodSync(dest, 0o755); // the service user walks in, as it would walk /
  const args = ['-s', 'install', `DESTDIR=${dest}`, 'PREFIX=/usr'];
  if (process.env.SANITIZE) args.push(`SANITIZE=${process.env.SANITIZE}`);
  const r = spawnSync('make', args, { cwd: ROOT, encoding: 'utf8', timeout: 300000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const conf = path.join(dest, 'etc/dosqld/dosqld.conf');
  const st = statSync(conf);
  assert.equal(st.mode & 0o777, 0o640, 'the configuration may hold secrets: no one else reads it');
  assert.equal(st.uid, 0);
  assert.equal(st.gid, gid, 'the configuration belongs to group dosqld');
  const dir = statSync(path.dirname(conf));
  assert.equal(dir.mode & 0o777, 0o750);
  assert.equal(dir.gid, gid);

  // As the unit runs it: User=dosqld, Group=dosqld, no other groups.
  const as = (cmd, ...rest) => sh('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', cmd, ...rest]);
  const cat = as('cat', conf);
  assert.equal(cat.status, 0, cat.stderr);
  assert.equal(cat.stdout, readFileSync(path.join(ROOT, 'conf/dosqld.conf'), 'utf8'));
  const check = as(path.join(dest, 'usr/bin/dosqld'), '--check-config', '-c', conf);
  assert.equal(check.status, 0, check.stdout + check.stderr);
  assert.equal(check.stdout, `configuration ok: ${conf}\n`);
  // Anyone else is kept out.
  const nobody = sh('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'cat', conf]);
  assert.notEqual(nobody.status, 0, 'a user outside the group cannot read it');

  // The tmpfiles snippet keeps it so on a system where the install came
  // before the group (fills in the configuration directory).
  const tmpfiles = readFileSync(path.join(dest, 'usr/lib/tmpfiles.d/dosqld.conf'), 'utf8');
  assert.match(tmpfiles, /^d \/etc\/dosqld 0750 root dosqld -$/m);
  assert.match(tmpfiles, /^z \/etc\/dosqld\/dosqld\.conf 0640 root dosqld -$/m);
});

// Staged with DESTDIR on a machine without the group, the files are
// root's; systemd-tmpfiles (at boot, or --create after systemd-sysusers)
// gives the configuration to the group. Run against the staged tree as
// its root, with its own passwd and group files, so the host is left alone.
test('a staged install gets its configuration group from the tmpfiles snippet', (t) => {
  if (process.getuid?.() !== 0) {
    t.skip('needs root: changes ownership and runs as another user');
    return;
  }
  if (spawnSync('systemd-tmpfiles', ['--version']).status !== 0) {
    t.skip('no systemd-tmpfiles here');
    return;
  }
  const dest = tempDir();
  t.after(() => rmSync(dest, { recursive: true, force: true }));
  chmodSync(dest, 0o755);
  const args = ['-s', 'install', `DESTDIR=${dest}`, 'PREFIX=/usr'];
  if (process.env.SANITIZE) args.push(`SANITIZE=${process.env.SANITIZE}`);
  const r = spawnSync('make', args, { cwd: ROOT, encoding: 'utf8', timeout: 300000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  // Ids no account of the host has: the staged system's dosqld.
  const uid = 64991, gid = 64992;
  writeFileSync(path.join(dest, 'etc/passwd'), `root:x:0:0::/root:/bin/sh\ndosqld:x:${uid}:${gid}::/nonexistent:/usr/sbin/nologin\n`);
  writeFileSync(path.join(dest, 'etc/group'), `root:x:0:\ndosqld:x:${gid}:\n`);
  const conf = path.join(dest, 'etc/dosqld/dosqld.conf');
  const as = () => spawnSync('setpriv', [`--reuid=${uid}`, `--regid=${gid}`, '--clear-groups', 'cat', conf], { encoding: 'utf8' });
  assert.notEqual(as().status, 0, 'before systemd-tmpfiles the staged system\'s dosqld cannot read it');
  const tf = spawnSync('systemd-tmpfiles', ['--create', `--root=${dest}`, path.join(dest, 'usr/lib/tmpfiles.d/dosqld.conf')],
    { encoding: 'utf8', timeout: 30000 });
  assert.equal(tf.status, 0, tf.stderr);
  const st = statSync(conf);
  assert.deepEqual([st.mode & 0o777, st.uid, st.gid], [0o640, 0, gid]);
  const read = as();
  assert.equal(read.status, 0, read.stderr);
  assert.equal(read.stdout, readFileSync(path.join(ROOT, 'conf/dosqld.conf'), 'utf8'));
  assert.equal(statSync(path.join(dest, 'var/lib/dosqld')).uid, uid, 'the state directory is the service\'s');
});

test('make run takes PORT= and DATA=: the daemon listens there with that data directory', () => {
  const r = spawnSync('make', ['-n', 'run', 'PORT=9123', 'DATA=/tmp/dosqld data'], { cwd: ROOT, encoding: 'utf8', timeout: 60000 });
  assert.equal(r.status, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /--listen 127\.0\.0\.1:9123 --data-dir '\/tmp\/dosqld data'/);
  assert.match(r.stdout, /mkdir -p '\/tmp\/dosqld data'/);
  const d = spawnSync('make', ['-n', 'run'], { cwd: ROOT, encoding: 'utf8', timeout: 60000, env: { ...process.env, PORT: '', DATA: '' } });
  assert.match(d.stdout, /--listen 127\.0\.0\.1:8787 --data-dir '\.\/data'/);
});
