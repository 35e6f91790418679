#!/usr/bin/env bash
# Brings up the whole marketplace on this machine and runs the demo against the gateway:
# PostgreSQL + RabbitMQ (installed when missing), the five services and the local Stripe stand-in,
# all in the background; the gateway answers at http://127.0.0.1:8080. Stop everything with infra/down.sh.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MP_ROOT"

"$MP_ROOT/infra/servers.sh" start
ensure_dotnet
log "building (Release)"
dotnet build Marketplace.sln -c Release -nologo -clp:ErrorsOnly -v:q >/dev/null 2>"$MP_RUN_DIR.build.err" || { cat "$MP_RUN_DIR.build.err" >&2; die "build failed"; }
rm -f "$MP_RUN_DIR.build.err"
mkdir -p "$MP_RUN_DIR/logs"

# Processes a previous run left behind are replaced, so the newest build runs.
"$MP_ROOT/infra/down.sh" --services-only

url() { echo "http://127.0.0.1:$1"; }
common_env=(
  "DOTNET_ENVIRONMENT=Production" "ASPNETCORE_ENVIRONMENT=Production"
  "Gateway__InternalToken=$MP_GATEWAY_TOKEN"
  # Demo timing: leases of one minute instead of production's one hour.
  "Market__MinLeaseSeconds=${MP_MIN_LEASE_SECONDS:-60}"
  # Demo timing: a node that falls silent is noticed after 6 s instead of 30 s.
  "Listings__HeartbeatTimeoutSeconds=6" "Listings__HealthSweepSeconds=1"
  "RabbitMq__Port=$MP_RABBIT_PORT" "RabbitMq__VirtualHost=$MP_RABBIT_VHOST"
  "RabbitMq__Username=$MP_RABBIT_USER" "RabbitMq__Password=$MP_RABBIT_PASSWORD"
  "Stripe__ApiBase=$(url $MP_PORT_stripe_fake)" "Stripe__ApiKey=sk_test_local_stand_in" "Stripe__WebhookSecret=whsec_local_stand_in"
  "StripeFake__WebhookUrl=$(url $MP_GATEWAY_PORT)/v1/webhooks/stripe" "StripeFake__WebhookSecret=whsec_local_stand_in"
)

start() { # name project-dir assembly port
  local name=$1 dir=$2 asm=$3 port=$4
  local db_user=${name//-/_}
  ( cd "$MP_ROOT/$dir/bin/Release/net10.0" && exec env "${common_env[@]}" \
      "ASPNETCORE_URLS=$(url "$port")" \
      "ConnectionStrings__Postgres=Host=127.0.0.1;Port=$MP_PG_PORT;Database=marketplace;Username=$db_user;Password=$db_user;Maximum Pool Size=10" \
      "Gateway__BootstrapAdminKey=$MP_ADMIN_KEY" \
      "Gateway__Upstreams__listings=$(url $MP_PORT_listings)" "Gateway__Upstreams__bidding=$(url $MP_PORT_bidding)" \
      "Gateway__Upstreams__scheduling=$(url $MP_PORT_scheduling)" "Gateway__Upstreams__billing=$(url $MP_PORT_billing)" \
      setsid dotnet "$asm.dll" >>"$MP_RUN_DIR/logs/$name.log" 2>&1 & echo $! >"$MP_RUN_DIR/$name.pid" )
}

wait_ready() { # name port
  for _ in $(seq 1 300); do
    curl -fsS "$(url "$2")/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$MP_RUN_DIR/$1.pid")" 2>/dev/null || { tail -n 30 "$MP_RUN_DIR/logs/$1.log" >&2; die "$1 exited while starting (log: .run/logs/$1.log)"; }
    sleep 0.2
  done
  die "$1 was not ready on port $2 within 60 s (log: .run/logs/$1.log)"
}

log "starting services"
start stripe-fake infra/stripe-fake Marketplace.StripeFake "$MP_PORT_stripe_fake"
start listings services/Listings Marketplace.Listings "$MP_PORT_listings"
start bidding services/Bidding Marketplace.Bidding "$MP_PORT_bidding"
start scheduling services/Scheduling Marketplace.Scheduling "$MP_PORT_scheduling"
start billing services/Billing Marketplace.Billing "$MP_PORT_billing"
for s in stripe-fake listings bidding scheduling billing; do p="MP_PORT_${s//-/_}"; wait_ready "$s" "${!p}"; done
start gateway services/Gateway Marketplace.Gateway "$MP_GATEWAY_PORT"
wait_ready gateway "$MP_GATEWAY_PORT"
log "gateway ready at $(url "$MP_GATEWAY_PORT") (API docs: $(url "$MP_GATEWAY_PORT")/docs); logs in .run/logs/"

[ "${1:-}" = "--no-demo" ] && exit 0
log "running the demo against the gateway"
dotnet "$MP_ROOT/infra/demo/bin/Release/net10.0/Marketplace.Demo.dll" --gateway "$(url "$MP_GATEWAY_PORT")" --admin-key "$MP_ADMIN_KEY"
log "the marketplace keeps running in the background; stop it with: infra/down.sh"
