#!/usr/bin/env bash
# The load driver against a marketplace of its own: the five services and the Stripe stand-in on free loopback ports
# (never 8080-8089), a fresh database on the shared PostgreSQL and a fresh virtual host on the shared RabbitMQ, so a run
# neither needs nor disturbs the marketplace of infra/up.sh or anyone's tests. Everything is stopped and dropped after.
#
# Usage: infra/load/run.sh [load driver args]        e.g. --short, or --rate 20 --duration 30 --json out.json
#   MP_LOAD_NO_BUILD=1      skip the Release build
#   MP_LOAD_RABBIT_CLUSTER=1  use the three-node cluster of infra/rabbit-cluster.sh (started if needed) with quorum queues
#   MP_MIN_LEASE_SECONDS    the marketplace's minimum lease (default 60; the driver's --lease-seconds must not be lower)
#   MP_LOAD_KEEP_DB=1       keep the run's database afterwards (to read why an order ended as it did); drop it yourself
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../env.sh"
cd "$MP_ROOT"

"$MP_ROOT/infra/servers.sh" start
ensure_dotnet
if [ "${MP_LOAD_NO_BUILD:-}" != 1 ]; then
  log "building (Release)"
  dotnet build Marketplace.sln -c Release -nologo -clp:ErrorsOnly -v:q >/dev/null
fi

stamp="$(date -u +%Y%m%d%H%M%S)_$$"
db="mp_load_$stamp"
vhost="load-$stamp"
run_dir="$MP_RUN_DIR/load-$stamp"
mkdir -p "$run_dir/logs"

rabbit_port="$MP_RABBIT_PORT"; rabbit_mgmt="$MP_RABBIT_MGMT_PORT"; rabbit_extra=(); rabbit_ports="$MP_RABBIT_PORT"
started_cluster=0
if [ "${MP_LOAD_RABBIT_CLUSTER:-}" = 1 ]; then
  [ "$("$MP_ROOT/infra/rabbit-cluster.sh" status | grep -c ': running')" -eq 3 ] || started_cluster=1
  "$MP_ROOT/infra/rabbit-cluster.sh" start
  IFS=, read -r -a cluster_nodes <<<"$("$MP_ROOT/infra/rabbit-cluster.sh" nodes)"
  rabbit_port="${cluster_nodes[0]##*:}"; rabbit_mgmt="${MP_CLUSTER_MGMT_BASE:-25720}"; rabbit_mgmt=$((rabbit_mgmt + 1))
  rabbit_extra=("RabbitMq__QuorumQueues=true"); rabbit_ports=""
  for i in "${!cluster_nodes[@]}"; do
    rabbit_extra+=("RabbitMq__ClusterNodes__$i=${cluster_nodes[$i]}"); rabbit_ports+="${rabbit_ports:+,}${cluster_nodes[$i]##*:}"
  done
fi

psql_admin() { PGOPTIONS="-c client_min_messages=warning" PGPASSWORD="$MP_PG_ADMIN_PASSWORD" psql -h 127.0.0.1 -p "$MP_PG_PORT" -U "$MP_PG_ADMIN_USER" -v ON_ERROR_STOP=1 -q "$@"; }
mgmt() { curl -fsS -u "$MP_RABBIT_USER:$MP_RABBIT_PASSWORD" -H 'content-type: application/json' "$@"; }

