#!/usr/bin/env bash
# Writes alerts.yaml and deploy/kubernetes/prometheusrule.yaml from
# deploy/prometheus/alerts.in.yaml, the one source of the alert rules, with the
# scrape job's name in the rules that select on it (BackupVerifyDown/Absent).
#
#   JOB      the scrape job's name (default backupverify). With kustomize's
#            namePrefix, the ServiceMonitor's job is the renamed Service.
#   OUT_DIR  write alerts.yaml and prometheusrule.yaml there instead (tests).
#
# The tests fail when the committed files differ from what this writes with
# the default job.
set -euo pipefail
cd "$(dirname "$0")/.."
job="${JOB:-backupverify}"
# A Prometheus job name, as Kubernetes and static configs spell them; no
# quotes, backslashes or slashes, so it is safe in PromQL, YAML and sed.
if [[ ! "$job" =~ ^[A-Za-z0-9_][A-Za-z0-9_.:-]*$ ]]; then
  echo "gen-alerts: JOB=\"$job\" is not a job name ([A-Za-z0-9_.:-], not starting with . : or -)" >&2
  exit 2
fi
if [[ -n "${OUT_DIR:-}" ]]; then
  alerts="$OUT_DIR/alerts.yaml"
  rule="$OUT_DIR/prometheusrule.yaml"
else
  alerts=alerts.yaml
  rule=deploy/kubernetes/prometheusrule.yaml
fi
template=deploy/prometheus/alerts.in.yaml

{
  echo "# Generated from $template by scripts/gen-alerts.sh (make generate JOB=$job): do not edit."
  echo "#"
  sed "s/@JOB@/$job/g" "$template"
} > "$alerts"

{
  cat <<HEAD
# Generated from $template by scripts/gen-alerts.sh (make generate JOB=$job): do not edit.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: backupverify
  labels:
    release: prometheus   # match your Prometheus's ruleSelector
spec:
HEAD
  grep -v '^#' "$alerts" | sed 's/^/  /'
} > "$rule"
