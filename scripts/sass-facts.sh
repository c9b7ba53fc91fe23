#!/usr/bin/env bash
# SASS facts of the ZipGEMM kernels, offline (no GPU, no CUDA toolkit):
# assembles the embedded sm_90a PTX with ptxas and disassembles it with
# nvdisasm (both from PyPI wheels, into target/), then prints per kernel the
# instructions per decoded weight, the loop's load widths and any local
# memory (scripts/sass_facts.py). Run after a build (`cargo build --release`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ptxas=$(scripts/fetch-ptxas.sh)
nvdisasm=$(scripts/fetch-nvidia-tool.sh nvdisasm nvidia-cuda-nvdisasm==13.5.37)
ptx=$(ls -t target/release/build/zipserv-gpu-*/out/sm_90a/kernels.ptx 2>/dev/null | head -n1)
[[ -n $ptx ]] || { echo "no sm_90a PTX: run cargo build --release first" >&2; exit 2; }
out="$root/target/sass"
mkdir -p "$out"
"$ptxas" -arch=sm_90a -O3 "$ptx" -o "$out/sm_90a.cubin"
"$nvdisasm" -c "$out/sm_90a.cubin" > "$out/sm_90a.sass"
echo "commit $(git rev-parse --short HEAD), ptxas $("$ptxas" --version | grep -o 'V[0-9][0-9.]*'), nvdisasm $("$nvdisasm" --version | grep -o 'V[0-9][0-9.]*')"
python3 scripts/sass_facts.py "$out/sm_90a.sass"
