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

# summary WORKLOAD UNIT DOSQLD PEER PEER_VALUE SPREAD_PCT: one row of the
# table bench/summary prints (bench/results/summary.csv; the ratio is
# dosqld / peer, so for latencies lower is better).
summary() {
    case "$1$2$4" in *,*) echo "summary: no commas in a workload's name, unit or peer: $1" >&2; return 1;; esac
    mkdir -p bench/results
    [ -s bench/results/summary.csv ] ||
        echo "date,commit,workload,unit,dosqld,peer,peer_value,ratio,spread_pct" >bench/results/summary.csv
    local ratio
    ratio=$(awk -v a="$3" -v b="$5" 'BEGIN { if (b > 0) printf "%.2f", a / b; else printf "" }')
    echo "$(date -u +%Y-%m-%dT%H:%M:%SZ),$(git rev-parse --short HEAD 2>/dev/null || echo unknown),$1,$2,$3,$4,$5,$ratio,$6" \
        >>bench/results/summary.csv
}
