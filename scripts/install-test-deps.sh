#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, and nothing that is
# already there: PostgreSQL's server and client programs, Prometheus,
# promtool and amtool, Chromium (the status page is checked in a real browser),
# nss_wrapper, and the versitygw S3-compatible server.
set -euo pipefail

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

pkgs=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || pkgs+=(postgresql)
command -v pg_dump >/dev/null || pkgs+=(postgresql-client)
command -v promtool >/dev/null && command -v prometheus >/dev/null || pkgs+=(prometheus)
command -v amtool >/dev/null || pkgs+=(prometheus-alertmanager)
command -v chromium >/dev/null || pkgs+=(chromium)
command -v systemd-analyze >/dev/null || pkgs+=(systemd)
# python3: C zlib for pgdump.TestInflateMatchesCZlib (which skips without it), and the bench scripts.
command -v python3 >/dev/null || pkgs+=(python3)
# nss_wrapper: the image's entry point gives an arbitrary UID a passwd entry with it (deploy's image test).
ls /usr/lib/*/libnss_wrapper.so >/dev/null 2>&1 || pkgs+=(libnss-wrapper)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "install-test-deps: apt-get install ${pkgs[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
fi

GOBIN="$(go env GOBIN)"
[ -n "$GOBIN" ] || GOBIN="$(go env GOPATH)/bin"
VERSITYGW_VERSION=v1.8.0
if [ ! -x "$GOBIN/versitygw" ]; then
  echo "install-test-deps: go install versitygw@$VERSITYGW_VERSION"
  go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
fi
echo "install-test-deps: PostgreSQL $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tr '\n' ' '), $(promtool --version 2>&1 | head -1), versitygw at $GOBIN/versitygw"
