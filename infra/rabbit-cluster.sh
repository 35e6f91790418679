#!/usr/bin/env bash
# A three-node RabbitMQ cluster on loopback, for the quorum-queue fault scenario (docs/reliability.md) and for trying
# the services against replicated queues. Separate from the shared broker of infra/servers.sh (55672), which it never
# touches: its own node names, ports, Erlang port mapper (epmd) and data under .data/rabbit-cluster/.
#
# Usage: infra/rabbit-cluster.sh start|stop|status|nodes|kill N
#   start    starts whichever of the three nodes is not running and joins them into one cluster (harmless when up);
#            after `kill N` it brings node N back and it rejoins; with no node running, a fresh cluster (old state removed)
#   stop     stops the nodes this script started, then its epmd
#   status   each node's state and the cluster's running members
#   nodes    the AMQP endpoints, comma-separated (for RabbitMq__ClusterNodes__N)
#   kill N   kill -9 node N (1..3): the fault the scenario injects
#   proof    the scenario: the services on this cluster with quorum queues, orders streamed through the gateway,
#            the node they are connected to killed mid-run; nothing may be lost (RabbitClusterTests, docs/reliability.md).
#            Extra arguments go to dotnet test. Starts the cluster if needed and stops it again if it did.
#
# Ports (override with the environment): AMQP 25711-25713, management 25721-25723, distribution 25731-25733, epmd 25369;
# below Linux's ephemeral range (32768-60999), where any outgoing connection or test's free port may hold them.
# The services' vhost/user are the same as on the shared broker (env.sh): marketplace/marketplace.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

CLUSTER_DIR="$MP_ROOT/.data/rabbit-cluster"
AMQP_BASE="${MP_CLUSTER_AMQP_BASE:-25710}"
MGMT_BASE="${MP_CLUSTER_MGMT_BASE:-25720}"
DIST_BASE="${MP_CLUSTER_DIST_BASE:-25730}"
export ERL_EPMD_PORT="${MP_CLUSTER_EPMD_PORT:-25369}"
export ERL_EPMD_ADDRESS=127.0.0.1
# The cookie lives in HOME; the three servers and every CLI call must share it. dotnet keeps the caller's HOME.
CALLER_HOME="${HOME:-/root}"
export HOME="$CLUSTER_DIR"
NODES=(1 2 3)

