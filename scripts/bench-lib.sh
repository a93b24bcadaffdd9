# Shared by the bench-*.sh scripts: a throwaway PostgreSQL cluster filled with
# incompressible data, and timing helpers. Source it; it sets $W, $PGBIN, $DSN.
set -euo pipefail
export PATH="$(go env GOPATH)/bin:$PATH"
command -v /usr/bin/time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }

PGBIN="${BENCH_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)}"
W="$(mktemp -d /tmp/bvbench.XXXXXX)"
chmod 755 "$W"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
bench_cleanup() {
  as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m immediate stop >/dev/null 2>&1 || true
  [ -n "${VGW_PID:-}" ] && kill "$VGW_PID" 2>/dev/null || true
  rm -rf "$W"
}
trap bench_cleanup EXIT

echo "bench: building backupverify"
go build -o "$W/backupverify" ./cmd/backupverify

# start_pg: a cluster on a socket in $W/pg; DSN for it.
start_pg() {
  mkdir -p "$W/pg"
  [ "$(id -u)" = 0 ] && chown postgres "$W/pg"
  as_pg "$PGBIN/initdb" -D "$W/pg/data" -A trust -U bench --no-sync >/dev/null
  as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -l "$W/pg/log" -w \
    -o "-k $W/pg -c listen_addresses= -c fsync=off -c max_wal_size=8GB" start >/dev/null
  DSN="host=$W/pg user=bench dbname=postgres"
}

# random_tables N MIB: N tables blobs_1..N holding MIB MiB of random bytes in
# all. In COPY text they are hex, which zlib shrinks back to about their raw
# size, so the custom-format dump is about MIB MiB.
random_tables() {
  local n="$1" mib="$2"
  local rows=$((mib * 1024 * 1000 / 1070 / n))
  psql -X -q "$DSN" -v ON_ERROR_STOP=1 -c "CREATE EXTENSION IF NOT EXISTS pgcrypto"
  for i in $(seq "$n"); do
    psql -X -q "$DSN" -v ON_ERROR_STOP=1 -c "CREATE TABLE blobs_$i (id int PRIMARY KEY, b bytea);
      ALTER TABLE blobs_$i ALTER b SET STORAGE EXTERNAL;
      INSERT INTO blobs_$i SELECT g, gen_random_bytes(1024) FROM generate_series(1, $rows) g;"
  done
}

# with_checksum FILE: writes a sha256sum(1) manifest CHECKSUM beside FILE.
with_checksum() {
  (cd "$(dirname "$1")" && sha256sum "$(basename "$1")" > CHECKSUM)
}

mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN{printf "%.0f", b/1048576}'; }
