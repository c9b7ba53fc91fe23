#!/usr/bin/env bash
# Builds the release binary, every test executable and the benchmarks, and copies them with
# stable names into target/gpu-bundle/, ready to copy to a GPU machine that
# has no Rust toolchain. Run scripts/gpu-suite.sh there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
out="$root/target/gpu-bundle"
rm -rf "$out"
mkdir -p "$out/tests"
cargo build --release --locked --bins
cp target/release/zipserv "$out/"
cargo test --workspace --release --locked --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, shutil, sys
out = sys.argv[1]
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and msg["profile"]["test"]:
        name = msg["target"]["name"]
        kind = msg["target"]["kind"][0]
        package = msg["package_id"].split("#")[0].rsplit("/", 1)[-1]
        shutil.copy(msg["executable"], out + "/tests/" + package + "-" + kind + "-" + name)
' "$out"
# The criterion benches (run by hand there: ./benches/gpu --bench).
mkdir -p "$out/benches"
cargo bench --workspace --locked --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg.get("executable") and "bench" in msg["target"]["kind"]:
        shutil.copy(msg["executable"], sys.argv[1] + "/" + msg["target"]["name"])
' "$out/benches"
cp scripts/gpu-suite.sh "$out/"
ls "$out" "$out/tests"
