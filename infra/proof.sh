#!/usr/bin/env bash
# The proofs of issue 7 in one command each.
#   infra/proof.sh tests [dotnet test args]  fuzzer, security matrices, poison messages, fault scenarios (what CI runs)
#   infra/proof.sh load [load driver args]   the marketplace on :8080 (infra/up.sh --no-demo), then the load driver
#                                            (e.g. --short, or --rate 20 --duration 30); the services are stopped after
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
  *) echo "usage: $0 tests|load [args]" >&2; exit 2 ;;
esac
