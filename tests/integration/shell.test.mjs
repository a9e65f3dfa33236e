// Integration: the dosql shell (client/) against a real dosqld — scripts on
// stdin, -c with table, JSON and CSV output, transactions through
// JSON-RPC, errors and exit statuses, dot commands, DOSQL_URL and
// DOSQL_TOKEN, and (when util-linux `script` is there) the prompts of an
// interactive session.
//
// Every run of the shell is bounded; its stderr must hold no sanitizer
// report (the SANITIZE builds run this file too).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import path from 'node:path';
import { BUILD, startDosqld, tempDir, within } from './lib/harness.mjs';

const DOSQL = path.join(BUILD, 'dosql');
const SECRET = 'shell-test-secret-0123456'; // 24+ characters
const SANITIZER = /(AddressSanitizer|LeakSanitizer|UndefinedBehaviorSanitizer|runtime error:)[^\n]*/;

let d, da; // open daemon; daemon with a token
before(async () => {
  [d, da] = await Promise.all([
    startDosqld(),
    startDosqld({ conf: `[auth]\ntoken = ${SECRET} admin\n` }),
  ]);
});
after(async () => {
  await Promise.all([d?.cleanup(), da?.cleanup()]);
});

// Run the shell to completion: resolves to { code, signal, stdout, stderr }.
// DOSQL_URL and DOSQL_TOKEN come only from `env`, never from the caller's
// environment. Killed (and failed) after `ms`.
function dosql(args, { input = '', env = {}, ms = 15000, cmd = DOSQL } = {}) {
  const e = { ...process.env };
  delete e.DOSQL_URL;
  delete e.DOSQL_TOKEN;
  Object.assign(e, env);
  const p = spawn(cmd, args, { env: e, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '', stderr = '';
  p.stdout.on('data', (b) => { stdout += b; });
  p.stderr.on('data', (b) => { stderr += b; });
  p.stdin.on('error', () => {}); // the shell may exit before reading it all
  p.stdin.end(input);
  const done = new Promise((resolve) => {
    p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return within(ms, done, `dosql ${args.join(' ')}`)
    .catch((err) => { p.kill('SIGKILL'); throw err; })
    .then((r) => {
      const report = SANITIZER.exec(r.stderr) ?? SANITIZER.exec(r.stdout);
      if (report) throw new Error(`sanitizer report from dosql: ${report[0]}\n${r.stderr.slice(-4000)}`);
      return r;
    });
}

// The canonical URL of database `db` on daemon `x`.
const dbUrl = (x, db) => `${x.url}/v1/db/${db}`;

test('a script on stdin: quotes, comments and a trigger body keep their semicolons', async () => {
  const script = `-- a comment; not a statement
CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT);
CREATE TABLE log(msg TEXT);
INSERT INTO t(name) VALUES ('a;b'), ('it''s; "x"'); /* a ; in a comment */
CREATE TRIGGER t_ai AFTER INSERT ON t
BEGIN
  INSERT INTO log VALUES ('added; ' || new.name);
  INSERT INTO log VALUES ('two');
END;
INSERT INTO t(name) VALUES ('c'); SELECT * FROM t;
SELECT msg FROM log
`;
  const r = await dosql([dbUrl(d, 'script')], { input: script });
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, [
    'OK, 0 rows affected',
    'OK, 0 rows affected',
    'OK, 2 rows affected',
    'OK, 0 rows affected',
    'OK, 1 row affected',
    ' id | name',
    '----+-----------',
    '  1 | a;b',
    "  2 | it's; \"x\"",
    '  3 | c',
    '(3 rows)',
    ' msg',
    '----------',
    ' added; c',
    ' two',
    '(2 rows)',
    '',
  ].join('\n'));
});

test('values: NULL, blobs as hex, bigints as digits, REALs, an empty result', async () => {
  const r = await dosql([dbUrl(d, 'values'), '-c',
    "SELECT NULL AS n, x'00ff10' AS b, 9223372036854775807 AS big, 2.0 AS r, 0.1 AS f, 'é' AS u;" +
    'SELECT 1 AS one WHERE 0']);
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, [
    ' n    | b         | big                 | r   | f   | u',
    '------+-----------+---------------------+-----+-----+---',
    " NULL | x'00ff10' | 9223372036854775807 | 2.0 | 0.1 | é",
    '(1 row)',
    ' one',
    '-----',
    '(0 rows)',
    '',
  ].join('\n'));
});

test('-c with --json and --csv', async () => {
  const url = dbUrl(d, 'formats');
  let r = await dosql([url, '-c',
    "CREATE TABLE f(a INTEGER, b TEXT, c BLOB, d REAL); INSERT INTO f VALUES (1, 'x,\"y\"', x'0102', 1.5), " +
    "(9007199254740993, '', NULL, NULL), (3, 'two\nlines', NULL, 2.0)"]);
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url, '--json', '-c', 'SELECT * FROM f ORDER BY rowid']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout,
    '{"a":1,"b":"x,\\"y\\"","c":{"$bytes":"AQI="},"d":1.5}\n' +
    '{"a":{"$bigint":"9007199254740993"},"b":"","c":null,"d":null}\n' +
    '{"a":3,"b":"two\\nlines","c":null,"d":2.0}\n');
  r = await dosql([url, '--csv', '-c', 'SELECT * FROM f ORDER BY rowid']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout,
    'a,b,c,d\r\n' +
    '1,"x,""y""",x\'0102\',1.5\r\n' +
    '9007199254740993,"",,\r\n' +
    '3,"two\nlines",,2.0\r\n');
  // Statements without rows print nothing in these modes.
  r = await dosql([url, '--json', '-c', 'INSERT INTO f(a) VALUES (4)']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '');
});

