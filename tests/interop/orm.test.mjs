// Interop: ORMs on libSQL's client against a real dosqld — Drizzle ORM
// (drizzle-orm/libsql: a schema, its migrator, relational queries,
// transactions, batches) and Kysely (@libsql/kysely-libsql, which brings
// an older @libsql/client of its own). Both unchanged, over HTTP and
// WebSocket; the packages are pinned in package-lock.json.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createClient } from '@libsql/client';
import { drizzle } from 'drizzle-orm/libsql';
import { migrate } from 'drizzle-orm/libsql/migrator';
import { sqliteTable, integer, text } from 'drizzle-orm/sqlite-core';
import { relations, eq, desc, sql as dsql } from 'drizzle-orm';
import { Kysely, Migrator, sql } from 'kysely';
import { LibsqlDialect } from '@libsql/kysely-libsql';
import { startDosqld } from '../integration/lib/harness.mjs';

const TOKEN = 'orm-write-token-0123456789';
const MIGRATIONS = path.join(path.dirname(new URL(import.meta.url).pathname), 'fixtures/drizzle');

let d, tmp;
before(async () => {
  d = await startDosqld({ conf: `[auth]\ntoken = ${TOKEN} write\n` });
  tmp = mkdtempSync(path.join(tmpdir(), 'dosqld-orm-'));
});
after(async () => {
  await d?.cleanup();
  if (tmp) rmSync(tmp, { recursive: true, force: true });
});

const url = (scheme, db) => `${scheme}://127.0.0.1:${d.port}/v1/db/${db}/`;

// ---- Drizzle ----------------------------------------------------------------------

const users = sqliteTable('users', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  name: text('name').notNull(),
  email: text('email').notNull().unique(),
  bio: text('bio').notNull().default(''),
});
const posts = sqliteTable('posts', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  authorId: integer('author_id').notNull().references(() => users.id, { onDelete: 'cascade' }),
  title: text('title').notNull(),
  createdAt: integer('created_at', { mode: 'timestamp' }).notNull(),
});
const usersRelations = relations(users, ({ many }) => ({ posts: many(posts) }));
const postsRelations = relations(posts, ({ one }) => ({ author: one(users, { fields: [posts.authorId], references: [users.id] }) }));
const schema = { users, posts, usersRelations, postsRelations };

// The migrations folder with only its first n entries.
function migrationsUpTo(n) {
  const dir = mkdtempSync(path.join(tmp, 'mig-'));
  cpSync(MIGRATIONS, dir, { recursive: true });
  const journal = JSON.parse(readFileSync(path.join(MIGRATIONS, 'meta/_journal.json'), 'utf8'));
  journal.entries = journal.entries.slice(0, n);
  writeFileSync(path.join(dir, 'meta/_journal.json'), JSON.stringify(journal));
  return dir;
}

for (const scheme of ['http', 'ws']) {
  test(`drizzle over ${scheme}: migrations, inserts, relational queries, transactions, batches`, async () => {
    const client = createClient({ url: url(scheme, `drizzle_${scheme}`), authToken: TOKEN });
    try {
      const db = drizzle(client, { schema });
      // The first migration, then data, then the second: a rebuild of
      // `users` (drizzle-kit's way to add a NOT NULL column) that must not
      // cascade into `posts`.
      await migrate(db, { migrationsFolder: migrationsUpTo(1) });
      await client.execute({ sql: 'INSERT INTO users (name, email) VALUES (?, ?)', args: ['Ada', 'ada@example.com'] });
      await client.execute({ sql: 'INSERT INTO posts (author_id, title, created_at) VALUES (1, ?, ?)', args: ['before', 1700000000] });
      await migrate(db, { migrationsFolder: MIGRATIONS });
      await migrate(db, { migrationsFolder: MIGRATIONS }); // nothing new: a no-op
      const applied = await client.execute('SELECT count(*) AS n FROM __drizzle_migrations');
      assert.equal(applied.rows[0].n, 2);
      assert.equal((await db.select().from(posts)).length, 1, 'the rebuild kept the posts');
      assert.equal((await db.select().from(users))[0].bio, '', 'the new column has its default');

      const [grace] = await db.insert(users).values({ name: 'Grace', email: 'grace@example.com', bio: 'COBOL' }).returning();
      assert.equal(grace.name, 'Grace');
      await db.insert(posts).values([
        { authorId: grace.id, title: 'first', createdAt: new Date(1700000100000) },
        { authorId: grace.id, title: 'second', createdAt: new Date(1700000200000) },
      ]);
      // (drizzle wraps the client's error: SQLite's message is its cause's)
      await assert.rejects(db.insert(users).values({ name: 'dup', email: 'grace@example.com' }),
        (e) => /UNIQUE constraint failed: users.email/.test(e.cause?.message) && e.cause.code === 'SQLITE_CONSTRAINT');

      const withPosts = await db.query.users.findMany({
        with: { posts: { orderBy: [desc(posts.createdAt)] } },
        orderBy: [users.id],
      });
      assert.deepEqual(withPosts.map((u) => [u.name, u.posts.map((p) => p.title)]),
        [['Ada', ['before']], ['Grace', ['second', 'first']]]);
      const post = await db.query.posts.findFirst({ where: eq(posts.title, 'first'), with: { author: true } });
      assert.equal(post.author.email, 'grace@example.com');
      assert.ok(post.createdAt instanceof Date && post.createdAt.getTime() === 1700000100000);

      await db.update(users).set({ bio: 'compilers' }).where(eq(users.id, grace.id));
      assert.equal((await db.select({ bio: users.bio }).from(users).where(eq(users.id, grace.id)))[0].bio, 'compilers');

      // A transaction: committed, and one rolled back by an error.
      await db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'Linus', email: 'linus@example.com' });
        await tx.update(users).set({ bio: 'kernels' }).where(eq(users.email, 'linus@example.com'));
      });
      await assert.rejects(db.transaction(async (tx) => {
        await tx.insert(users).values({ name: 'Ken', email: 'ken@example.com' });
        throw new Error('changed my mind');
      }), /changed my mind/);
      const names = (await db.select({ name: users.name }).from(users).orderBy(users.id)).map((r) => r.name);
      assert.deepEqual(names, ['Ada', 'Grace', 'Linus']);

      // A batch: one round trip, all or nothing.
      const [ins, cnt] = await db.batch([
        db.insert(posts).values({ authorId: 1, title: 'batched', createdAt: new Date() }).returning({ id: posts.id }),
        db.select({ n: dsql`count(*)` }).from(posts),
      ]);
      assert.equal(ins.length, 1);
      assert.equal(Number(cnt[0].n), 4);

      // ON DELETE CASCADE holds (foreign keys are on outside migrations).
      await db.delete(users).where(eq(users.id, grace.id));
      assert.equal((await db.select().from(posts).where(eq(posts.authorId, grace.id))).length, 0);
    } finally {
      client.close();
    }
  });
}

