#!/usr/bin/env bash
# Makes the test database reachable the way the tests expect: PostgreSQL on 127.0.0.1:5432, user postgres
# without a password from loopback, database `test`. Idempotent: installs Debian's postgresql where it is
# missing, creates/starts the cluster where it is down, and does nothing where all of that already holds.
set -euo pipefail
PGHOST=127.0.0.1 PGPORT=5432
export PGHOST PGPORT

reachable() { psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; }

ensure_db() {
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'CREATE DATABASE test'
  fi
}

if reachable; then ensure_db; exit 0; fi

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
  echo "postgres-up: PostgreSQL is not reachable on 127.0.0.1:5432 and this user cannot start it (not root, no sudo)" >&2
  exit 1; fi; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  echo "postgres-up: installing Debian's postgresql" >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
ver=$(ls /usr/lib/postgresql | sort -V | tail -n1)
if [ ! -d "/etc/postgresql/$ver/main" ]; then
  as_root pg_createcluster "$ver" main --port 5432 >/dev/null
fi
hba="/etc/postgresql/$ver/main/pg_hba.conf"
if ! grep -q 'payevents-tests' "$hba"; then
  # first match wins: the loopback rule for the postgres user goes above the distribution's scram rules
  as_root sed -i '1i host all postgres 127.0.0.1/32 trust  # payevents-tests\nhost all postgres ::1/128 trust  # payevents-tests' "$hba"
fi
if pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
  as_root pg_ctlcluster "$ver" main reload
else
  as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start
fi
for _ in $(seq 1 60); do reachable && break; sleep 0.5; done
if ! reachable; then
  echo "postgres-up: PostgreSQL $ver did not become reachable on 127.0.0.1:5432 (see /var/log/postgresql/postgresql-$ver-main.log)" >&2
  exit 1
fi
ensure_db
