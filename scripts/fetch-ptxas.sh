#!/usr/bin/env bash
# Fetch NVIDIA's PTX assembler (ptxas) from PyPI's `nvidia-cuda-nvcc` wheel into
# the build tree, for checking the generated PTX (registers, spills) on
# machines without the CUDA toolkit. Prints the path of the ptxas binary.
set -euo pipefail

version=13.5.37
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/ptxas"
if [[ -x "$dest/ptxas" ]]; then
    echo "$dest/ptxas"
    exit 0
fi
work="$root/target/ptxas-fetch"
rm -rf "$work"
mkdir -p "$work" "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: \
    --platform manylinux2014_x86_64 -d "$work" "nvidia-cuda-nvcc==$version" >&2
python3 - "$work" "$dest" <<'PY'
import glob, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/bin/ptxas"))
    with open(f"{dest}/ptxas", "wb") as f:
        f.write(z.read(name))
PY
chmod +x "$dest/ptxas"
rm -rf "$work"
echo "$dest/ptxas"