// ---- Kysely -------------------------------------------------------------------------

const kyselyMigrations = {
  async getMigrations() {
    return {
      '0001_person': {
        async up(db) {
          await db.schema.createTable('person')
            .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
            .addColumn('first_name', 'text', (c) => c.notNull())
            .addColumn('last_name', 'text')
            .execute();
        },
      },
      '0002_pet': {
        async up(db) {
          await db.schema.createTable('pet')
            .addColumn('id', 'integer', (c) => c.primaryKey().autoIncrement())
            .addColumn('name', 'text', (c) => c.notNull().unique())
            .addColumn('owner_id', 'integer', (c) => c.notNull().references('person.id').onDelete('cascade'))
            .addColumn('species', 'text', (c) => c.notNull())
            .execute();
          await db.schema.createIndex('pet_owner_id_index').on('pet').column('owner_id').execute();
        },
      },
    };
  },
};

for (const scheme of ['http', 'ws']) {
  test(`kysely over ${scheme}: its migrator, inserts, joins, transactions`, async () => {
    const db = new Kysely({ dialect: new LibsqlDialect({ url: url(scheme, `kysely_${scheme}`), authToken: TOKEN }) });
    try {
      const migrator = new Migrator({ db, provider: kyselyMigrations });
      const { error, results } = await migrator.migrateToLatest();
      assert.equal(error, undefined);
      assert.deepEqual(results.map((r) => [r.migrationName, r.status]), [['0001_person', 'Success'], ['0002_pet', 'Success']]);
      assert.deepEqual((await migrator.migrateToLatest()).results, []);

      const jennifer = await db.insertInto('person').values({ first_name: 'Jennifer', last_name: 'Aniston' })
        .returning(['id', 'first_name']).executeTakeFirstOrThrow();
      assert.equal(jennifer.first_name, 'Jennifer');
      await db.insertInto('pet').values([
        { name: 'Catto', owner_id: jennifer.id, species: 'cat' },
        { name: 'Doggo', owner_id: jennifer.id, species: 'dog' },
      ]).execute();
      const rows = await db.selectFrom('pet')
        .innerJoin('person', 'person.id', 'pet.owner_id')
        .select(['pet.name as pet', 'person.first_name as owner'])
        .where('pet.species', '=', 'dog')
        .execute();
      assert.deepEqual(rows, [{ pet: 'Doggo', owner: 'Jennifer' }]);

      await assert.rejects(db.transaction().execute(async (trx) => {
        await trx.insertInto('person').values({ first_name: 'Rolled' }).execute();
        await trx.insertInto('pet').values({ name: 'Catto', owner_id: 1, species: 'cat' }).execute(); // not unique
      }), /UNIQUE/);
      const people = await db.selectFrom('person').select('first_name').execute();
      assert.deepEqual(people, [{ first_name: 'Jennifer' }], 'the failed transaction left nothing');

      const moved = await db.transaction().execute(async (trx) => {
        const p = await trx.insertInto('person').values({ first_name: 'Matthew' }).returning('id').executeTakeFirstOrThrow();
        return trx.updateTable('pet').set({ owner_id: p.id }).where('name', '=', 'Catto').executeTakeFirst();
      });
      assert.equal(Number(moved.numUpdatedRows), 1);
      const { n } = await db.selectFrom('pet').select(sql`count(*)`.as('n')).where('owner_id', '=', jennifer.id).executeTakeFirstOrThrow();
      assert.equal(n, 1);
    } finally {
      await db.destroy();
    }
  });
}