test('BEGIN ... ROLLBACK through the shell leaves no row; COMMIT keeps one', async () => {
  const url = dbUrl(d, 'txn');
  let r = await dosql([url, '-c', 'CREATE TABLE x(v)']);
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url], {
    input: 'begin;\nINSERT INTO x VALUES (1);\nSELECT count(*) AS n FROM x;\nRollback Transaction;\n',
  });
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, 'BEGIN\nOK, 1 row affected\n n\n---\n 1\n(1 row)\nROLLBACK\n');
  r = await dosql([url, '--csv', '-c', 'SELECT count(*) AS n FROM x']);
  assert.equal(r.stdout, 'n\r\n0\r\n', 'the rolled-back row is gone');

  r = await dosql([url], { input: 'BEGIN IMMEDIATE;\nINSERT INTO x VALUES (2);\nEND;\n' });
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url, '--csv', '-c', 'SELECT v FROM x']);
  assert.equal(r.stdout, 'v\r\n2\r\n', 'the committed row stays');

  // A script that ends inside a transaction: rolled back, and said so.
  r = await dosql([url], { input: 'BEGIN;\nINSERT INTO x VALUES (3);\n' });
  assert.equal(r.code, 0);
  assert.match(r.stderr, /the open transaction was rolled back/);
  r = await dosql([url, '--csv', '-c', 'SELECT count(*) AS n FROM x']);
  assert.equal(r.stdout, 'n\r\n1\r\n');

  r = await dosql([url, '-c', 'COMMIT']);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'Error: TRANSACTION_NOT_FOUND: no transaction is open\n');
});

test('an SQL error: exit 1, Error: CODE on stderr, and the script stops there', async () => {
  const url = dbUrl(d, 'errors');
  const r = await dosql([url], {
    input: 'CREATE TABLE e(v);\nINSERT INTO e VALUES (1);\nSELEC 1;\nINSERT INTO e VALUES (2);\n',
  });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: SYNTAX_ERROR: .*syntax error\n$/);
  assert.equal(r.stdout, 'OK, 0 rows affected\nOK, 1 row affected\n');
  const c = await dosql([url, '--csv', '-c', 'SELECT v FROM e']);
  assert.equal(c.stdout, 'v\r\n1\r\n', 'the statement after the error did not run');
  // The same with -c, and a failing dot command.
  const c2 = await dosql([url, '-c', "SELECT * FROM nope; INSERT INTO e VALUES (3)"]);
  assert.equal(c2.code, 1);
  assert.match(c2.stderr, /^Error: [A-Z_]+: no such table: nope\n$/);
  const c3 = await dosql([url], { input: '.nope\nINSERT INTO e VALUES (4);\n' });
  assert.equal(c3.code, 1);
  assert.match(c3.stderr, /^Error: unknown command \.nope/);
  assert.equal((await dosql([url, '--csv', '-c', 'SELECT count(*) AS n FROM e'])).stdout, 'n\r\n1\r\n');
});

test('an unreachable server: exit 3', async () => {
  const srv = net.createServer();
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = srv.address().port;
  await new Promise((resolve) => srv.close(resolve));
  const r = await dosql([`http://127.0.0.1:${port}/v1/db/main`, '-c', 'SELECT 1']);
  assert.equal(r.code, 3);
  assert.match(r.stderr, new RegExp(`^Error: cannot reach http://127\\.0\\.0\\.1:${port}/v1/db/main: `));
  assert.equal(r.stdout, '');
});

