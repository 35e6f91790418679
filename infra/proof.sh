#!/usr/bin/env bash
# The proofs of issue 7 in one command each.
#   infra/proof.sh tests [dotnet test args]  fuzzer, security matrices, poison messages, fault scenarios (what CI runs)
#   infra/proof.sh load [load driver args]   the marketplace on :8080 (infra/up.sh --no-demo), then the load driver
#                                            (e.g. --short, or --rate 20 --duration 30); the services are stopped after
#   infra/proof.sh faults [dotnet test args] the long fault scenarios: each service killed -9 three times in a run of its
#                                            own, RabbitMQ killed, PostgreSQL stopped (immediate and fast), every broker
#                                            connection closed; 20 orders/s for 60 s each, on a private PostgreSQL and
#                                            RabbitMQ (never the shared ones). MP_FAULT_RATE, _SECONDS, _DOWN_SECONDS,
#                                            _REPEATS, _SETTLE_SECONDS (how long the checks wait, default 300) override.
#   infra/proof.sh scale [dotnet test args]  two instances of every service, then one, under the same load
#                                            (MP_SCALE_RATE orders/s, default 20, for MP_SCALE_SECONDS, default 60):
#                                            the invariants for both and a table of their throughput and latency
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MP_ROOT"

case "${1:-}" in
  tests) shift
         "$MP_ROOT/infra/servers.sh" start
         dotnet test tests/Marketplace.Proof.Tests -c Release -nologo "$@" ;;
  load)  shift
         "$MP_ROOT/infra/up.sh" --no-demo
         trap '"$MP_ROOT/infra/down.sh" --services-only' EXIT
         dotnet "$MP_ROOT/infra/load/bin/Release/net10.0/Marketplace.Load.dll" --gateway "http://127.0.0.1:$MP_GATEWAY_PORT" \
           --admin-key "$MP_ADMIN_KEY" --postgres "Host=127.0.0.1;Port=$MP_PG_PORT;Username=$MP_PG_ADMIN_USER;Password=$MP_PG_ADMIN_PASSWORD;Database=marketplace" \
           --run-dir "$MP_RUN_DIR" "$@" ;;
  faults) shift
         "$MP_ROOT/infra/servers.sh" start   # the packages (and the shared pair, untouched by these tests)
         MP_FAULT_EACH=1 MP_FAULT_RATE="${MP_FAULT_RATE:-20}" MP_FAULT_SECONDS="${MP_FAULT_SECONDS:-60}" \
         MP_FAULT_DOWN_SECONDS="${MP_FAULT_DOWN_SECONDS:-5}" MP_FAULT_REPEATS="${MP_FAULT_REPEATS:-3}" \
         MP_FAULT_SETTLE_SECONDS="${MP_FAULT_SETTLE_SECONDS:-300}" \
           dotnet test tests/Marketplace.Proof.Tests -c Release -nologo --filter "FullyQualifiedName~FaultTests" \
           --logger "console;verbosity=detailed" "$@" ;;
  scale) shift
         "$MP_ROOT/infra/servers.sh" start
         MP_SCALE_COMPARE=1 MP_SCALE_RATE="${MP_SCALE_RATE:-20}" MP_SCALE_SECONDS="${MP_SCALE_SECONDS:-60}" \
           dotnet test tests/Marketplace.Proof.Tests -c Release -nologo --filter "FullyQualifiedName~ScaleOutTests" \
           --logger "console;verbosity=detailed" "$@" ;;
  *) echo "usage: $0 tests|load|faults|scale [args]" >&2; exit 2 ;;
esac
