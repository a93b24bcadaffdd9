#!/usr/bin/env bash
# Drill benchmark: RTO and per-phase times of a restore drill of a ~1 GiB
# custom-format dump (BENCH_MIB, default 1024; random data in 8 tables) from a
# local folder into embedded scratch, with drill.jobs 1 and 4 (BENCH_JOBS).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${BENCH_MIB:-1024}"
JOBS="${BENCH_JOBS:-1 4}"
. scripts/bench-lib.sh

echo "bench: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), making ~${MIB} MiB of random data in 8 tables"
start_pg
random_tables 8 "$MIB"
mkdir -p "$W/backups/2025-12-29T0200Z"
"$PGBIN/pg_dump" -Fc -d "$DSN" -f "$W/backups/2025-12-29T0200Z/backup.dump"
with_checksum "$W/backups/2025-12-29T0200Z/backup.dump"
as_pg "$PGBIN/pg_ctl" -D "$W/pg/data" -m fast stop >/dev/null

rows=()
for j in $JOBS; do
  cat > "$W/drill-$j.yml" <<YAML
state_dir: $W/state
pg_bin_dir: $PGBIN
# clusters and the spare copy of the template below $W, removed with it (as root the default,
# /var/tmp/backupverify, outlives this run)
drills: {scratch_dir: $W/scratch-drill}
targets:
  - name: bench
    source: file://$W/backups/
    checksum: manifest
    rto: 1h
    drill: {jobs: $j, timeout: 1h}
    checks:
      - count: blobs_1
        min: 1
YAML
  echo "bench: drill with jobs=$j"
  /usr/bin/time -f "%M" -o "$W/rss" "$W/backupverify" drill --config "$W/drill-$j.yml" --format json --log-format json \
    > "$W/drill-$j.json" 2>"$W/drill-$j.log" || { cat "$W/drill-$j.log"; exit 1; }
  rows+=("$(python3 - "$W/drill-$j.json" "$j" "$(cat "$W/rss")" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
r = r.get("drill", r)  # a report holds the drill
ph = {p["phase"]: p["seconds"] for p in r["phases"]}
print("| %5s | %8.1f | %8.1f | %8.1f | %8.1f | %8.1f | %6.1f |" % (sys.argv[2], r["rto_seconds"],
  ph.get("download", 0), ph.get("verify", 0), ph.get("restore", 0), ph.get("checks", 0), int(sys.argv[3]) / 1024))
PY
)")
done
printf '\ndrill of a %s MiB custom-format dump (8 tables of random bytea), embedded scratch, PostgreSQL %s, %s cores\n\n' \
  "$(mib "$W/backups/2025-12-29T0200Z/backup.dump")" "$("$PGBIN/postgres" --version | awk '{print $3}')" "$(nproc)"
echo "|  jobs |  RTO s   | download | verify   | restore  | checks   | RSS MiB |"
echo "|------:|---------:|---------:|---------:|---------:|---------:|-------:|"
printf '%s\n' "${rows[@]}"
echo
echo "restore includes any wait for the scratch cluster; RSS is backupverify's own."
