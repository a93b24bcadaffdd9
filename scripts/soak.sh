#!/usr/bin/env bash
# The simulated day (issue 11): the daemon, versitygw behind a fault proxy,
# a real Prometheus evaluating alerts.yaml every second, and a driver taking
# backups and injecting one fault per minute from the plan in soak/plan_test.go.
#
#   SOAK_DURATION=60m ./scripts/soak.sh     (the default is 60m)
#
# Prints the table (fault, expected alerts, observed alerts, time to fire,
# time to resolve, result) and exits non-zero when any slot failed.
set -euo pipefail
cd "$(dirname "$0")/.."

duration="${SOAK_DURATION:-60m}"
table="$(mktemp -t soak-table.XXXXXX)"
log="$(mktemp -t soak-log.XXXXXX)"
trap 'rm -f "$table"' EXIT

# Seconds in a Go duration such as 60m, 1h30m or 90s.
seconds() {
  local d="$1" total=0 n unit
  while [[ "$d" =~ ^([0-9]+)([hms])(.*)$ ]]; do
    n="${BASH_REMATCH[1]}" unit="${BASH_REMATCH[2]}" d="${BASH_REMATCH[3]}"
    case "$unit" in h) total=$((total + n * 3600)) ;; m) total=$((total + n * 60)) ;; s) total=$((total + n)) ;; esac
  done
  [ -z "$d" ] || { echo "soak: SOAK_DURATION=$1 is not like 60m, 1h30m or 90s" >&2; exit 2; }
  echo "$total"
}
# The test's own deadline: the duration, plus set-up, the slot under way
# and the end-of-day checks.
secs="$(seconds "$duration")"
echo "soak: running for $duration (log: $log)"
status=0
SOAK_DURATION="$duration" SOAK_TABLE="$table" \
  go test -count=1 -v -run '^TestSoak$' -timeout "$((secs + 900))s" ./soak/ >"$log" 2>&1 || status=$?
if [ -s "$table" ]; then
  cat "$table"
else
  tail -50 "$log"
fi
grep -E '^\s+soak_test.go:[0-9]+: .*(FAIL|left behind|not within|still pending)' "$log" | grep -v 'slot done' | head -40 || true
exit "$status"
