#!/usr/bin/env bash
# Backup and restore of 1M entities (ecsdb) beside pg_basebackup of a
# PostgreSQL table holding the same rows, in one run on this machine.
#
#   bash benches/backup/run.sh            (ENTITIES=200000 for a quicker run)
#
# Needs: PostgreSQL's server binaries (Debian `postgresql`; run as root, the
# cluster runs as the `postgres` user) and, for the S3 rows, moto's server
# (`pip install "moto[server]"`).
set -euo pipefail
cd "$(dirname "$0")/../.."
ENTITIES="${ENTITIES:-1000000}"

echo "== ecsdb (cargo bench -p ecsdb-backup --bench backup) =="
ECSDB_BENCH_ENTITIES="$ENTITIES" cargo bench -q -p ecsdb-backup --bench backup 2>/dev/null

PGBIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$PGBIN" ] || ! id postgres >/dev/null 2>&1; then
    echo "== PostgreSQL: skipped (install Debian's postgresql) =="
    exit 0
fi
WORK="$(mktemp -d /tmp/ecsdb-pgbench.XXXXXX)"
chown postgres "$WORK"
trap 'runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/cluster" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
PORT=55432
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$PGBIN/initdb" -D "$WORK/cluster" -A trust -U postgres >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$WORK/cluster" -o "-p $PORT -k $WORK -c wal_level=replica -c max_wal_senders=4" -l "$WORK/log" -w start >/dev/null
psql() { as_pg "$PGBIN/psql" -h "$WORK" -p "$PORT" -U postgres -qAt "$@"; }
psql -c "CREATE TABLE body (id bigint, x real, y real, z real, vx real, vy real, vz real, hp integer, level integer, score bigint)"
psql -c "INSERT INTO body SELECT i, random()*3700, random()*6100, 0, random()-0.5, random()-0.5, 0, (random()*100)::int, (random()*60)::int, i*17 FROM generate_series(1, $ENTITIES) i"
psql -c "CHECKPOINT"
TABLE_MB=$(psql -c "SELECT round(pg_total_relation_size('body')/1048576.0, 1)")
DB_MB=$(psql -c "SELECT round(pg_database_size('postgres')/1048576.0, 1)")
echo "== PostgreSQL $(psql -c 'SHOW server_version'): $ENTITIES rows, table $TABLE_MB MB, database $DB_MB MB =="
for mode in "plain -Fp" "gzip -Ft -z"; do
    set -- $mode
    name=$1; shift
    rm -rf "$WORK/base-$name"
    start=$(date +%s.%N)
    as_pg "$PGBIN/pg_basebackup" -h "$WORK" -p "$PORT" -U postgres -D "$WORK/base-$name" "$@" -X fetch -c fast
    end=$(date +%s.%N)
    size=$(du -sm "$WORK/base-$name" | cut -f1)
    awk -v s="$start" -v e="$end" -v db="$DB_MB" -v st="$size" -v n="$name" \
        'BEGIN { t = e - s; printf "pg_basebackup %-5s: %.2f s (%.0f MB/s of the %.1f MB database; stored %d MB)\n", n, t, db / t, db, st }'
done
