#!/usr/bin/env bash
# Benchmark of the verify pass. It makes a custom-format dump of incompressible
# data (random bytea) of about BENCH_MIB MiB (default 1024), puts it on a local
# versitygw S3 server, and times, in the same run:
#   - the verify pass (`backupverify verify`: GET + sha256 + pg_restore -f /dev/null, one stream)
#   - a raw `curl -o /dev/null` GET of the object
#   - `sha256sum` of a local copy
#   - `pg_restore -f /dev/null` of a local copy (the archive read, the real bound)
#   - the same fed through a pipe, as any streaming reader must feed it: pg_restore
#     reads stdin slower than a seekable file, whoever writes the pipe
# and prints wall time, throughput and peak RSS of each. A second, 10x smaller
# dump shows that the verify pass's memory does not grow with the backup's size.
set -euo pipefail
cd "$(dirname "$0")/.."

MIB="${BENCH_MIB:-1024}"
RUNS="${BENCH_RUNS:-2}"
. scripts/bench-lib.sh
command -v versitygw >/dev/null || go install github.com/versity/versitygw/cmd/versitygw@v1.8.0

echo "bench: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), making ~${MIB} MiB of random data"
start_pg
random_tables 1 "$MIB"
psql -X -q "$DSN" -v ON_ERROR_STOP=1 -c "CREATE TABLE small_blobs AS SELECT * FROM blobs_1 WHERE id % 10 = 0"
"$PGBIN/pg_dump" -Fc -d "$DSN" -t blobs_1 -f "$W/big.dump"
"$PGBIN/pg_dump" -Fc -d "$DSN" -t small_blobs -f "$W/small.dump"
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast stop >/dev/null

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$W/s3"
versitygw --port "127.0.0.1:$PORT" --access bench --secret benchsecret posix "$W/s3" >"$W/vgw.log" 2>&1 &
VGW_PID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT" && break; sleep 0.1; done
S3="http://127.0.0.1:$PORT"
SIG=(--aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:benchsecret" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
curl -sf "${SIG[@]}" -X PUT "$S3/bench" >/dev/null
for n in big small; do
  curl -sf "${SIG[@]}" -T "$W/$n.dump" "$S3/bench/$n/backup.dump" >/dev/null
  (cd "$W" && sha256sum "$n.dump" | sed "s/$n.dump/backup.dump/" > "$W/CHECKSUM.$n")
  curl -sf "${SIG[@]}" -T "$W/CHECKSUM.$n" "$S3/bench/$n/CHECKSUM" >/dev/null
  cat > "$W/$n.yml" <<YAML
state_dir: $W/state-$n
pg_bin_dir: $PGBIN
s3: {endpoint: "$S3", path_style: true}
targets:
  - {name: $n, source: "s3://bench/$n/", match: "*.dump", checksum: manifest}
YAML
done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

BIG=$(stat -c %s "$W/big.dump")
SMALL=$(stat -c %s "$W/small.dump")
# Warm the page cache and the server once, so every row reads from memory alike.
cat "$W/big.dump" >/dev/null
curl -sf "${SIG[@]}" -o /dev/null "$S3/bench/big/backup.dump"

# measure NAME BYTES CMD...: best wall time over RUNS, with that run's peak RSS.
rows=()
measure() {
  local name="$1" bytes="$2"; shift 2
  local best="" rss=""
  for _ in $(seq "$RUNS"); do
    /usr/bin/time -f "%e %M" -o "$W/t" "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 1; }
    read -r secs kib < "$W/t"
    if [ -z "$best" ] || awk "BEGIN{exit !($secs < $best)}"; then best=$secs; rss=$kib; fi
  done
  rows+=("$(awk -v n="$name" -v s="$best" -v b="$bytes" -v r="$rss" \
    'BEGIN{printf "| %-48s | %7.2f | %7.1f | %8.1f |", n, s, b/1048576/s, r/1024}')")
}

echo "bench: timing ($RUNS runs each, best kept)"
measure "curl -o /dev/null (raw GET)" "$BIG" curl -sf "${SIG[@]}" -o /dev/null "$S3/bench/big/backup.dump"
measure "sha256sum (local copy)" "$BIG" sha256sum "$W/big.dump"
measure "pg_restore -f /dev/null (local copy)" "$BIG" "$PGBIN/pg_restore" -f /dev/null "$W/big.dump"
measure "pg_restore -f /dev/null, fed by a pipe" "$BIG" sh -c "cat '$W/big.dump' | '$PGBIN/pg_restore' -f /dev/null"
measure "backupverify verify (S3 GET+sha256+pg_restore)" "$BIG" "$W/backupverify" verify --config "$W/big.yml" --log-format json
measure "backupverify verify, 10x smaller dump" "$SMALL" "$W/backupverify" verify --config "$W/small.yml" --log-format json

printf '\nverify pass of a %.0f MiB custom-format dump (random bytea), PostgreSQL %s, %s cores\n\n' \
  "$(awk -v b="$BIG" 'BEGIN{print b/1048576}')" "$("$PGBIN/pg_restore" --version | awk '{print $3}')" "$(nproc)"
echo "| what                                             |  wall s |   MiB/s | peak RSS MiB |"
echo "|--------------------------------------------------|--------:|--------:|---------:|"
printf '%s\n' "${rows[@]}"
echo
echo "peak RSS is the measured process's own (backupverify's excludes its pg_restore child)."