test('.tables and .schema', async () => {
  const url = dbUrl(d, 'schema');
  let r = await dosql([url], {
    input: `CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT NOT NULL);
CREATE INDEX t_b ON t(b);
CREATE TABLE other(x);
CREATE VIEW v AS SELECT a FROM t;
CREATE TRIGGER t_ad AFTER DELETE ON t BEGIN DELETE FROM other; END;
`,
  });
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url, '-c', '.tables']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'other\nt\nv\n');
  r = await dosql([url, '-c', '.schema t']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout,
    'CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT NOT NULL);\n' +
    'CREATE INDEX t_b ON t(b);\n' +
    'CREATE TRIGGER t_ad AFTER DELETE ON t BEGIN DELETE FROM other; END;\n');
  r = await dosql([url, '-c', '.schema']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.split('\n').length, 6, r.stdout); // five statements
  r = await dosql([url, '-c', '.schema missing']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: TABLE_NOT_FOUND: /);
  // Inside a transaction the schema comes from it (and does not wait behind it).
  r = await dosql([url], { input: 'BEGIN;\nCREATE TABLE later(y);\n.tables\nROLLBACK;\n.tables\n' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'BEGIN\nOK, 0 rows affected\nlater\nother\nt\nv\nROLLBACK\nother\nt\nv\n');
});

