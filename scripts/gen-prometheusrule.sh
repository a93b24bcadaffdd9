#!/usr/bin/env bash
# Writes deploy/kubernetes/prometheusrule.yaml from alerts.yaml, the one source
# of truth for the alert rules. The tests fail when the two differ.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  cat <<'HEAD'
# Generated from alerts.yaml by scripts/gen-prometheusrule.sh: do not edit.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: backupverify
  labels:
    release: prometheus   # match your Prometheus's ruleSelector
spec:
HEAD
  grep -v '^#' alerts.yaml | sed 's/^/  /'
} > deploy/kubernetes/prometheusrule.yaml
