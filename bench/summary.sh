# bench/summary.sh — sourced by the benchmark drivers (directly, or
# through bench/lib.sh): the check of the Debian packages they need,
# medians, spreads, and the rows of the table bench/summary prints at the
# end of `make bench`.

# bench_require NAME PACKAGE...: exits 1, with the apt-get line that
# installs them, when some of the Debian packages a driver needs are
# missing (./configure --missing bench decides). Nothing is installed
# here: make bench does that as root (make deps DEPS=bench).
bench_require() {
    local who=$1 need="" p
    shift
    for p in $(./configure --missing bench); do
        case " $* " in *" $p "*) need="$need $p" ;; esac
    done
    [ -z "$need" ] && return 0
    echo "$who: Debian packages missing. Install them with:" >&2
    echo "    apt-get install -y${need}" >&2
    echo "(or, as root: make deps DEPS=bench)" >&2
    exit 1
}

# The median and the spread ((max - min) / median, in %) of the numbers
# on stdin, one a line.
median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }
spread() {
    sort -g | awk '{ a[NR] = $1 } END { m = (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2);
        printf "%.0f", (m > 0 ? (a[NR] - a[1]) / m * 100 : 0) }'
}

# ---- A/B against another binary: BASE=/path/to/dosqld ----
# With BASE set (make bench BASE=...), each driver measures its dosqld
# workloads against this build's binary and against BASE in the same run,
# alternately within each round (this build first in odd rounds, BASE
# first in even ones: ab_new_first), and hands both binaries' per-round
# values to summary. QUICK=1 then runs 3 rounds instead of 1: the spread
# between rounds is the noise a difference is judged against.
if [ -n "${BASE:-}" ] && [ ! -x "$BASE" ]; then
    echo "BASE=$BASE: not an executable (the dosqld binary to compare with)" >&2
    exit 2
fi
ab_new_first() { [ $(($1 % 2)) = 1 ]; }
# (median's own definition: a driver may replace median with its own.)
ab_median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# listening_port LOG PID: the port a dosqld started with --listen
# 127.0.0.1:0 says it listens on in LOG, once it does (within 20 s); fails
# when it exits or does not say so in time.
listening_port() {
    local port
    for _ in $(seq 400); do
        port=$(sed -n 's/.*event=listening addr=127\.0\.0\.1:\([0-9]*\).*/\1/p' "$1" | head -n 1)
        [ -n "$port" ] && { echo "$port"; return 0; }
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# ab_start LOG ARGS...: starts BASE (pinned as the driver's servers are,
# PIN_SERVER) with ARGS and --listen 127.0.0.1:0; sets bpid and bport
# (the driver's cleanup stops bpid).
ab_start() {
    local log=$1
    shift
    ${PIN_SERVER:-} "$BASE" "$@" --listen 127.0.0.1:0 2>"$log" &
    bpid=$!
    bport=$(listening_port "$log" "$bpid") && return 0
    cat "$log" >&2
    echo "BASE=$BASE did not start" >&2
    exit 1
}

# Lower is better for latencies, sizes and times; higher for rates.
lower_is_better() { case "$1" in ms | us | *" us" | s | bytes | B) return 0 ;; *) return 1 ;; esac; }

# ab_row WORKLOAD UNIT NEW_ROUNDS BASE_ROUNDS (files, one value a round):
# one row of bench/results/ab.csv: both medians and spreads, the ratio
# new / base and the verdict. A difference is beyond noise only when it
# exceeds the larger of the two spreads ((max - min) / median); one round
# has no spread and is not judged.
ab_row() {
    local nm bm ns bs k ratio verdict low=0 bcommit
    nm=$(grep . "$3" | ab_median); bm=$(grep . "$4" | ab_median)
    ns=$(grep . "$3" | spread); bs=$(grep . "$4" | spread)
    k=$(grep -c . "$3")
    lower_is_better "$2" && low=1
    ratio=$(awk -v a="$nm" -v b="$bm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "" }')
    verdict=$(awk -v n="$nm" -v b="$bm" -v ns="$ns" -v bs="$bs" -v k="$k" -v low="$low" 'BEGIN {
        if (!(b > 0) || !(n > 0)) { print "not judged (no figure)"; exit }
        if (k < 2) { print "not judged (one round: no spread)"; exit }
        d = (n - b) / b * 100; noise = (ns > bs ? ns : bs); gain = (low ? -d : d)
        print (gain < -noise ? "WORSE beyond noise" : (gain > noise ? "better beyond noise" : "within noise")) }')
    bcommit=$(git -C "$(dirname "$BASE")" rev-parse --short HEAD 2>/dev/null || echo unknown)
    mkdir -p bench/results
    [ -s bench/results/ab.csv ] ||
        echo "date,commit,base,base_commit,workload,unit,rounds,new,new_spread_pct,base_value,base_spread_pct,ratio,verdict" >bench/results/ab.csv
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$(git rev-parse --short HEAD 2>/dev/null || echo unknown),${BASE//,/;},$bcommit,$1,$2,$k,$nm,$ns,$bm,$bs,$ratio,$verdict" \
        >>bench/results/ab.csv
}

# summary WORKLOAD UNIT DOSQLD PEER PEER_VALUE SPREAD_PCT [NEW_ROUNDS
# BASE_ROUNDS]: one row of the table bench/summary prints
# (bench/results/summary.csv; the ratio is dosqld / peer, so for latencies
# lower is better). With BASE set and the two files of per-round values
# given, also the row's A/B (ab_row).
summary() {
    case "$1$2$4" in *,*) echo "summary: no commas in a workload's name, unit or peer: $1" >&2; return 1;; esac
    mkdir -p bench/results
    [ -s bench/results/summary.csv ] ||
        echo "date,commit,workload,unit,dosqld,peer,peer_value,ratio,spread_pct" >bench/results/summary.csv
    local ratio
    ratio=$(awk -v a="$3" -v b="$5" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "" }')
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$(git rev-parse --short HEAD 2>/dev/null || echo unknown),$1,$2,$3,$4,$5,$ratio,$6" \
        >>bench/results/summary.csv
    if [ -n "${BASE:-}" ] && [ $# -ge 8 ]; then ab_row "$1" "$2" "$7" "$8"; fi
}

# A run that went wrong. Drivers call their runs inside $(...), a
# subshell, where a counter in a variable would be lost: each failure is
# a line in $tmp/failed_runs (the driver's scratch directory), and
# runs_failed counts them at the end.
run_failed() { echo x >>"$tmp/failed_runs"; }
runs_failed() { if [ -f "$tmp/failed_runs" ]; then wc -l <"$tmp/failed_runs"; else echo 0; fi; }
