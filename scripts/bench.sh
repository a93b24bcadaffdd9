#!/usr/bin/env bash
# `make bench`: one table, one invocation. It makes a custom-format dump of about BENCH_MIB MiB
# (default 300: 8 tables of random bytea, plus leads and contacts for the checks) and one a
# quarter of its size, puts both on a local versitygw, and times, alternating, BENCH_RUNS times
# each (default 3), medians kept:
#   - the drill (`backupverify drill`: download, checksum, archive read, restore with -j JOBS into
#     embedded scratch, a count and an orphan check) against the sequence a person runs:
#     `aws s3 cp` + `sha256sum -c` + `pg_restore -j JOBS` into an already-running server + the
#     same two queries;
#   - the verify pass (`backupverify verify`: GET + sha256 + archive read, one stream; with the
#     native reader and with `verify.reader: pg_restore`) against
#     `pg_restore -f /dev/null` of a local copy;
# with backupverify's own peak RSS at both sizes (it must not grow with the dump), then the
# scale run (BenchmarkScale: 1,000 targets in one daemon; BENCH_SCALE=0 skips it).
# BENCH_BEFORE=<git revision> also drills with that revision's binary, for per-phase
# before/after. JOBS is BENCH_JOBS, default the CPU count.
set -euo pipefail
cd "$(dirname "$0")/.."
MIB="${BENCH_MIB:-300}"
RUNS="${BENCH_RUNS:-3}"
JOBS="${BENCH_JOBS:-$(nproc)}"
BEFORE="${BENCH_BEFORE:-}"
. scripts/bench-lib.sh
command -v versitygw >/dev/null || go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
command -v aws >/dev/null || { echo "bench: the aws CLI is needed for the manual sequence (pip install awscli)"; exit 1; }
if [ -n "$BEFORE" ]; then
  mkdir -p "$W/before"
  git archive "$BEFORE" | tar -x -C "$W/before"
  (cd "$W/before" && go build -o "$W/backupverify-before" ./cmd/backupverify)
fi

echo "bench: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}'), making ~${MIB} MiB of random data"
start_pg
random_tables 8 "$MIB"
psql -X -q "$DSN" -v ON_ERROR_STOP=1 -c "CREATE TABLE leads (id int PRIMARY KEY, name text);
  INSERT INTO leads SELECT g, 'lead ' || g FROM generate_series(1, 20000) g;
  CREATE TABLE contacts (id int PRIMARY KEY, lead_id int, email text);
  INSERT INTO contacts SELECT g, 1 + g % 20000, 'c' || g || '@example.com' FROM generate_series(1, 200000) g;"
"$PGBIN/pg_dump" -Fc -d "$DSN" -f "$W/big.dump"
"$PGBIN/pg_dump" -Fc -d "$DSN" -t blobs_1 -t blobs_2 -t leads -t contacts -f "$W/small.dump"

PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
mkdir -p "$W/s3"
versitygw --port "127.0.0.1:$PORT" --access bench --secret benchsecret posix "$W/s3" >"$W/vgw.log" 2>&1 &
VGW_PID=$!
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$PORT" && break; sleep 0.1; done
S3="http://127.0.0.1:$PORT"
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=benchsecret AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
  AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
s3cmd() { aws --endpoint-url "$S3" s3 "$@" --only-show-errors; }
aws --endpoint-url "$S3" s3api create-bucket --bucket bench >/dev/null
for n in big small; do
  (cd "$W" && sha256sum "$n.dump" | sed "s/$n.dump/backup.dump/" > "CHECKSUM.$n")
  s3cmd cp "$W/$n.dump" "s3://bench/$n/2026-01-01T0000Z/backup.dump"
  s3cmd cp "$W/CHECKSUM.$n" "s3://bench/$n/2026-01-01T0000Z/CHECKSUM"
  cat > "$W/$n.yml" <<YAML
state_dir: $W/state-$n
pg_bin_dir: $PGBIN
# clusters and the spare copy of the template below $W, removed with it (as root the default,
# /var/tmp/backupverify, outlives this run)
drills: {scratch_dir: $W/scratch-$n}
s3: {endpoint: "$S3", path_style: true}
targets:
  - name: $n
    source: s3://bench/$n/
    checksum: manifest
    drill: {jobs: $JOBS, timeout: 1h}
    checks:
      - count: contacts
        min: 1
      - orphans: contacts.lead_id -> leads.id
YAML
done
# The same target read by pg_restore instead of the native reader.
sed -e "s|state-big|state-big-pr|" -e "s|    checksum: manifest|    checksum: manifest\n    verify: {reader: pg_restore}|" "$W/big.yml" > "$W/big-pr.yml"
BIG=$(stat -c %s "$W/big.dump")

# settle: each timed run starts with no dirty pages left by the one before. A restore leaves
# about its data's size dirty in the page cache (neither server fsyncs); the kernel writes it
# back some 30 s later, inside whichever run comes next, and on this kind of machine that
# costs that run seconds. The manual sequence's database stays until its next run, a
# drill's cluster is removed at once, so without this the order of the runs decides.
settle() { sync; }