test('.dump gives what sqlite3 loads; .read runs a file; .mode and .output', async () => {
  const url = dbUrl(d, 'dumpme');
  let r = await dosql([url], {
    input: `CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT, b BLOB, r REAL);
INSERT INTO t VALUES (1, 'it''s', x'00ff', 1.5), (2, NULL, NULL, -2.25);
CREATE INDEX t_s ON t(s);
CREATE TABLE u(x);
INSERT INTO u VALUES (7);
`,
  });
  assert.equal(r.code, 0, r.stderr);
  r = await dosql([url, '-c', '.dump']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^PRAGMA foreign_keys=OFF;\nBEGIN TRANSACTION;\nCREATE TABLE t/);
  assert.match(r.stdout, /COMMIT;\n$/);
  const dir = mkdtempSync(path.join(tmpdir(), 'dosql-dump-'));
  try {
    const file = path.join(dir, 'copy.db');
    execFileSync('sqlite3', [file], { input: r.stdout });
    assert.equal(execFileSync('sqlite3', [file, 'SELECT id, s, hex(b), r FROM t ORDER BY id; SELECT x FROM u;'], { encoding: 'utf8' }),
      "1|it's|00FF|1.5\n2|||-2.25\n7\n");
    // One table: its rows and its index, nothing of u.
    r = await dosql([url, '-c', '.dump t']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /CREATE INDEX t_s/);
    assert.doesNotMatch(r.stdout, /CREATE TABLE u/);
    // .read: a file's statements and commands, as if typed; .mode csv; .output FILE.
    const script = path.join(dir, 'script.sql');
    const out = path.join(dir, 'out.csv');
    writeFileSync(script, `INSERT INTO u VALUES (8);\n.mode csv\n.headers on\n.output ${out}\nSELECT x FROM u ORDER BY x;\n.output\n`);
    r = await dosql([url], { input: `.read ${script}\nSELECT count(*) AS n FROM u;\n` });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(out, 'utf8'), 'x\r\n7\r\n8\r\n');
    assert.equal(r.stdout, 'OK, 1 row affected\nn\r\n2\r\n'); // (the INSERT before .mode; then csv, back on stdout)
    r = await dosql([url, '-c', '.read /nonexistent/file.sql']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot open \/nonexistent\/file\.sql/);
    r = await dosql([url, '-c', '.mode xml']);
    assert.match(r.stderr, /usage: \.mode table\|csv\|json\|line\|markdown/);
    r = await dosql([url], { input: ".mode line\nSELECT 1 AS one, 'a|b' AS two;\n.mode markdown\nSELECT 1 AS one, 'a|b' AS two, NULL AS n;\n" });
    assert.equal(r.stdout, 'one = 1\ntwo = a|b\n| one | two | n |\n|---|---|---|\n| 1 | a\\|b | NULL |\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('.import: awkward CSV (quotes, line ends in fields, BOM, CRLF, empty lines), a table made from the header; .export', async () => {
  const url = dbUrl(d, 'csvin');
  const dir = mkdtempSync(path.join(tmpdir(), 'dosql-csv-'));
  try {
    const file = path.join(dir, 'awkward.csv');
    writeFileSync(file, '\uFEFFid,name,note\r\n1,"Smith, J.","says ""hi"""\r\n\r\n2,plain,"two\nlines"\n3,,\n');
    let r = await dosql([url, '-c', `.import ${file} people`]);
    assert.equal(r.code, 0, r.stderr);
    r = await dosql([url, '--json', '-c', 'SELECT id, name, note FROM people ORDER BY id']);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').map((l) => JSON.parse(l)), [
      { id: '1', name: 'Smith, J.', note: 'says "hi"' },
      { id: '2', name: 'plain', note: 'two\nlines' },
      { id: '3', name: '', note: '' },
    ]);
    // Into a table that exists: its affinity applies; the header names the columns.
    await dosql([url, '-c', 'CREATE TABLE nums(n INTEGER, label TEXT)']);
    const many = path.join(dir, 'many.csv');
    const lines = ['label,n'];
    for (let i = 1; i <= 120000; i++) lines.push(`r${i},${i}`);
    writeFileSync(many, lines.join('\n') + '\n');
    r = await dosql([url, '-c', `.import ${many} nums`], { ms: 120000 });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /\r120000 rows|100000 rows/); // the progress line
    r = await dosql([url, '-c', 'SELECT count(*), sum(n), typeof(n) FROM nums']);
    assert.match(r.stdout, /120000 .*7200060000 .*integer/s);
    // A quote left open, a row with other fields: refused, naming the line.
    const bad = path.join(dir, 'bad.csv');
    writeFileSync(bad, 'a,b\n1,2\n3\n');
    r = await dosql([url, '-c', `.import ${bad} t2`]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /line 3: 1 fields, the header has 2/);
    writeFileSync(bad, 'a,b\n"open,2\n');
    r = await dosql([url, '-c', `.import ${bad} t3`]);
    assert.match(r.stderr, /line 2: a quote is left open/);
    // .export: the database as a file sqlite3 opens.
    const out = path.join(dir, 'copy.db');
    r = await dosql([url, '-c', `.export ${out}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(execFileSync('sqlite3', [out, 'SELECT count(*) FROM nums; PRAGMA integrity_check;'], { encoding: 'utf8' }), '120000\nok\n');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('.headers: the CSV header row, off by default as in sqlite3, on with --csv; the other modes name their columns regardless', async () => {
  const url = dbUrl(d, 'headers');
  const q = "SELECT 1 AS a, 'x,y' AS b;\n";
  let r = await dosql([url], { input: `.headers\n.mode csv\n${q}.headers on\n.headers\n${q}.header off\n${q}` });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'headers are off\n1,"x,y"\r\nheaders are on\na,b\r\n1,"x,y"\r\n1,"x,y"\r\n');
  // --csv writes the header row unless told otherwise.
  r = await dosql([url, '--csv', '-c', q]);
  assert.equal(r.stdout, 'a,b\r\n1,"x,y"\r\n');
  r = await dosql([url, '--csv', '-c', '.headers off', '-c', q]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, '1,"x,y"\r\n');
  // As in sqlite3, the table and Markdown modes always show the names.
  r = await dosql([url], { input: `.headers off\n${q}.mode markdown\n${q}` });
  assert.equal(r.stdout, ' a | b\n---+-----\n 1 | x,y\n(1 row)\n| a | b |\n|---|---|\n| 1 | x,y |\n');
  r = await dosql([url, '-c', '.headers maybe']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /usage: \.headers on\|off/);
});

test('DOSQL_URL and DOSQL_TOKEN; UNAUTHORIZED without the token', async () => {
  const env = { DOSQL_URL: `${da.url}/db/auth` }; // the short form is accepted too
  let r = await dosql(['-c', 'SELECT 1 AS one'], { env: { ...env, DOSQL_TOKEN: SECRET } });
  assert.equal(r.stderr, '');
  assert.equal(r.code, 0);
  assert.equal(r.stdout, ' one\n-----\n   1\n(1 row)\n');
  r = await dosql(['-c', 'SELECT 1'], { env });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: UNAUTHORIZED: /);
  r = await dosql(['-c', 'SELECT 1'], { env: { ...env, DOSQL_TOKEN: 'not-the-right-token-0000' } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /^Error: UNAUTHORIZED: /);
  r = await dosql(['--token', SECRET, '--csv', '-c', 'SELECT 2 AS two'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'two\r\n2\r\n');
  // The URL on the command line wins over DOSQL_URL.
  r = await dosql([dbUrl(d, 'main'), '--csv', '-c', 'SELECT 3 AS three'], { env });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'three\r\n3\r\n');
});

test('-f FILE, usage errors (exit 2), --help and --version', async () => {
  const dir = tempDir();
  try {
    const file = path.join(dir, 'in.sql');
    writeFileSync(file, 'SELECT 1 AS a;\r\nSELECT 2 AS b\r\n');
    let r = await dosql([dbUrl(d, 'file'), '--csv', '-f', file]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'a\r\n1\r\nb\r\n2\r\n');
    r = await dosql([dbUrl(d, 'file'), '-f', path.join(dir, 'absent.sql')]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /cannot open/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  for (const args of [['--json', '--csv', '-c', 'SELECT 1'], ['ftp://x/v1/db/a', '-c', 'SELECT 1'],
    ['http://127.0.0.1:1/v1/db/.bad', '-c', 'SELECT 1'], ['--nope'], ['-c'],
    ['http://127.0.0.1:1/v1/db/a', 'extra']]) {
    const r = await dosql(args);
    assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^dosql: /);
  }
  let r = await dosql(['--help']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^usage: dosql \[URL\]/);
  r = await dosql(['--version']);
  assert.equal(r.code, 0);
  assert.match(r.stdout, /^dosql \d+\.\d+\.\d+\n$/);
});

const hasScript = spawnSync('script', ['--version'], { encoding: 'utf8' }).status === 0;

test('interactive: prompts, continuation, transaction prompt, history file', { skip: !hasScript && 'no util-linux script(1)' }, async () => {
  const home = tempDir();
  try {
    // script(1) gives the shell a terminal; its echo of the input comes
    // first, so look at what follows the banner.
    const r = await dosql(['-qec', `${DOSQL} ${dbUrl(d, 'tty')}`, '/dev/null'], {
      cmd: 'script',
      env: { HOME: home, TERM: 'dumb' },
      input: 'SELECT 1 AS a,\n2 AS b;\nBEGIN;\nSELECT 3 AS c;\nROLLBACK;\n.quit\n',
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const out = r.stdout.replace(/\r/g, '');
    const session = out.slice(out.indexOf('dosql 0.'));
    assert.match(session, /^dosql> SELECT 1 AS a,\n {3}\.\.\.> 2 AS b;\n a \| b\n---\+---\n 1 \| 2\n\(1 row\)\n/m);
    assert.match(session, /^dosql> BEGIN;\nBEGIN\ndosql\*> SELECT 3 AS c;\n c\n---\n 3\n\(1 row\)\ndosql\*> ROLLBACK;\nROLLBACK\ndosql> \.quit/m);
    const hist = path.join(home, '.dosql_history');
    assert.equal(statSync(hist).mode & 0o777, 0o600);
    assert.match(readFileSync(hist, 'utf8'), /ROLLBACK;/);
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});

test('interactive: Tab completes dot commands, tables, columns (fetched anew after DDL) and file names', { skip: !hasScript && 'no util-linux script(1)' }, async () => {
  const home = tempDir();
  try {
    const url = dbUrl(d, 'tab');
    let r = await dosql([url, '-c', "CREATE TABLE people(id INTEGER, fullname TEXT); INSERT INTO people VALUES (1, 'Ann')"]);
    assert.equal(r.code, 0, r.stderr);
    const script = path.join(home, 'script_one.sql');
    writeFileSync(script, 'SELECT 42 AS answer;\n');
    r = await dosql(['-qec', `${DOSQL} ${url}`, '/dev/null'], {
      cmd: 'script',
      env: { HOME: home, TERM: 'dumb' },
      input: [
        '.tab\t', // .tables
        'SELECT fulln\t FROM peo\t;', // a column, a table
        'SELECT people.i\t FROM people;', // T.column
        'CREATE TABLE zebra(stripes);',
        'SELECT stri\t FROM zeb\t;', // made after the first fetch
        `.read ${path.join(home, 'scr')}\t`, // a file name
        '.mode mark\t', '.headers of\t',
        'SELECT 7 AS seven;',
        '.quit', '',
      ].join('\n'),
    });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const out = r.stdout.replace(/\r/g, '');
    const session = out.slice(out.indexOf('dosql 0.'));
    assert.match(session, /dosql> \.tables \npeople\n/);
    assert.match(session, /dosql> SELECT fullname {2}FROM people ;\n fullname\n-+\n Ann\n/);
    assert.match(session, /dosql> SELECT people\.id {2}FROM people;\n id\n-+\n {2}1\n/);
    assert.match(session, /dosql> SELECT stripes {2}FROM zebra ;\n stripes\n-+\n\(0 rows\)\n/);
    assert.match(session, /script_one\.sql \n answer\n-+\n {5}42\n/);
    assert.match(session, /\| seven \|\n\|---\|\n\| 7 \|\n/); // .mode markdown
  } finally {
    rmSync(home, { recursive: true, force: true });
  }
});
