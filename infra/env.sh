# Shared settings for the infra scripts. Sourced, not run.
# Ports are non-default so that nothing here collides with a system PostgreSQL or RabbitMQ.
MP_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export MP_ROOT
export MP_PG_PORT="${MP_PG_PORT:-55432}"
export MP_RABBIT_PORT="${MP_RABBIT_PORT:-55672}"
export MP_RABBIT_MGMT_PORT="${MP_RABBIT_MGMT_PORT:-55673}"
export MP_RABBIT_DIST_PORT="${MP_RABBIT_DIST_PORT:-55674}"
export MP_EPMD_PORT="${MP_EPMD_PORT:-55369}"
export MP_GATEWAY_PORT="${MP_GATEWAY_PORT:-8080}"
export MP_RUN_DIR="$MP_ROOT/.run"
export MP_SERVICES="listings bidding scheduling billing gateway"
# Development credentials: loopback only. Production takes connection strings from its own secrets.
export MP_PG_ADMIN_USER=mp_admin MP_PG_ADMIN_PASSWORD=mp_admin
export MP_RABBIT_USER=marketplace MP_RABBIT_PASSWORD=marketplace MP_RABBIT_VHOST=marketplace
export MP_ADMIN_KEY="${MP_ADMIN_KEY:-mk_admin_dev_bootstrap_key_change_me}"
export MP_GATEWAY_TOKEN="${MP_GATEWAY_TOKEN:-dev-internal-gateway-token}"

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_root() {
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else die "run as root (or install sudo): packages must be installed"; fi
  else SUDO=""; fi
}

# Where each process of the running marketplace listens (loopback only).
export MP_PORT_listings=8081 MP_PORT_bidding=8082 MP_PORT_scheduling=8083 MP_PORT_billing=8084 MP_PORT_stripe_fake=8089

# .NET SDK: present on the project's machines; on a fresh Ubuntu the distribution packages it, on Debian the
# Microsoft package feed is needed (not reachable here), so say so plainly.
ensure_dotnet() {
  command -v dotnet >/dev/null 2>&1 && return 0
  need_root
  log "installing the .NET SDK from the distribution's packages"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dotnet-sdk-10.0 >/dev/null 2>&1 \
    || die "no .NET 10 SDK: install it (https://learn.microsoft.com/dotnet/core/install/linux) and run this again"
}
