#!/usr/bin/env bash
# Make PostgreSQL (127.0.0.1:5432) and Redis (127.0.0.1:6379) reachable for the tests.
# Idempotent: does nothing when both answer.  Starts them when down and installs them with apt
# (as root) when absent -- apt does not start services on these machines.  Never skips:
# exits non-zero when either is still unreachable after ~30 s.
set -euo pipefail

say() { echo "services: $*"; }
die() { echo "services: ERROR: $*" >&2; exit 1; }

pg_up()    { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_up() { [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
wait_for() { local i; for ((i = 0; i < 30; i++)); do "$1" && return 0; sleep 1; done; return 1; }

apt_updated=
apt_install() {
  [ "$(id -u)" = 0 ] || die "$* is not installed and we are not root to install it"
  say "installing $* with apt"
  [ -n "$apt_updated" ] || { apt-get update -q; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

start_postgres() {
  local fresh= ver
  command -v pg_ctlcluster >/dev/null && command -v pg_isready >/dev/null || { apt_install postgresql; fresh=1; }
  if ! ls /etc/postgresql/*/main/postgresql.conf >/dev/null 2>&1; then
    pg_createcluster "$(ls /usr/lib/postgresql | sort -V | tail -n1)" main; fresh=1
  fi
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  if [ -n "$fresh" ]; then
    # A cluster we just created: let user postgres in from localhost without a password,
    # as on the dev machines (the test DATABASE_URL carries none).
    sed -i '1i host all postgres 127.0.0.1/32 trust\nhost all postgres ::1/128 trust' \
      "/etc/postgresql/$ver/main/pg_hba.conf"
  fi
  say "starting PostgreSQL $ver"
  # "Already running" is not an error here: reachability is checked below.
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  if [ -n "$fresh" ]; then pg_ctlcluster --skip-systemctl-redirect "$ver" main reload || true; fi
}

start_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  say "starting Redis"
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
}

pg_up || start_postgres
redis_up || start_redis

wait_for pg_up || die "PostgreSQL does not accept connections on 127.0.0.1:5432 (see /var/log/postgresql/)"
PGCONNECT_TIMEOUT=5 psql -w -h 127.0.0.1 -U postgres -d postgres -Atqc 'select 1' >/dev/null ||
  die "PostgreSQL is up but user postgres cannot log in from 127.0.0.1 without a password (pg_hba.conf)"
wait_for redis_up || die "Redis does not answer PING on 127.0.0.1:6379 (see /var/log/redis/ci.log)"
say "PostgreSQL and Redis are up"