cleanup() {
  for pidfile in "$run_dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
  done
  for pidfile in "$run_dir"/*.pid; do
    [ -e "$pidfile" ] || continue
    local pid; pid="$(cat "$pidfile")"
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  local dropped="database $db and vhost $vhost dropped"
  if [ "${MP_LOAD_KEEP_DB:-}" = 1 ]; then dropped="vhost $vhost dropped, database $db kept"
  else psql_admin -d postgres -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true; fi
  mgmt -X DELETE "http://127.0.0.1:$rabbit_mgmt/api/vhosts/$vhost" >/dev/null 2>&1 || true
  log "services stopped; $dropped (logs kept in ${run_dir#"$MP_ROOT"/})"
  if [ "$started_cluster" = 1 ]; then "$MP_ROOT/infra/rabbit-cluster.sh" stop; fi
}
trap cleanup EXIT

log "database $db, vhost $vhost"
psql_admin -d postgres -c "CREATE DATABASE $db" >/dev/null
psql_admin -d "$db" >/dev/null <<SQL
CREATE EXTENSION IF NOT EXISTS btree_gist;
DO \$\$ DECLARE s text; BEGIN
  FOREACH s IN ARRAY ARRAY['gateway','listings','bidding','scheduling','billing'] LOOP
    EXECUTE format('CREATE SCHEMA %I AUTHORIZATION %I', s, s);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', s);
  END LOOP;
END \$\$;
SQL
mgmt -X PUT "http://127.0.0.1:$rabbit_mgmt/api/vhosts/$vhost" >/dev/null
mgmt -X PUT -d '{"configure":".*","write":".*","read":".*"}' "http://127.0.0.1:$rabbit_mgmt/api/permissions/$vhost/$MP_RABBIT_USER" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'; }
declare -A port
for s in gateway listings bidding scheduling billing stripe-fake; do port[$s]="$(free_port)"; done
url() { echo "http://127.0.0.1:${port[$1]}"; }
admin_key="mk_admin_load_$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')"

common_env=(
  "DOTNET_ENVIRONMENT=Production" "ASPNETCORE_ENVIRONMENT=Production"
  "Gateway__InternalToken=load-$stamp" "Gateway__BootstrapAdminKey=$admin_key"
  "Market__MinLeaseSeconds=${MP_MIN_LEASE_SECONDS:-60}"
  "RabbitMq__Port=$rabbit_port" "RabbitMq__VirtualHost=$vhost"
  "RabbitMq__Username=$MP_RABBIT_USER" "RabbitMq__Password=$MP_RABBIT_PASSWORD" "${rabbit_extra[@]}"
  "Stripe__ApiBase=$(url stripe-fake)" "Stripe__ApiKey=sk_test_local_stand_in" "Stripe__WebhookSecret=whsec_load_stand_in"
  "StripeFake__WebhookUrl=$(url gateway)/v1/webhooks/stripe" "StripeFake__WebhookSecret=whsec_load_stand_in"
  "Gateway__Upstreams__listings=$(url listings)" "Gateway__Upstreams__bidding=$(url bidding)"
  "Gateway__Upstreams__scheduling=$(url scheduling)" "Gateway__Upstreams__billing=$(url billing)"
)

start() { # name project-dir assembly
  local name=$1 dir=$2 asm=$3 db_user=${1//-/_}
  ( cd "$MP_ROOT/$dir/bin/Release/net10.0" && exec env "${common_env[@]}" "ASPNETCORE_URLS=$(url "$name")" \
      "ConnectionStrings__Postgres=Host=127.0.0.1;Port=$MP_PG_PORT;Database=$db;Username=$db_user;Password=$db_user;Maximum Pool Size=10" \
      dotnet "$asm.dll" >>"$run_dir/logs/$name.log" 2>&1 & echo $! >"$run_dir/$name.pid" )
}

wait_ready() {
  for _ in $(seq 1 600); do
    curl -fsS "$(url "$1")/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$run_dir/$1.pid")" 2>/dev/null || { tail -n 30 "$run_dir/logs/$1.log" >&2; die "$1 exited while starting"; }
    sleep 0.2
  done
  die "$1 was not ready within 120 s (log: $run_dir/logs/$1.log)"
}

log "starting the services on ports $(for s in "${!port[@]}"; do printf '%s=%s ' "$s" "${port[$s]}"; done)"
start stripe-fake infra/stripe-fake Marketplace.StripeFake
start listings services/Listings Marketplace.Listings
start bidding services/Bidding Marketplace.Bidding
start scheduling services/Scheduling Marketplace.Scheduling
start billing services/Billing Marketplace.Billing
for s in stripe-fake listings bidding scheduling billing; do wait_ready "$s"; done
start gateway services/Gateway Marketplace.Gateway
wait_ready gateway

dotnet "$MP_ROOT/infra/load/bin/Release/net10.0/Marketplace.Load.dll" --gateway "$(url gateway)" --admin-key "$admin_key" \
  --postgres "Host=127.0.0.1;Port=$MP_PG_PORT;Username=$MP_PG_ADMIN_USER;Password=$MP_PG_ADMIN_PASSWORD;Database=$db" \
  --run-dir "$run_dir" --rabbit-ports "$rabbit_ports" "$@"