# stamp CMD...: wall seconds into $W/secs, and the peak RSS (VmHWM, KiB) of CMD's own process,
# not its children's (pg_restore, initdb), into $W/kib, sampled every 50 ms until it exits.
stamp() {
  local t0 kib=0 v
  t0=$(date +%s.%N)
  "$@" >"$W/out" 2>"$W/err" &
  local pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    v=$(awk '/^VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || true)
    [ -n "$v" ] && kib=$v
    sleep 0.05
  done
  wait "$pid" || { tail -20 "$W/err" "$W/out"; exit 1; }
  awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f\n", b-a}' > "$W/secs"
  echo "$kib" > "$W/kib"
}

# drill BIN SIZE: one drill; appends "rto download verify restore checks rss_kib" to $W/drill-<tag>.
# Each starts from an empty state_dir but for template/, which a daemon keeps from its first
# drill on (scratch clusters are copies of it, not initdb'd), and instance-id: the spare copy
# of the template each drill leaves for the next one, in scratch_dir, is kept under the
# instance's name (as a daemon does between drills); warm-up drills make them.
drill() {
  local bin="$1" n="$2" tag="$3"
  mkdir -p "$W/state-$n"
  find "$W/state-$n" -mindepth 1 -maxdepth 1 ! -name template ! -name instance-id ! -name scratch -exec rm -rf {} +
  settle
  stamp "$bin" drill --config "$W/$n.yml" --format json --log-format json
  python3 - "$W/out" "$(cat "$W/kib")" >> "$W/drill-$tag" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))[0]
r = r.get("drill", r)  # a report holds the drill
assert r["ok"], r.get("error")
ph = {p["phase"]: p["seconds"] for p in r["phases"]}
print(r["rto_seconds"], ph.get("download", 0), ph.get("verify", 0), ph.get("restore", 0), ph.get("checks", 0), sys.argv[2])
PY
}

# manual_seq: the sequence a person runs; appends the seconds of its steps to $W/manual-steps:
# "download checksum createdb restore queries".
manual_seq() {
  set -euo pipefail
  local t=()
  rm -rf "$W/manual" && mkdir -p "$W/manual"
  t+=("$EPOCHREALTIME")
  s3cmd cp "s3://bench/big/2026-01-01T0000Z/backup.dump" "$W/manual/backup.dump"
  s3cmd cp "s3://bench/big/2026-01-01T0000Z/CHECKSUM" "$W/manual/CHECKSUM"
  t+=("$EPOCHREALTIME")
  (cd "$W/manual" && sha256sum --quiet -c CHECKSUM)
  t+=("$EPOCHREALTIME")
  psql -X -q "$DSN" -c "DROP DATABASE IF EXISTS restored" -c "CREATE DATABASE restored"
  t+=("$EPOCHREALTIME")
  "$PGBIN/pg_restore" -j "$JOBS" --no-owner --no-acl -d "host=$W/pg user=bench dbname=restored" "$W/manual/backup.dump"
  t+=("$EPOCHREALTIME")
  psql -X -q -At "host=$W/pg user=bench dbname=restored" -c "SELECT count(*) FROM contacts" \
    -c "SELECT count(*) FROM contacts c WHERE c.lead_id IS NOT NULL AND NOT EXISTS (SELECT 1 FROM leads l WHERE l.id = c.lead_id)" >/dev/null
  t+=("$EPOCHREALTIME")
  python3 -c 'import sys; t = list(map(float, sys.argv[1:])); print(" ".join("%.3f" % (b - a) for a, b in zip(t, t[1:])))' "${t[@]}" >> "$W/manual-steps"
}
export -f manual_seq s3cmd
export W S3 DSN PGBIN JOBS

cat "$W/big.dump" >/dev/null
drill "$W/backupverify" big warmup
drill "$W/backupverify" small warmup
echo "bench: drill vs manual sequence, $RUNS runs each, alternating (jobs $JOBS)"
for i in $(seq "$RUNS"); do
  drill "$W/backupverify" big after
  settle
  stamp bash -c manual_seq; cat "$W/secs" >> "$W/manual-secs"
  if [ -n "$BEFORE" ]; then drill "$W/backupverify-before" big before; fi
done
drill "$W/backupverify" small small
echo "bench: verify pass vs pg_restore -f /dev/null, $RUNS runs each, alternating"
settle
for i in $(seq "$RUNS"); do
  stamp "$W/backupverify" verify --config "$W/big.yml" --log-format json
  echo "$(cat "$W/secs") $(cat "$W/kib")" >> "$W/verify-big"
  stamp "$PGBIN/pg_restore" -f /dev/null "$W/big.dump"
  echo "$(cat "$W/secs") $(cat "$W/kib")" >> "$W/pgrestore"
  stamp "$W/backupverify" verify --config "$W/big-pr.yml" --log-format json
  echo "$(cat "$W/secs") $(cat "$W/kib")" >> "$W/verify-big-pr"
  if [ -n "$BEFORE" ]; then
    stamp "$W/backupverify-before" verify --config "$W/big.yml" --log-format json
    echo "$(cat "$W/secs") $(cat "$W/kib")" >> "$W/verify-before"
  fi
