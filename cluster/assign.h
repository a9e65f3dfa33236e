/* assign — every database's assignment (its epoch, primary and copies) as
 * etcd holds it: a cache any thread reads at once, kept current by a
 * watch, and the requests that write it, on two threads of its own
 * (etcd.h's blocking client).
 *
 *     dsq_assign_cfg cfg = {.etcd = {.endpoints = "http://10.0.0.1:2379", .prefix = "/dosqld/"},
 *                           .on_change = on_assign, .ud = cluster};
 *     dsq_assign *a = dsq_assign_start(&cfg, err, sizeof err);
 *     dsq_assignment want = {.db = "acct", .epoch = 1, .primary = "n2",
 *                            .copies = {"n2", "n3", "n1"}, .ncopies = 3};
 *     dsq_assign_create(a, &want, created, ctx);  // created(ctx, 0 or 1, now, msg), later
 *     ...
 *     dsq_assignment got;
 *     if (dsq_assign_lookup(a, "acct", &got) == 0)  // any thread: the cache
 *         ...
 *     dsq_assign_stop(a);
 *
 * In etcd. Each database is one key, "dbs/<name>" below the etcd prefix
 * (a name as dsq_db_name_valid takes them), under no lease: it outlives
 * every node. Its value is JSON (dsq_assignment_encode):
 *
 *     {"epoch":1,"primary":"n2","copies":["n2","n3","n1"]}
 *
 * "copies" are the node ids that hold a copy, distinct, 1 to
 * DSQ_ASSIGN_COPIES_MAX of them, the first the node that was primary
 * first; "primary" is one of them; "epoch" (1 to 2^63 - 1) is the
 * primary's term, one more at each change of primary. Other fields are
 * ignored, so that later versions may add some. Every change is a
 * compare-and-swap on the key's mod_revision (dsq_assign_create,
 * dsq_assign_update): of two nodes that decide from the same value, one
 * writes and the other learns what it wrote.
 *
 * The cache. Every "dbs/" key, as the last news from etcd says: a value
 * and its mod_revision, or that the key is gone and since which revision.
 * News comes from the watch and from the requests' answers, and a piece
 * of news is taken only when its revision is above what the cache has
 * for that database: the cache never goes back, even when a request's
 * answer arrives after a newer watch event, or a watch event after a
 * request's answer that said the key was deleted. To that end a deletion
 * is remembered (a tombstone with its revision) until the watch has seen
 * every change up to that revision; past that, any older news is known
 * stale by its revision alone. A value that is not a valid assignment (a
 * key written by hand) counts as the key being gone (logged:
 * "assign_bad_value"); a "dbs/" key whose name is not a database name is
 * skipped (logged too).
 *
 * The watch thread ("dsq-asgn-watch", with an etcd handle of its own)
 * reads every "dbs/" key, DSQ_ASSIGN_PAGE keys a request, all pages at
 * the first one's revision (dsq_etcd_range_page), then watches from the
 * revision after that read. When the watch's start revision was
 * compacted away or its stream broke, it reads everything again and
 * takes the differences (a key missing from the read is gone, unless a
 * request brought newer news of it). A read that fails is tried again
 * after 100 ms, doubling to 1 s, as is a watch that broke within 1 s of
 * starting. After the first whole read the cache is loaded
 * (dsq_assign_loaded) and stays so: after an outage it is as current as
 * the last news, until the next read.
 *
 * The request thread ("dsq-asgn-req", with its own handle) runs the
 * requests one at a time in the order they came (a queue, any thread
 * adds). Each answer goes to the cache first, then to the request's
 * callback, on that thread. A request is never sent twice: one whose
 * answer did not come (a timeout, etcd unreachable) fails, -1 with a
 * message, and may have been applied: the watch will tell.
 *
 * Events. on_change(ud, ev) runs on the watch thread only, one call at a
 * time: it says how the cache changed, in order.
 * - LOADED after each whole read, with the number of databases. After the
 *   first there are no CHANGED for what it found: the owner takes the
 *   cache as a whole (dsq_assign_each). After a later one, the
 *   differences it found came as CHANGED and DELETED before it. (An
 *   owner that copies the cache some time after LOADED may then get
 *   events it already has: a CHANGED not above the mod_revision it
 *   copied, a DELETED of a database it did not copy.)
 * - CHANGED: a database's assignment is new, or differs from the last
 *   one reported (a value written again the same: nothing).
 * - DELETED: a database reported before has no assignment any more.
 * - ETCD_DOWN when a read of the watch thread fails (once), ETCD_UP when
 *   one succeeds again. (The requests' failures are their callers'.)
 * What a request's answer brought is reported too, by the watch thread,
 * at the latest when the watch sees that change (so a database created
 * here comes once as CHANGED, like one created elsewhere). Per database,
 * events never go back: each carries a later revision than the one
 * before. on_change must not block long (it holds up the watch) nor call
 * dsq_assign_stop; it may call everything else here. ev and what it
 * points to are valid during the call only. Once dsq_assign_stop has
 * begun, on_change is not called again (a call under way is waited for).
 *
 * Stopping. dsq_assign_stop refuses new requests (-1 at once), cancels the
 * watch (noticed within 100 ms; a read under way ends within its
 * timeout), lets the request under way finish (within its timeout, per
 * endpoint tried) and fails the queued ones: each callback runs once, on
 * the request thread, with -1 and "stopping". The etcd handles' timeout_ms
 * is cfg.etcd.timeout_ms, or DSQ_ASSIGN_TIMEOUT_MS. */
