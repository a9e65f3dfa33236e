// Compiled (not run) by `npm run typecheck`: the declarations give the
// types the README promises.
import { connect, sql, DosqlError, type QueryResult, type ChangeEvent, type Transaction } from '../dist/index.js';

type User = { id: number; name: string };

async function typed(): Promise<void> {
  const db = connect('http://127.0.0.1:8787', { database: 'app' });
  const r: QueryResult<User> = await db.query<User>('SELECT id, name FROM users WHERE id = ?', [1]);
  const name: string = r.rows[0]!.name;
  const lsn: number = r.lsn;
  const id = 1;
  const t = await db.sql<User>`SELECT id, name FROM users WHERE id = ${id}`;
  const first: User | undefined = await db.prepare<User>('SELECT * FROM users WHERE id = ?').first([1]);
  const n: number = await db.transaction(async (tx: Transaction) => (await tx.query<{ n: number }>('SELECT count(*) AS n FROM users')).rows[0]!.n);
  const b = await db.batch(['INSERT INTO users(name) VALUES (1)', sql`SELECT ${1}`]);
  const loose = await db.batch(['SELECT 1'], { atomic: false });
  const slot = loose.results[0];
  if (slot instanceof DosqlError) { const code: string = slot.code; void code; }

  const big = connect('http://127.0.0.1:8787', { database: 'app', intMode: 'bigint' });
  const bl: bigint = (await big.query('SELECT 1')).lsn;
  const str = connect('ws://127.0.0.1:8787/v1/db/app', { intMode: 'string' });
  const sl: string = (await str.query('SELECT 1')).lsn;
  for await (const ev of big.changes({ fromLSN: 0n, tables: ['users'] })) {
    const e: ChangeEvent<'bigint'> = ev;
    const el: bigint = e.lsn;
    void el;
  }
  // @ts-expect-error an unknown intMode
  connect('http://x', { database: 'a', intMode: 'float' });
  void [name, lsn, t, first, n, b, bl, sl];
}
void typed;
