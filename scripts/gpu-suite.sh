#!/usr/bin/env bash
# Runs the bundle made by scripts/gpu-bundle.sh on a GPU machine: the demo,
# then every test executable with ZIPSERV_REQUIRE_GPU=1 (a missing GPU fails
# instead of skipping). Logs go to $1 (default: ./gpu-logs).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
logs=${1:-./gpu-logs}
mkdir -p "$logs"
export ZIPSERV_REQUIRE_GPU=1
# The CLI tests run this bundle's binary, not the build machine's path.
export ZIPSERV_BIN="$here/zipserv"
status=0
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$logs/card.txt"
"$here/zipserv" demo 2>&1 | tee "$logs/demo.log" || status=1
for t in "$here"/tests/*; do
    name=$(basename "$t")
    if "$t" --test-threads=1 --nocapture >"$logs/$name.log" 2>&1; then
        echo "PASS $name: $(grep -E '^test result' "$logs/$name.log" | tail -n1)"
    else
        echo "FAIL $name"; tail -n 30 "$logs/$name.log"; status=1
    fi
done
exit $status
