#!/usr/bin/env bash
# Peak memory (RSS) of compress / inspect / verify / decompress on a
# multi-GB model: writes a synthetic Llama-3-8B-shaped directory of BF16
# shards (LAYERS layers, default 8: about 5.6 GB; trained-like weights from
# zipserv_format::synth) under DIR (default target/memory), then runs each
# command under GNU time. Needs about 3x the model's size of free disk.
#   scripts/measure-memory.sh [DIR] [LAYERS]
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-target/memory}
layers=${2:-8}
# Two builds: `--example` would restrict the first to examples, leaving a
# stale (or no) zipserv binary.
cargo build --release --locked -p zipserv-cli
cargo build --release --locked -p zipserv-tests --example synth_model
zipserv=target/release/zipserv
rm -rf "$dir"
mkdir -p "$dir"
target/release/examples/synth_model "$dir/model" "$layers"
echo "model: $(du -sh "$dir/model" | cut -f1); largest tensor: the embeddings, $((2 * 128256 * 4096)) bytes"
printf '| command | peak RSS | wall time |\n|---|---|---|\n' >"$dir/table.md"
run() {
    /usr/bin/time -f '%M %e' -o "$dir/time.txt" "$zipserv" "$@" >"$dir/out.txt"
    read -r kb secs <"$dir/time.txt"
    awk -v c="$1" -v kb="$kb" -v s="$secs" 'BEGIN { printf "| `zipserv %s` | %.2f GB | %s s |\n", c, kb / 1e6, s }' >>"$dir/table.md"
    tail -n 1 "$dir/out.txt"
}
run compress "$dir/model" -o "$dir/packed"
run inspect "$dir/packed"
run verify "$dir/model" "$dir/packed"
run decompress "$dir/packed" -o "$dir/restored"
cat "$dir/table.md"
