#!/usr/bin/env bash
# Runs every test of the solution against real PostgreSQL and RabbitMQ (installed and started when missing,
# stopped again afterwards if this script started them). Ends with the line
#   tests: N passed, N failed, N skipped
# counted from the TRX results, and exits non-zero when anything failed (a build failure or a crashed test host counts).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$MP_ROOT"

passed=0; failed=0; skipped=0
finish() {
  echo "tests: $passed passed, $failed failed, $skipped skipped"
  [ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
  exit $?
}

if "$MP_ROOT/infra/servers.sh" status 2>/dev/null | grep -q stopped || [ ! -d "$MP_ROOT/.data" ]; then
  # Servers only the tests use: fsync off makes them faster; benchmarks never run on these settings.
  export MP_PG_FSYNC=off MP_PG_SYNC_COMMIT=off
  trap '"$MP_ROOT/infra/servers.sh" stop' EXIT
fi
"$MP_ROOT/infra/servers.sh" start || { log "could not start PostgreSQL/RabbitMQ"; failed=1; finish; }
ensure_dotnet

log "building (Release)"
if ! dotnet build Marketplace.sln -c Release -nologo -clp:ErrorsOnly -v:q; then
  log "build failed"; failed=1; finish
fi

results="$MP_ROOT/TestResults"
rm -rf "$results"; mkdir -p "$results"
for proj in tests/*.Tests/*.csproj; do
  name=$(basename "$proj" .csproj)
  log "testing $name"
  # The three-node RabbitMQ cluster scenario takes minutes: run on its own (infra/rabbit-cluster.sh proof).
  dotnet test "$proj" -c Release --no-build -nologo -v:q --filter "Category!=RabbitCluster" \
    --logger "trx;LogFileName=$name.trx" --logger "console;verbosity=minimal" \
    --results-directory "$results" --blame-hang-timeout 10m
  rc=$?
  trx="$results/$name.trx"
  if [ ! -f "$trx" ]; then log "$name produced no results (exit $rc)"; failed=$((failed + 1)); continue; fi
  counters=$(grep -o '<Counters [^>]*>' "$trx" | head -n 1)
  get() { printf '%s' "$counters" | sed -n "s/.* $1=\"\([0-9]*\)\".*/\1/p"; }
  total=$(get total); executed=$(get executed); p=$(get passed); f=$(get failed)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${total:-0} - ${executed:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then log "$name exited $rc with no failed test: counting the test host as failed"; failed=$((failed + 1)); fi
done
finish