#ifndef DSQ_ASSIGN_H
#define DSQ_ASSIGN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cluster/cluster.h"
#include "cluster/etcd.h"
#include "common/buf.h"

#define DSQ_ASSIGN_KEYS "dbs/"          /* below the etcd prefix: dbs/<database name> */
#define DSQ_ASSIGN_COPIES_MAX 9         /* copies of one database at most */
#define DSQ_ASSIGN_DB_MAX 129           /* bytes of a database name, with its NUL */
#define DSQ_ASSIGN_PAGE 1000            /* keys per request of a whole read */
#define DSQ_ASSIGN_TIMEOUT_MS 2000      /* the etcd requests' default timeout */

/* A database's assignment. */
typedef struct dsq_assignment {
    char db[DSQ_ASSIGN_DB_MAX];         /* the database name (the key's last part) */
    uint64_t epoch;                     /* >= 1: the primary's term (a failover makes epoch + 1) */
    char primary[DSQ_NODE_ID_MAX];      /* one of copies */
    char copies[DSQ_ASSIGN_COPIES_MAX][DSQ_NODE_ID_MAX]; /* node ids, distinct; copies[0] the first primary */
    size_t ncopies;                     /* 1..DSQ_ASSIGN_COPIES_MAX */
    int64_t mod_revision;               /* etcd's revision of this value; 0 when not read from etcd */
} dsq_assignment;

/* a's value as its key's JSON (the format above; db and mod_revision are
 * not in it), appended to out. 0; -1 with a message when a is not valid
 * (see dsq_assignment_decode) or memory runs out (nothing appended). */
int dsq_assignment_encode(const dsq_assignment *a, dsq_buf *out, char *err, size_t errlen);

/* The value p[0..len) of database db's key into *out (mod_revision 0:
 * the caller sets it). db must be a database name; the value a JSON
 * object whose "epoch" is an integer from 1 to 2^63 - 1, "primary" a node
 * id (as dsq_node_id_valid), "copies" an array of 1 to
 * DSQ_ASSIGN_COPIES_MAX distinct node ids, primary among them; a key
 * twice is refused, other fields are ignored. 0; -1 with a message (*out
 * zeroed). */
int dsq_assignment_decode(const char *db, const void *p, size_t len, dsq_assignment *out, char *err, size_t errlen);

/* Whether two assignments say the same (epoch, primary, copies in order;
 * not db nor mod_revision). */
bool dsq_assignment_same(const dsq_assignment *a, const dsq_assignment *b);

typedef enum dsq_assign_event_type {
    DSQ_ASSIGN_LOADED,                  /* a whole read is in the cache (count, revision: the read's) */
    DSQ_ASSIGN_CHANGED,                 /* db's assignment is new or differs (assignment: it) */
    DSQ_ASSIGN_DELETED,                 /* db has none any more (revision: since when it is known gone) */
    DSQ_ASSIGN_ETCD_DOWN,               /* a read failed (msg: why) */
    DSQ_ASSIGN_ETCD_UP,                 /* etcd answers again */
} dsq_assign_event_type;

typedef struct dsq_assign_event {
    dsq_assign_event_type type;
    const char *db;                     /* CHANGED, DELETED; else NULL */
    const dsq_assignment *assignment;   /* CHANGED; else NULL */
    size_t count;                       /* LOADED: the databases in the cache; else 0 */
    int64_t revision;                   /* LOADED, CHANGED (its mod_revision), DELETED; else 0 */
    const char *msg;                    /* what happened, for the log (never NULL) */
} dsq_assign_event;

