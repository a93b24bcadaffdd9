#!/bin/sh
# Captures pg_restore's verbatim stderr for the parser's table test
# (verifier/pgscratch/testdata/pg_restore/). It runs a throwaway cluster of the
# PostgreSQL whose bin folder is given (default 15), makes the errors happen for
# real, and writes one file per case, named <case>-pg<major>.stderr.
# Run as root (the cluster runs as the postgres OS user) or as postgres.
set -eu
bin=${1:-/usr/lib/postgresql/15/bin}
out=$(cd "$(dirname "$0")/.." && pwd)/verifier/pgscratch/testdata/pg_restore
major=$("$bin/pg_config" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
dir=$(mktemp -d /tmp/bvcap.XXXXXX)
chmod 777 "$dir"
as_pg() { if [ "$(id -un)" = postgres ]; then sh -c "$1"; else su postgres -s /bin/sh -c "$1"; fi; }
port=$((20000 + $$ % 20000))
cleanup() { as_pg "$bin/pg_ctl -D $dir/pg -m immediate stop" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
as_pg "$bin/initdb -D $dir/pg -A trust -U postgres" >/dev/null
as_pg "$bin/pg_ctl -D $dir/pg -o '-k $dir -p $port -c listen_addresses=' -l $dir/log -w start" >/dev/null
psql="$bin/psql -X -q -h $dir -p $port -U postgres"
as_pg "$psql -c 'CREATE ROLE restorer LOGIN' -c 'CREATE DATABASE src' -c 'CREATE DATABASE dst OWNER restorer'"
as_pg "$psql -d src" <<'SQL'
CREATE EXTENSION pg_stat_statements;
CREATE TABLE users (id int PRIMARY KEY, email text UNIQUE);
INSERT INTO users VALUES (1, 'alice@example.com'), (2, 'bob@example.com');
COMMENT ON TABLE users IS 'people';
SQL
as_pg "$bin/pg_dump -h $dir -p $port -U postgres -Fc -f $dir/src.dump src"
restore() { as_pg "$bin/pg_restore --verbose --no-owner --no-acl --jobs ${1:-1} --dbname 'host=$dir port=$port user=restorer dbname=dst' $dir/src.dump" 2>&1 >/dev/null || true; }
# 1: a role without superuser cannot create pg_stat_statements nor comment on it.
restore >"$out/extension-pg$major.stderr"
# 2: the same dump again: every object exists, and the rows collide with the
# unique constraint (DETAIL carries the row's values).
restore >"$out/restored-twice-pg$major.stderr"
# 3: once more with parallel jobs, as drills run: workers report their errors.
restore 2 >"$out/restored-twice-jobs2-pg$major.stderr"
echo "wrote $out/*-pg$major.stderr"