rabbit_bin() { dirname "$(dpkg -L rabbitmq-server 2>/dev/null | grep 'bin/rabbitmq-server$' | head -n 1)"; }
node_name() { echo "mpc$1@localhost"; }
node_dir() { echo "$CLUSTER_DIR/n$1"; }
amqp_port() { echo $((AMQP_BASE + $1)); }
mgmt_port() { echo $((MGMT_BASE + $1)); }
pid_of() { cat "$(node_dir "$1")/rabbit.pid" 2>/dev/null || true; }
running() { local pid; pid="$(pid_of "$1")"; [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# Every CLI call is bounded: if the epmd a live node registered with is gone, rabbitmqctl would hang for ever.
# On a machine at a load average of 50 a single call took over a minute: MP_CLUSTER_CTL_TIMEOUT (default 180 s).
ctl() { local n="$1"; shift; timeout "${CTL_TIMEOUT:-${MP_CLUSTER_CTL_TIMEOUT:-180}}" "$(rabbit_bin)/rabbitmqctl" -n "$(node_name "$n")" "$@" </dev/null; }

ensure_installed() {
  dpkg -s rabbitmq-server >/dev/null 2>&1 && command -v curl >/dev/null 2>&1 && return 0
  need_root
  log "installing rabbitmq-server and curl from the distribution's packages"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rabbitmq-server curl >/dev/null
}

ensure_epmd() { epmd -port "$ERL_EPMD_PORT" -daemon </dev/null >/dev/null 2>&1 || true; }

write_config() {
  local n="$1" dir; dir="$(node_dir "$n")"
  mkdir -p "$dir/mnesia" "$dir/log"
  cat > "$dir/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
loopback_users = none
# A minority side pauses instead of diverging (RabbitMQ's advice for three nodes).
cluster_partition_handling = pause_minority
CONF
  echo '[rabbitmq_management].' > "$dir/enabled_plugins"
}

start_node() {
  local n="$1" dir; dir="$(node_dir "$n")"
  write_config "$n"
  if running "$n"; then return 0; fi
  for p in "$(amqp_port "$n")" "$(mgmt_port "$n")" $((DIST_BASE + n)); do
    if port_open "$p"; then die "something else listens on 127.0.0.1:$p; not starting $(node_name "$n")"; fi
  done
  log "starting $(node_name "$n") on 127.0.0.1:$(amqp_port "$n") (management $(mgmt_port "$n"))"
  rm -f "$dir/rabbit.pid"
  (
    cd "$dir"
    export RABBITMQ_NODENAME="$(node_name "$n")" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$(amqp_port "$n")"
    export RABBITMQ_DIST_PORT=$((DIST_BASE + n)) RABBITMQ_MNESIA_BASE="$dir/mnesia" RABBITMQ_LOG_BASE="$dir/log"
    export RABBITMQ_PID_FILE="$dir/rabbit.pid" RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    # Distribution on loopback only, like every other port here.
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    setsid "$(rabbit_bin)/rabbitmq-server" </dev/null > "$dir/log/console.log" 2>&1 &
  )
  touch "$dir/started-by-us"
}

wait_node() {
  local n="$1" dir; dir="$(node_dir "$n")"
  # rabbitmq-server writes the pid file itself once the Erlang VM is up.
  for _ in $(seq 1 150); do [ -s "$dir/rabbit.pid" ] && break; sleep 0.2; done
  # A node that was in the cluster waits for its peers at boot, so the three come up together. Booting took over
  # five minutes at a load average of 50-100: MP_CLUSTER_BOOT_SECONDS (default 600).
  local boot="${MP_CLUSTER_BOOT_SECONDS:-600}"
  CTL_TIMEOUT=$((boot + 30)) ctl "$n" wait "$dir/rabbit.pid" --timeout "$boot" >/dev/null || die "$(node_name "$n") did not start; see $dir/log"
}

# The cluster's running members as seen by node $1, one per line.
members() { ctl "$1" cluster_status --formatter json 2>/dev/null | sed -n 's/.*"running_nodes":\[\([^]]*\)\].*/\1/p' | tr -d '"' | tr ',' '\n'; }

join() {
  local n="$1"
  if members 1 | grep -qx "$(node_name "$n")"; then return 0; fi
  log "joining $(node_name "$n") to $(node_name 1)"
  ctl "$n" stop_app >/dev/null
  # A node that still remembers a cluster it was removed from refuses to join: forget it.
  ctl "$n" join_cluster "$(node_name 1)" >/dev/null 2>&1 || { ctl "$n" reset >/dev/null; ctl "$n" join_cluster "$(node_name 1)" >/dev/null; }
  ctl "$n" start_app >/dev/null
}

wait_management() {
  local n="$1"
  for _ in $(seq 1 150); do
    curl -fsS -u "$MP_RABBIT_USER:$MP_RABBIT_PASSWORD" "http://127.0.0.1:$(mgmt_port "$n")/api/overview" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "the management API of $(node_name "$n") did not answer on $(mgmt_port "$n")"
}

start() {
  ensure_installed
  mkdir -p "$CLUSTER_DIR"
  if [ ! -s "$CLUSTER_DIR/.erlang.cookie" ]; then
    # Written before any node starts, so that three starting at once cannot race to create different ones.
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' > "$CLUSTER_DIR/.erlang.cookie"
    chmod 400 "$CLUSTER_DIR/.erlang.cookie"
  fi
  ensure_epmd
  # A cold start (no node running) begins a fresh cluster: the state an interrupted run left behind (feature flags
  # half-synced, a membership the others forgot) once kept a node from booting at all (known issue 20). After
  # `kill N`, with the others up, node N keeps its data and rejoins.
  local any=0
  for n in "${NODES[@]}"; do if running "$n"; then any=1; fi; done
  if [ "$any" -eq 0 ] && compgen -G "$CLUSTER_DIR/n*/mnesia" >/dev/null; then
    log "no node running: starting a fresh cluster (removing the nodes' old state under $CLUSTER_DIR)"
    rm -rf "$CLUSTER_DIR"/n*/mnesia
  fi
  for n in "${NODES[@]}"; do start_node "$n"; done
  for n in "${NODES[@]}"; do wait_node "$n"; done
  for n in 2 3; do join "$n"; done
  # Users, vhosts and permissions are cluster-wide: made once, through node 1.
  ctl 1 list_users --silent | grep -q "^$MP_RABBIT_USER\b" || ctl 1 add_user "$MP_RABBIT_USER" "$MP_RABBIT_PASSWORD" >/dev/null
  ctl 1 set_user_tags "$MP_RABBIT_USER" administrator >/dev/null
  ctl 1 list_vhosts --silent | grep -qx "$MP_RABBIT_VHOST" || ctl 1 add_vhost "$MP_RABBIT_VHOST" >/dev/null
  ctl 1 set_permissions -p "$MP_RABBIT_VHOST" "$MP_RABBIT_USER" '.*' '.*' '.*' >/dev/null
  for n in "${NODES[@]}"; do wait_management "$n"; done
  log "cluster up: $(members 1 | tr '\n' ' ')— AMQP $(nodes), management http://127.0.0.1:$(mgmt_port 1)"
}

stop() {
  for n in "${NODES[@]}"; do
    local dir; dir="$(node_dir "$n")"
    if [ -f "$dir/started-by-us" ] && running "$n"; then
      log "stopping $(node_name "$n")"
      ctl "$n" stop "$dir/rabbit.pid" >/dev/null 2>&1 || kill "$(pid_of "$n")" 2>/dev/null || true
    fi
    rm -f "$dir/started-by-us"
  done
  # Only the epmd on this script's private port; never the system's or the shared broker's.
  timeout 10 epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
}

status() {
  local up=0
  for n in "${NODES[@]}"; do
    if running "$n"; then echo "$(node_name "$n"): running (pid $(pid_of "$n"), AMQP $(amqp_port "$n"))"; up=$n
    else echo "$(node_name "$n"): stopped"; fi
  done
  if [ "$up" -gt 0 ]; then echo "cluster members running: $(members "$up" | tr '\n' ' ')"; fi
}

nodes() { local out=(); for n in "${NODES[@]}"; do out+=("127.0.0.1:$(amqp_port "$n")"); done; (IFS=,; echo "${out[*]}"); }

kill_node() {
  local n="${1:-}"
  [[ "$n" =~ ^[123]$ ]] || die "kill needs a node number 1..3"
  running "$n" || die "$(node_name "$n") is not running"
  log "kill -9 $(node_name "$n") (pid $(pid_of "$n"))"
  kill -9 "$(pid_of "$n")"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  nodes) nodes ;;
  kill) kill_node "${2:-}" ;;
  proof) shift
         "$MP_ROOT/infra/servers.sh" start   # PostgreSQL (the shared broker is not used)
         ensure_installed; ensure_dotnet; cd "$MP_ROOT"
         HOME="$CALLER_HOME" dotnet build tests/Marketplace.Proof.Tests -c Release -nologo -clp:ErrorsOnly -v:q
         HOME="$CALLER_HOME" dotnet test tests/Marketplace.Proof.Tests -c Release --no-build -nologo --filter "Category=RabbitCluster" \
           --logger "console;verbosity=detailed" "$@" ;;
  *) echo "usage: $0 start|stop|status|nodes|kill N|proof [dotnet test args]" >&2; exit 2 ;;
esac
