#!/usr/bin/env bash
# Builds what scripts/engine/gpu-check.sh needs on a GPU machine (release
# binary, the engine's GPU test executable, the check scripts, PyPI's gguf
# wheel) into DEST (default target/engine-bundle), plus, with `a` or `b`,
# that half of the SmolLM2 GGUF (a device call carries at most 64 MiB, the
# GGUF is 98 MB: it travels in two consecutive calls).
#
#   scripts/engine/bundle.sh [DEST] [a|b|none]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
dest=${1:-$root/target/engine-bundle}
part=${2:-none}
rm -rf "$dest"
mkdir -p "$dest/bin" "$dest/scripts" "$dest/whl" "$dest/parts"
cargo build --release --locked -p zipserv-cli
cp target/release/zipserv "$dest/bin/"
exe=$(cargo test --release --locked -p zipserv-tests --test gpu_engine --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "gpu_engine":
        print(m["executable"])')
cp "$exe" "$dest/bin/gpu_engine"
cp scripts/engine/*.py scripts/engine/gpu-check.sh "$dest/scripts/"
git rev-parse --short HEAD >"$dest/COMMIT"
python3 -m pip download -q --no-deps --only-binary=:all: -d "$dest/whl" gguf==0.19.0
if [[ $part != none ]]; then
    gguf=$(scripts/fetch-smollm2.sh --gguf)
    size=$(stat -c %s "$gguf")
    half=$(( (size + 1) / 2 ))
    (cd "$(dirname "$gguf")" && sha256sum "$(basename "$gguf")") >"$dest/parts/gguf.sha256"
    case $part in
        a) head -c "$half" "$gguf" >"$dest/parts/gguf.part-a" ;;
        b) tail -c +$((half + 1)) "$gguf" >"$dest/parts/gguf.part-b" ;;
        *) echo "part must be a, b or none" >&2; exit 2 ;;
    esac
fi
du -sh "$dest"/* >&2
