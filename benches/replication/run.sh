#!/usr/bin/env bash
# Replication lag at paced write rates, and a 1M-entity bootstrap (ecsdb),
# beside PostgreSQL streaming replication driven at the same rates, in one
# run on this machine.
#
#   bash benches/replication/run.sh        (SECS=5 per rate; ENTITIES=1000000; PG_ONLY=1)
#
# Each rate is commits of N single-field updates: 10k ops/s as 1000 commits
# of 10 and 100 commits of 100; 100k ops/s as 1000 commits of 100 and 100
# commits of 1000. ecsdb: per commit, commit → the replica's durable
# acknowledgement. PostgreSQL: pg_stat_replication's write/flush/replay lag
# sampled every 10 ms while pgbench drives the same shape (`-R` commits/s,
# each an UPDATE of N rows). Both fsync every commit, primary and replica.
#
# Needs: PostgreSQL's server binaries (Debian `postgresql`; run as root, the
# clusters run as the `postgres` user).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS="${SECS:-5}"
ENTITIES="${ENTITIES:-1000000}"

if [ -z "${PG_ONLY:-}" ]; then
    echo "== ecsdb (cargo bench -p ecsdb-server --bench replication) =="
    ECSDB_BENCH_SECS="$SECS" ECSDB_BENCH_ENTITIES="$ENTITIES" cargo bench -q -p ecsdb-server --bench replication 2>/dev/null
fi

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$PGBIN" ] || ! id postgres >/dev/null 2>&1; then
    echo "== PostgreSQL: skipped (install Debian's postgresql) =="
    exit 0
fi
WORK="$(mktemp -d /tmp/ecsdb-pgrepl.XXXXXX)"
chown postgres "$WORK"
as_pg() { runuser -u postgres -- "$@"; }
P=55442
S=55443
cleanup() {
    as_pg "$PGBIN/pg_ctl" -D "$WORK/standby" -m immediate stop >/dev/null 2>&1 || true
    as_pg "$PGBIN/pg_ctl" -D "$WORK/primary" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
as_pg "$PGBIN/initdb" -D "$WORK/primary" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/primary" -o "-p $P -k $WORK -c wal_level=replica -c max_wal_senders=4 -c synchronous_commit=on" -l "$WORK/primary.log" -w start >/dev/null
psql() { as_pg "$PGBIN/psql" -h "$WORK" -p "$P" -U postgres -qAt "$@"; }
psql -c "CREATE TABLE body (id bigint PRIMARY KEY, level integer)"
psql -c "INSERT INTO body SELECT i, 1 FROM generate_series(1, 10000) i"
as_pg "$PGBIN/pg_basebackup" -h "$WORK" -p "$P" -U postgres -D "$WORK/standby" -R -X stream -c fast
as_pg "$PGBIN/pg_ctl" -D "$WORK/standby" -o "-p $S -k $WORK -c hot_standby=on -c wal_receiver_status_interval=1" -l "$WORK/standby.log" -w start >/dev/null
sleep 1
echo "== PostgreSQL $(psql -c 'SHOW server_version') streaming replication (pg_stat_replication, sampled every 10 ms) =="
printf "%10s %8s %10s %12s %22s %22s %22s\n" "target/s" "ops/cmt" "commits/s" "achieved/s" "write lag p50/p99" "flush lag p50/p99" "replay lag p50/p99"
for shape in "10000 10" "10000 100" "100000 100" "100000 1000"; do
    set -- $shape
    rate=$1; per=$2; cps=$((rate / per))
    printf '\\set a random(1, %d)\nUPDATE body SET level = level + 1 WHERE id >= :a AND id < :a + %d;\n' $((10000 - per)) "$per" > "$WORK/script.sql"
    chown postgres "$WORK/script.sql"
    (printf "SELECT coalesce(extract(epoch FROM write_lag)*1000, -1), coalesce(extract(epoch FROM flush_lag)*1000, -1), coalesce(extract(epoch FROM replay_lag)*1000, -1) FROM pg_stat_replication\n\\\\watch 0.01\n" \
        | timeout "$SECS" runuser -u postgres -- "$PGBIN/psql" -h "$WORK" -p "$P" -U postgres -qAt -F ' ' > "$WORK/samples" 2>/dev/null || true) &
    sampler=$!
    out=$(as_pg "$PGBIN/pgbench" -h "$WORK" -p "$P" -U postgres -n -f "$WORK/script.sql" -R "$cps" -T "$SECS" -c 1 -j 1 postgres 2>/dev/null)
    wait "$sampler" || true
    tps=$(echo "$out" | sed -n 's/^tps = \([0-9.]*\).*/\1/p' | head -1)
    pct() { # column, fraction → percentile of the non-null samples
        awk -v c="$1" 'NF == 3 && $c >= 0 { print $c }' "$WORK/samples" | sort -g > "$WORK/col"
        local n; n=$(wc -l < "$WORK/col")
        if [ "$n" -eq 0 ]; then echo "-"; return; fi
        local i; i=$(awk -v n="$n" -v p="$2" 'BEGIN { i = int(n * p); if (i < n * p) i++; if (i < 1) i = 1; print i }')
        printf "%.2f" "$(sed -n "${i}p" "$WORK/col")"
    }
    printf "%10d %8d %10d %12.0f %13s/%-8s %13s/%-8s %13s/%-8s\n" "$rate" "$per" "$cps" "$(awk -v t="${tps:-0}" -v p="$per" 'BEGIN { print t * p }')" \
        "$(pct 1 .5)" "$(pct 1 .99)" "$(pct 2 .5)" "$(pct 2 .99)" "$(pct 3 .5)" "$(pct 3 .99)"
done
