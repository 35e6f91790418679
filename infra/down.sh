#!/usr/bin/env bash
# Stops what infra/up.sh started: the services, then PostgreSQL and RabbitMQ (only if our scripts started them).
# --services-only leaves the servers running.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

# TERM every service first, then wait for them together: each drains in-flight messages on its own.
pids=()
for pidfile in "$MP_RUN_DIR"/*.pid; do
  [ -e "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    log "stopping $(basename "$pidfile" .pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    pids+=("$pid")
  fi
  rm -f "$pidfile"
done
for pid in "${pids[@]}"; do
  for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
done
[ "${1:-}" = "--services-only" ] && exit 0
"$MP_ROOT/infra/servers.sh" stop