typedef void (*dsq_assign_event_fn)(void *ud, const dsq_assign_event *ev);

typedef struct dsq_assign_cfg {
    dsq_etcd_cfg etcd;                  /* each thread's handle is made from it (copied);
                                         * timeout_ms 0: DSQ_ASSIGN_TIMEOUT_MS */
    dsq_assign_event_fn on_change;      /* may be NULL */
    void *ud;
} dsq_assign_cfg;

typedef struct dsq_assign dsq_assign;

/* Start both threads; reading and watching happen on them (etcd need not
 * be up: ETCD_DOWN then). NULL with a message when the etcd settings are
 * not valid or a thread or memory cannot be had. */
dsq_assign *dsq_assign_start(const dsq_assign_cfg *cfg, char *err, size_t errlen);

/* Stop both threads (see "Stopping") and free a. NULL: nothing. Not from
 * on_change or a request's callback; nothing here may be called on a
 * afterwards. */
void dsq_assign_stop(dsq_assign *a);

/* ---- requests: asynchronous, in order, answered on the request thread ------------------------- */

/* A request's answer: rc as each request says; now (valid during the
 * call) the assignment as etcd answered it, with its mod_revision, or
 * NULL; msg what happened (never NULL; why, for -1). */
typedef void (*dsq_assign_done_fn)(void *ud, int rc, const dsq_assignment *now, const char *msg);

/* Each request is queued and returns 0 (done will be called once), or
 * returns -1 at once when dsq_assign_stop has begun or memory ran out
 * (done is not called). Any thread, done included. */

/* Write want (want->db's key; its mod_revision is ignored) only if the
 * key does not exist, in one transaction that reads the key when it
 * does. rc 0: written (now: want with its mod_revision); 1: the key
 * exists (now: its value, nothing written); -1: failed (want not valid,
 * etcd unreachable, a timeout, an existing value that is not an
 * assignment). */
int dsq_assign_create(dsq_assign *a, const dsq_assignment *want, dsq_assign_done_fn done, void *ud);

/* Write want only if the key's mod_revision is still
 * expect_mod_revision (>= 1). rc 0: written (now: want with its new
 * mod_revision); 1: it is not (now: its value as it is, nothing
 * written); 2: the key no longer exists (now NULL); -1: failed, as
 * create. */
int dsq_assign_update(dsq_assign *a, const dsq_assignment *want, int64_t expect_mod_revision,
                      dsq_assign_done_fn done, void *ud);

/* Read db's key from etcd (not the cache). rc 0: found (now); 1: no such
 * key (now NULL); -1: failed (a value that is not an assignment
 * included). */
int dsq_assign_get(dsq_assign *a, const char *db, dsq_assign_done_fn done, void *ud);

/* ---- the cache: any thread, at once ------------------------------------------------------------ */

/* db's assignment as the cache has it into *out: 0; -1 when the cache has
 * none (not loaded yet, no such database, or deleted). */
int dsq_assign_lookup(dsq_assign *a, const char *db, dsq_assignment *out);

/* Whether a whole read has been in the cache (it stays true). */
bool dsq_assign_loaded(dsq_assign *a);

/* The databases in the cache. */
size_t dsq_assign_count(dsq_assign *a);

/* Call fn for every database in the cache, in no order, until it returns
 * non-zero; returns that (0: it saw them all). fn runs under the cache's
 * lock, so it sees one state of the cache, holds up every other caller
 * and the threads' news while it runs, and must not call anything here
 * (that takes the lock: a deadlock). */
typedef int (*dsq_assign_each_fn)(void *ud, const dsq_assignment *a);
int dsq_assign_each(dsq_assign *a, dsq_assign_each_fn fn, void *ud);

/* ---- internal, for its unit test ------------------------------------------------------------ */

/* Hold (true) or let go (false) the requests' answers: while held, the
 * request thread keeps each answer, once etcd gave it, from the cache and
 * the callback, as if it were slow to arrive. Returns at once.
 * dsq_assign_stop lets go. For the tests only. */
void dsq__assign_hold_answers(dsq_assign *a, bool hold);

/* Whether an answer is held now. */
bool dsq__assign_answer_held(dsq_assign *a);

/* Pause (true) the watch thread: it ends its watch and waits; resumed
 * (false), it watches again from the revision after the last it saw
 * (without reading first), so that a compaction meanwhile makes the watch
 * fail as compacted. Pausing waits for the pause: true, or false when it
 * did not come within 10 s. For the tests only. */
bool dsq__assign_pause_watch(dsq_assign *a, bool pause);

#endif