done
stamp "$W/backupverify" verify --config "$W/small.yml" --log-format json
echo "$(cat "$W/secs") $(cat "$W/kib")" >> "$W/verify-small"

SCALE="(skipped: BENCH_SCALE=0)"
if [ "${BENCH_SCALE:-1}" != 0 ]; then
  echo "bench: scale run, 1,000 targets (a few minutes)"
  SCALE=$(go test -run '^$' -bench BenchmarkScale -benchtime 1x -timeout 30m ./cmd/backupverify/ | grep '^scale:' | sed 's/^scale: //' | tr '\n' ' ')
fi

python3 - "$W" "$MIB" "$BIG" "$(stat -c %s "$W/small.dump")" "$JOBS" "$RUNS" "$SCALE" "$BEFORE" <<'PY'
import os, statistics, sys
W, mib, big, small, jobs, runs, scale, before = sys.argv[1:]
def rows(name):
    p = os.path.join(W, name)
    return [list(map(float, l.split())) for l in open(p)] if os.path.exists(p) else []
med = lambda xs: statistics.median(xs)
runs_s = lambda xs: " / ".join("%.1f" % x for x in xs)
d, m = rows("drill-after"), [r[0] for r in rows("manual-secs")]
v, pr = rows("verify-big"), rows("pgrestore")
ds, vs = rows("drill-small"), rows("verify-small")
MiB = lambda b: int(b) / 1048576
print()
print("%s: %.0f MiB custom-format dump (8 tables of random bytea + leads/contacts), versitygw on loopback," % ("bench", MiB(big)))
print("jobs %s, embedded scratch, %s CPUs, %s runs each alternating, medians; the machine is shared, so wall times vary." % (jobs, os.cpu_count(), runs))
print()
print("| what | backupverify | the alternative | ratio |")
print("|---|---|---|---|")
dm, mm = med([r[0] for r in d]), med(m)
print("| drill: download, checksum, restore, count + orphan query | %s s (median %.1f) | `aws s3 cp` + `sha256sum -c` + `pg_restore -j%s` into a running server + the two queries: %s s (median %.1f) | **%.2f** |"
      % (runs_s([r[0] for r in d]), dm, jobs, runs_s(m), mm, dm / mm))
vm, pm = med([r[0] for r in v]), med([r[0] for r in pr])
print("| verify pass, native reader (GET + sha256 + archive read, from S3) | %s s (median %.1f) | `pg_restore -f /dev/null` on a local copy: %s s (median %.1f) | **%.2f** |"
      % (runs_s([r[0] for r in v]), vm, runs_s([r[0] for r in pr]), pm, vm / pm))
vb = rows("verify-before")
if vb:
    vbm = med([r[0] for r in vb])
    print("| verify pass, native reader, before (%s) | %s s (median %.1f) | the same | **%.2f** |" % (before, runs_s([r[0] for r in vb]), vbm, vbm / pm))
vp = rows("verify-big-pr")
vpm = med([r[0] for r in vp])
print("| verify pass, `verify.reader: pg_restore` (GET + sha256 + pg_restore -f /dev/null, from S3) | %s s (median %.1f) | the same | **%.2f** |"
      % (runs_s([r[0] for r in vp]), vpm, vpm / pm))
print("| peak RSS of backupverify, drill | %.0f MiB (%.0f MiB dump), %.0f MiB (%.0f MiB dump) | | |" % (max(r[5] for r in d) / 1024, MiB(big), ds[0][5] / 1024, MiB(small)))
print("| peak RSS of backupverify, verify | %.0f MiB (%.0f MiB dump), %.0f MiB (%.0f MiB dump) | pg_restore -f /dev/null: %.0f MiB | |" % (max(r[1] for r in v) / 1024, MiB(big), vs[0][1] / 1024, MiB(small), max(r[1] for r in pr) / 1024))
print("| scale: 1,000 S3 targets, poll 1m | %s | | |" % scale.strip())
print()
print("drill phases, medians in seconds (restore includes waiting for the scratch cluster):")
print()
print("| binary | RTO | download | verify | restore | checks |")
print("|---|---:|---:|---:|---:|---:|")
for tag, label in (("before", "before (%s)" % before), ("after", "this tree")):
    rs = rows("drill-" + tag)
    if rs:
        print("| %s | %s |" % (label, " | ".join("%.1f" % med([r[i] for r in rs]) for i in range(5))))
ms = rows("manual-steps")
if ms:
    print()
    print("manual sequence steps, medians in seconds (pg_restore is the drill's restore phase's counterpart):")
    print()
    print("| total | aws s3 cp | sha256sum -c | CREATE DATABASE | pg_restore -j%s | queries |" % jobs)
    print("|---:|---:|---:|---:|---:|---:|")
    print("| %.1f | %s |" % (mm, " | ".join("%.1f" % med([r[i] for r in ms]) for i in range(5))))
    print()
    print("restore, run by run (drill's restore phase / the manual sequence's pg_restore): %s" %
          ", ".join("%.1f / %.1f" % (a[3], b[3]) for a, b in zip(d, ms)))
PY
