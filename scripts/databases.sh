#!/usr/bin/env bash
# Makes sure PostgreSQL (127.0.0.1:5432, trust) and MariaDB (127.0.0.1:3306, root) answer,
# installing and starting them on Debian/Ubuntu when they are missing (the participant SDK's
# tests use them).
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
maria_up() { mariadb-admin -h 127.0.0.1 -uroot ping >/dev/null 2>&1 || mysqladmin -h 127.0.0.1 -uroot ping >/dev/null 2>&1; }

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
if ! pg_up; then
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
fi
if ! command -v mariadbd >/dev/null 2>&1 && ! command -v mysqld >/dev/null 2>&1; then
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq mariadb-server >/dev/null
fi
if ! maria_up; then
  $SUDO start-stop-daemon --start --oknodo --background --exec "$(command -v mariadbd || command -v mysqld)"
fi
wait_up() {
  for _ in $(seq 1 60); do pg_up && maria_up && return 0; sleep 0.5; done
  echo "databases: PostgreSQL or MariaDB did not come up" >&2
  exit 1
}
wait_up

# Two-phase commit on PostgreSQL needs prepared transactions; the setting takes a restart.
prepared=$(psql -h 127.0.0.1 -U postgres -tAc "show max_prepared_transactions" 2>/dev/null || echo "?")
if [ "$prepared" = "0" ]; then
  echo "databases: enabling max_prepared_transactions on PostgreSQL (restart)"
  psql -h 127.0.0.1 -U postgres -qc "ALTER SYSTEM SET max_prepared_transactions = 100"
  ver=$(ls /etc/postgresql | sort -V | tail -n1)
  $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main restart
  wait_up
fi
echo "databases: up (PostgreSQL max_prepared_transactions=$(psql -h 127.0.0.1 -U postgres -tAc 'show max_prepared_transactions'))"
