#!/usr/bin/env bash
# Installs (when missing), starts and stops the PostgreSQL and RabbitMQ that Marketplace uses,
# on loopback, on non-default ports, with data under .data/ (ignored by git).
# Usage: infra/servers.sh start|stop|status [postgres|rabbitmq]
# Running start twice is harmless; stop stops only the servers this script started.
# A private pair (the fault scenarios kill and restart theirs; never the shared one): other ports and a data folder
# of its own through the environment, e.g.
#   MP_DATA_DIR=/tmp/mp-faults MP_PG_PORT=56432 MP_RABBIT_PORT=56572 MP_RABBIT_MGMT_PORT=56573 \
#   MP_RABBIT_DIST_PORT=56574 MP_EPMD_PORT=56569 MP_RABBIT_NODENAME=faults@localhost infra/servers.sh start
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd /  # runuser postgres cannot enter a private checkout; every path below is absolute

DATA="${MP_DATA_DIR:-$MP_ROOT/.data}"
mkdir -p "$DATA"

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
rabbit_bin() { dirname "$(dpkg -L rabbitmq-server 2>/dev/null | grep 'bin/rabbitmq-server$' | head -n 1)"; }

install_packages() {
  local want=()
  [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || want+=(postgresql postgresql-contrib)
  dpkg -s rabbitmq-server >/dev/null 2>&1 || want+=(rabbitmq-server)
  command -v curl >/dev/null 2>&1 || want+=(curl)
  [ ${#want[@]} -eq 0 ] && return 0
  need_root
  log "installing ${want[*]} from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  # The packages try to start their own default instances; we do not want those.
  $SUDO apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
}

# PostgreSQL refuses to run as root, and the postgres user must be able to reach its data folder.
# A checkout under /root is not traversable by postgres: then the data lives in /var/tmp and .data/pg links to it.
pg_data_dir() {
  if runuser -u postgres -- test -x "$DATA" 2>/dev/null; then echo "$DATA/pg"; else
    local alt="/var/tmp/marketplace-$(printf '%s' "$MP_ROOT${MP_DATA_DIR:+:$MP_DATA_DIR}" | cksum | cut -d' ' -f1)"
    mkdir -p "$alt"; chmod 755 "$alt"
    [ -L "$DATA/pg" ] || { rm -rf "$DATA/pg"; ln -s "$alt/pg" "$DATA/pg"; }
    [ -f "$alt/owner" ] || printf '%s\n' "$DATA" > "$alt/owner"
    echo "$alt/pg"
  fi
}

# Such a folder outlives its checkout when the checkout is deleted (a clean clone in a temporary folder, say): each
# start removes the ones whose checkout no longer links to them and whose PostgreSQL is not running.
prune_orphaned_pg_data() {
  local d owner
  for d in /var/tmp/marketplace-*; do
    [ -f "$d/owner" ] || continue
    owner="$(cat "$d/owner")"
    [ "$(readlink "$owner/pg" 2>/dev/null)" = "$d/pg" ] && continue
    pg_running "$d/pg" && continue
    log "removing $d: the checkout it belonged to ($owner) is gone"
    rm -rf "$d"
  done
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pg_running() { [ -f "$1/postmaster.pid" ] && kill -0 "$(head -n 1 "$1/postmaster.pid")" 2>/dev/null; }

psql_admin() { PGOPTIONS="-c client_min_messages=warning" PGPASSWORD="$MP_PG_ADMIN_PASSWORD" psql -h 127.0.0.1 -p "$MP_PG_PORT" -U "$MP_PG_ADMIN_USER" -v ON_ERROR_STOP=1 -q "$@"; }

start_postgres() {
  local bin pgdata sock
  bin="$(pg_bin)"; pgdata="$(pg_data_dir)"; sock="$(dirname "$pgdata")"
  chown postgres "$sock" 2>/dev/null || true
  if [ ! -f "$pgdata/PG_VERSION" ] && ! port_open "$MP_PG_PORT"; then
    log "initialising PostgreSQL in $pgdata"
    mkdir -p "$pgdata"; chown postgres "$pgdata"
    local pw; pw="$(mktemp)"; echo "$MP_PG_ADMIN_PASSWORD" > "$pw"; chown postgres "$pw"
    runuser -u postgres -- "$bin/initdb" -D "$pgdata" -U "$MP_PG_ADMIN_USER" --pwfile="$pw" -A scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    rm -f "$pw"
    cat >> "$pgdata/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $MP_PG_PORT
unix_socket_directories = '$sock'
max_connections = 400
shared_buffers = 256MB
fsync = ${MP_PG_FSYNC:-on}
synchronous_commit = ${MP_PG_SYNC_COMMIT:-on}
CONF
  fi
  if pg_running "$pgdata"; then log "PostgreSQL already running on 127.0.0.1:$MP_PG_PORT"
  elif port_open "$MP_PG_PORT"; then log "a PostgreSQL not started by us (Docker?) answers on 127.0.0.1:$MP_PG_PORT: using it"; else
    log "starting PostgreSQL on 127.0.0.1:$MP_PG_PORT"
    # Ours from the launch on: a server still starting when pg_ctl gives up is stopped by stop (down.sh) too.
    touch "$DATA/pg.started-by-us"
    if ! runuser -u postgres -- "$bin/pg_ctl" -D "$pgdata" -l "$pgdata/server.log" -w -t 60 start >/dev/null; then
      log "error: PostgreSQL did not start; the end of its log:"
      tail -n 20 "$pgdata/server.log" | cut -c1-400 >&2 || true
      stop_postgres
      die "PostgreSQL did not start (log: $pgdata/server.log)"
    fi
  fi
  # One login and one schema per service; the extension for the booking exclusion constraint.
  psql_admin -d postgres <<SQL
SELECT 'CREATE DATABASE marketplace' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'marketplace')\gexec
DO \$\$ DECLARE s text; BEGIN
  FOREACH s IN ARRAY ARRAY['gateway','listings','bidding','scheduling','billing'] LOOP
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = s) THEN
      EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', s, s);
    END IF;
  END LOOP;
END \$\$;
SQL
  psql_admin -d marketplace <<SQL
CREATE EXTENSION IF NOT EXISTS btree_gist;
DO \$\$ DECLARE s text; BEGIN
  FOREACH s IN ARRAY ARRAY['gateway','listings','bidding','scheduling','billing'] LOOP
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION %I', s, s);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
  END LOOP;
END \$\$;
SQL
}

stop_postgres() {
  local pgdata; pgdata="$(pg_data_dir)"
  if [ -f "$DATA/pg.started-by-us" ] && pg_running "$pgdata"; then
    log "stopping PostgreSQL"
    # MP_PG_STOP_MODE=immediate is a crash as far as the clients can tell (the fault scenarios use it).
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$pgdata" -m "${MP_PG_STOP_MODE:-fast}" -w stop >/dev/null || true
  fi
  rm -f "$DATA/pg.started-by-us"
}

rabbit_env() {
  export HOME="$DATA/rabbitmq"
  export RABBITMQ_NODENAME="${MP_RABBIT_NODENAME:-marketplace@localhost}"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$MP_RABBIT_PORT"
  export RABBITMQ_DIST_PORT="$MP_RABBIT_DIST_PORT"
  export ERL_EPMD_PORT="$MP_EPMD_PORT"
  export RABBITMQ_MNESIA_BASE="$DATA/rabbitmq/mnesia"
  export RABBITMQ_LOG_BASE="$DATA/rabbitmq/log"
  export RABBITMQ_PID_FILE="$DATA/rabbitmq/rabbit.pid"
  export RABBITMQ_CONFIG_FILE="$DATA/rabbitmq/rabbitmq"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$DATA/rabbitmq/enabled_plugins"
}

rabbit_running() { [ -f "$DATA/rabbitmq/rabbit.pid" ] && kill -0 "$(cat "$DATA/rabbitmq/rabbit.pid")" 2>/dev/null; }

ctl() { timeout 60 "$(rabbit_bin)/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@" </dev/null; }

start_rabbitmq() {
  rabbit_env
  mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  # The default_* keys make a fresh node boot with our user and vhost: no CLI call needed (each boots an Erlang VM,
  # which takes seconds, up to half a minute on a busy machine). A node made before them gets them through the CLI below.
  cat > "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$MP_RABBIT_PORT
management.tcp.ip = 127.0.0.1
management.tcp.port = $MP_RABBIT_MGMT_PORT
loopback_users = none
default_user = $MP_RABBIT_USER
default_pass = $MP_RABBIT_PASSWORD
default_vhost = $MP_RABBIT_VHOST
default_user_tags.administrator = true
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
CONF
  echo '[rabbitmq_management].' > "$RABBITMQ_ENABLED_PLUGINS_FILE"
  # Our own epmd on our private port, detached from our output: one that inherits stdout keeps a caller's pipe open.
  epmd -port "$MP_EPMD_PORT" -daemon </dev/null >/dev/null 2>&1 || true
  if rabbit_running; then log "RabbitMQ already running on 127.0.0.1:$MP_RABBIT_PORT"
  elif port_open "$MP_RABBIT_PORT"; then
    log "a RabbitMQ not started by us (Docker?) answers on 127.0.0.1:$MP_RABBIT_PORT: using it as configured there"
    return 0
  else
    log "starting RabbitMQ on 127.0.0.1:$MP_RABBIT_PORT (management on $MP_RABBIT_MGMT_PORT)"
    rm -f "$RABBITMQ_PID_FILE"
    ( cd "$HOME" && setsid "$(rabbit_bin)/rabbitmq-server" </dev/null > "$RABBITMQ_LOG_BASE/console.log" 2>&1 & echo $! > "$DATA/rabbitmq/launcher.pid" )
    # Ours from the launch on, not from when it answers: a node that fails half-way is still stopped by stop (down.sh).
    touch "$DATA/rabbit.started-by-us"
    # The AMQP listener opens near the end of the boot; the management API (waited for below) comes last.
    for _ in $(seq 1 600); do port_open "$MP_RABBIT_PORT" && break; sleep 0.2; rabbit_launched || break; done
    port_open "$MP_RABBIT_PORT" || rabbit_failed "RabbitMQ did not start"
  fi
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$MP_RABBIT_MGMT_PORT/api/overview" 2>/dev/null)" != 000 ] && break
    sleep 0.2
  done
  if ! rabbit_api_ready; then
    ctl wait "$RABBITMQ_PID_FILE" --timeout 60 >/dev/null || rabbit_failed "RabbitMQ did not finish starting"
    ctl list_users --silent | grep -q "^$MP_RABBIT_USER\b" || ctl add_user "$MP_RABBIT_USER" "$MP_RABBIT_PASSWORD" >/dev/null
    ctl set_user_tags "$MP_RABBIT_USER" administrator >/dev/null
    ctl list_vhosts --silent | grep -qx "$MP_RABBIT_VHOST" || ctl add_vhost "$MP_RABBIT_VHOST" >/dev/null
    ctl set_permissions -p "$MP_RABBIT_VHOST" "$MP_RABBIT_USER" '.*' '.*' '.*' >/dev/null
  fi
  # Management API must answer: tests create a vhost per run through it.
  for _ in $(seq 1 300); do rabbit_api_ready && return 0; sleep 0.2; done
  rabbit_failed "RabbitMQ management API did not answer on $MP_RABBIT_MGMT_PORT"
}

# The node we launched, while any of it runs: the launcher (a subshell of this script, which waits for it) has one
# child, the start script, which setsid made the leader of a process group of its own (with the Erlang VM and its
# helpers). Only a RabbitMQ child counts (after a reboot the launcher's pid may belong to something else).
rabbit_node_group() { [ -f "$DATA/rabbitmq/launcher.pid" ] && pgrep -P "$(cat "$DATA/rabbitmq/launcher.pid")" -f rabbit | head -n 1; }
rabbit_launched() { [ -n "$(rabbit_node_group)" ]; }

# A start that failed: what the node said, then the node is stopped (a half-started node would hold its ports and
# make the next start fail too), then the error.
rabbit_failed() {
  log "error: $1; the end of its logs:"
  tail -n 20 "$RABBITMQ_LOG_BASE/console.log" 2>/dev/null | cut -c1-400 >&2 || true
  local node_log; node_log=$(ls -t "$RABBITMQ_LOG_BASE"/*.log 2>/dev/null | grep -v console.log | head -n 1 || true)
  [ -n "$node_log" ] && { log "$node_log:"; tail -n 20 "$node_log" | cut -c1-400 >&2; }
  stop_rabbitmq
  die "$1 (logs in $RABBITMQ_LOG_BASE)"
}

# Our user is an administrator with every right on our vhost (and the management API answers).
rabbit_api_ready() {
  curl -fsS -u "$MP_RABBIT_USER:$MP_RABBIT_PASSWORD" \
    "http://127.0.0.1:$MP_RABBIT_MGMT_PORT/api/permissions/$MP_RABBIT_VHOST/$MP_RABBIT_USER" 2>/dev/null | grep -q '"configure":".\*"'
}

stop_rabbitmq() {
  rabbit_env
  if [ -f "$DATA/rabbit.started-by-us" ] && rabbit_running; then
    log "stopping RabbitMQ"
    ctl stop "$RABBITMQ_PID_FILE" >/dev/null 2>&1 || kill "$(cat "$RABBITMQ_PID_FILE")" 2>/dev/null || true
  fi
  # Whatever is left of what we launched (a node that never wrote its pid file, or did not stop): TERM, then KILL.
  if [ -f "$DATA/rabbit.started-by-us" ] && rabbit_launched; then
    local group; group=$(rabbit_node_group || true)
    log "stopping what is left of the RabbitMQ we launched (process group $group)"
    kill -TERM -- "-$group" 2>/dev/null || true
    for _ in $(seq 1 50); do rabbit_launched || break; sleep 0.2; done
    kill -KILL -- "-$group" 2>/dev/null || true
  fi
  rm -f "$DATA/rabbit.started-by-us" "$DATA/rabbitmq/launcher.pid"
  # The epmd we started on our private port; never the system's.
  timeout 10 epmd -port "$MP_EPMD_PORT" -kill >/dev/null 2>&1 || true
}

which="${2:-both}"
case "$which" in both|postgres|rabbitmq) ;; *) echo "usage: $0 start|stop|status [postgres|rabbitmq]" >&2; exit 2 ;; esac
case "${1:-}" in
  start) install_packages
         prune_orphaned_pg_data
         [ "$which" = rabbitmq ] || start_postgres
         [ "$which" = postgres ] || start_rabbitmq
         log "PostgreSQL 127.0.0.1:$MP_PG_PORT, RabbitMQ 127.0.0.1:$MP_RABBIT_PORT (management http://127.0.0.1:$MP_RABBIT_MGMT_PORT)" ;;
  stop) [ "$which" = postgres ] || stop_rabbitmq
        [ "$which" = rabbitmq ] || stop_postgres ;;
  status) pg_running "$(pg_data_dir)" && echo "postgres: running" || echo "postgres: stopped"
          rabbit_env; rabbit_running && echo "rabbitmq: running" || echo "rabbitmq: stopped" ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
