# Sourced by scripts/test.sh: make sure PostgreSQL, Redis and Chromium are there, installing them if needed.
# Uses servers already listening on loopback; otherwise installs Debian's packages and starts them.

_apt_install() {
  if [ -z "${_APT_UPDATED:-}" ]; then apt-get update -qq >/dev/null; _APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

_wait_for() {  # _wait_for DESCRIPTION COMMAND...
  local what=$1; shift
  for _ in $(seq 1 60); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "error: $what did not come up" >&2; return 1
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  command -v pg_ctlcluster >/dev/null || _apt_install postgresql
  local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # A test machine's own throwaway server: let loopback connections in without a password.
  grep -q "prefloop-tests" "$hba" || sed -i "1i host all all 127.0.0.1/32 trust # prefloop-tests\nhost all all ::1/128 trust # prefloop-tests" "$hba"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  _wait_for "PostgreSQL" pg_isready -q -h 127.0.0.1 -p 5432
}

ensure_redis() {
  if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then return 0; fi
  command -v redis-server >/dev/null || _apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no --dir /var/lib/redis \
    --logfile /var/log/redis/prefloop-tests.log
  _wait_for "Redis" bash -c "exec 3<>/dev/tcp/127.0.0.1/6379"
}

ensure_chromium() {
  [ -x /usr/bin/chromium ] || _apt_install chromium
}
