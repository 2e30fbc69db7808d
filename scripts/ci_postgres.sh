#!/usr/bin/env bash
# A throw-away PostgreSQL server on loopback for the postgres-marked tuning tests.
#
# Sourced by .ci/run:   . scripts/ci_postgres.sh    -> exports S2D_PG_URL, stops the server on exit
# Run by hand:          eval "$(bash scripts/ci_postgres.sh --print)"   (leaves the server running;
#                        stop it with: pg_ctl -D "$S2D_PG_DATA" stop, as the user that started it)
#
# Installs Debian's `postgresql` package when its binaries are missing (needs root: apt-get), then
# initdb's a cluster in a temp dir and starts it on 127.0.0.1 (a free port), run as the `postgres`
# user when we are root (the server refuses to run as root), as ourselves otherwise. If anything
# fails it says so and leaves S2D_PG_URL unset: the postgres tests then skip with that reason.

s2d_pg_main() {
  local pgbin port data user run
  pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$pgbin" ] || [ ! -x "$pgbin/initdb" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "ci_postgres: installing Debian's postgresql" >&2
      DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null || {
          echo "ci_postgres: WARNING apt-get install postgresql failed; postgres tests will be skipped" >&2
          return 0; }
      pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    else
      echo "ci_postgres: WARNING no PostgreSQL binaries and not root; postgres tests will be skipped" >&2
      return 0
    fi
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  data=$(mktemp -d /tmp/s2d-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    user=postgres
    chown postgres:postgres "$data"
    run=(runuser -u postgres --)
  else
    user=$(id -un)
    run=()
  fi
  "${run[@]}" "$pgbin/initdb" -D "$data/db" -A trust -U "$user" >"$data/initdb.log" 2>&1 || {
    echo "ci_postgres: WARNING initdb failed (see $data/initdb.log); postgres tests will be skipped" >&2
    return 0; }
  "${run[@]}" "$pgbin/pg_ctl" -D "$data/db" -l "$data/server.log" -w -t 30 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $data -c max_connections=100 -c fsync=off" start >/dev/null || {
    echo "ci_postgres: WARNING server did not start (see $data/server.log); postgres tests will be skipped" >&2
    return 0; }
  "${run[@]}" "$pgbin/createdb" -h 127.0.0.1 -p "$port" -U "$user" s2d_test || {
    echo "ci_postgres: WARNING createdb failed; postgres tests will be skipped" >&2
    return 0; }
  export S2D_PG_URL="postgresql+psycopg://$user@127.0.0.1:$port/s2d_test"
  export S2D_PG_DATA="$data/db"
  S2D_PG_STOP=("${run[@]}" "$pgbin/pg_ctl" -D "$data/db" -m fast stop)
  echo "ci_postgres: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port, S2D_PG_URL=$S2D_PG_URL" >&2
}

s2d_pg_stop() {
  if [ -n "${S2D_PG_STOP+x}" ]; then
    "${S2D_PG_STOP[@]}" >/dev/null 2>&1 || true
    rm -rf "$(dirname "$S2D_PG_DATA")"
  fi
}

if [ "${BASH_SOURCE[0]}" != "$0" ]; then
  # sourced: start, and stop the server when the sourcing shell exits
  s2d_pg_main
  trap s2d_pg_stop EXIT
else
  s2d_pg_main
  if [ "${1:-}" = "--print" ] && [ -n "${S2D_PG_URL:-}" ]; then
    echo "export S2D_PG_URL='$S2D_PG_URL' S2D_PG_DATA='$S2D_PG_DATA'"
  else
    s2d_pg_stop
  fi
fi
