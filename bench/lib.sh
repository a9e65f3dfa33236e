# bench/lib.sh — what the benchmark drivers share (sourced, not run):
# CPU pinning, a scratch directory cleaned at exit (and the servers
# stopped: dosqld's dpid, BASE's bpid, PostgreSQL), starting dosqld and
# PostgreSQL on loopback, medians and spreads, and the summary rows that
# bench/summary prints as one table.
#
# A driver sets NAME (its name in messages) before sourcing this file.

# Servers on CPU 1, clients on CPU 0, when there are two CPUs or more.
if [ "$(nproc)" -ge 2 ]; then
    PIN_SERVER="taskset -c 1"
    PIN_CLIENT="taskset -c 0"
else
    PIN_SERVER=""
    PIN_CLIENT=""
fi

tmp=$(mktemp -d)
chmod 755 "$tmp"
dpid=""
bpid=""
pg_started=""
PGBIN=""
AS_PG=""
[ "$(id -u)" = 0 ] && AS_PG="runuser -u postgres --"
lib_cleanup() {
    [ -n "$dpid" ] && kill "$dpid" 2>/dev/null || true
    [ -n "$bpid" ] && kill "$bpid" 2>/dev/null || true
    [ -n "$pg_started" ] && $AS_PG "$PGBIN/pg_ctl" -D "$tmp/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap lib_cleanup EXIT

die() {
    echo "$NAME: $*" >&2
    exit 1
}

free_port() {
    node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# dosqld_start DOSQLD DATA_DIR [ARGS...]: starts it pinned on a free port;
# sets dpid and dport.
dosqld_start() {
    local bin=$1 dir=$2
    shift 2
    $PIN_SERVER "$bin" "$@" --listen 127.0.0.1:0 --data-dir "$dir" 2>"$tmp/dosqld.log" &
    dpid=$!
    dport=$(listening_port "$tmp/dosqld.log" "$dpid") && return 0
    cat "$tmp/dosqld.log" >&2
    die "dosqld did not start"
}

dosqld_stop() {
    [ -n "$dpid" ] || return 0
    kill -TERM "$dpid" 2>/dev/null || true
    wait "$dpid" 2>/dev/null || true
    dpid=""
}

# pg_start [OPTIONS]: initdb and start PostgreSQL (the driver has called
# bench_require ... postgresql) pinned on a free port; sets PGB (pgbench
# with the connection flags) and PSQL.
pg_start() {
    PGBIN=${PGBIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
    pport=$(free_port)
    mkdir -p "$tmp/pg"
    [ -n "$AS_PG" ] && chown postgres: "$tmp/pg"
    $AS_PG "$PGBIN/initdb" -D "$tmp/pg/data" -A trust -U postgres -E UTF8 >"$tmp/pg/initdb.log" 2>&1 ||
        { cat "$tmp/pg/initdb.log" >&2; die "initdb failed"; }
    $PIN_SERVER $AS_PG "$PGBIN/pg_ctl" -D "$tmp/pg/data" -l "$tmp/pg/server.log" -w -t 30 \
        -o "-c listen_addresses=127.0.0.1 -p $pport -k $tmp/pg -c max_connections=200 $*" start >/dev/null 2>&1 ||
        { cat "$tmp/pg/server.log" >&2; die "PostgreSQL did not start"; }
    pg_started=1
    PGB="$PGBIN/pgbench -h 127.0.0.1 -p $pport -U postgres"
    PSQL="$PGBIN/psql -h 127.0.0.1 -p $pport -U postgres -q"
}

# bench_require, median, spread and summary: bench/summary.sh.
. bench/summary.sh
