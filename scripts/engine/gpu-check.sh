#!/usr/bin/env bash
# The engine's GPU check, in stages, on a GPU machine without a Rust
# toolchain or network. It runs from the bundle scripts/engine/bundle.sh
# makes (bin/, scripts/, whl/, parts/), as that bundle's
# scripts/gpu-check.sh, or with the bundle named by $ENGINE_BUNDLE. Both
# halves of the SmolLM2 GGUF (98 MB) may travel in one bundle, or the first
# in an earlier call (`part-a`, kept in $HOME while the machine stays up).
#
#   scripts/engine/gpu-check.sh STAGE...
#     kernels   the engine kernels against CPU references (test binary)
#     random    a small random Llama (GQA, rope_theta 31337, llama3 scaling)
#               against transformers: logits, greedy tokens, compressed vs
#               BF16, batch vs alone, seeded sampling
#     part-a    keep the first half of the SmolLM2 GGUF for a later call
#     smollm2   SmolLM2-135M-Instruct from the GGUF (first half kept by
#               part-a, or parts/ holding both): conversion checked against
#               transformers' GGUF loader, then as `random`, plus text
#     speed     a Llama-3-8B-shaped random model: prompt 512, 128 new tokens,
#               batch 1/8/32/64, BF16 and compressed (and compressed with
#               unstacked projections at batch 1 and 64, for comparison)
#     hf-speed  transformers' BF16 speed on the same shape and card
#     capacity  a Llama-3-70B-shaped random model (every block a copy of
#               block 0): the largest batch at context 4096 and its speed,
#               and batch 1, with BF16 and with compressed weights
#
# Logs go to $OUT (or ./engine-logs); a summary table is printed last.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
B=${ENGINE_BUNDLE:-$(dirname "$here")}
[[ -x "$B/bin/zipserv" ]] || { echo "no bundle at $B (set ENGINE_BUNDLE)"; exit 2; }
OUT=${OUT:-$PWD/engine-logs}
KEEP=${ENGINE_KEEP:-$HOME/zipserv-engine}
W=${ENGINE_WORK:-/tmp/zipserv-engine}
mkdir -p "$OUT" "$KEEP" "$W"
export PYTHONUNBUFFERED=1 ZIPSERV_REQUIRE_GPU=1
Z="$B/bin/zipserv"
S="$B/scripts"
summary="$OUT/summary.txt"
: >"$summary"
status=0
note() { echo "$*" | tee -a "$summary"; }
py_site() {
    if [[ ! -d /tmp/site/gguf ]]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target /tmp/site "$B"/whl/*.whl || return 1
    fi
    export PYTHONPATH=/tmp/site
}

stage_kernels() {
    if "$B/bin/gpu_engine" --test-threads=1 --nocapture >"$OUT/kernels.log" 2>&1; then
        note "kernels: PASS ($(grep -E '^test result' "$OUT/kernels.log" | tail -n1)); $(grep 'relative error' "$OUT/kernels.log" | tr '\n' ';')"
    else
        note "kernels: FAIL"; tail -n 40 "$OUT/kernels.log"; status=1
    fi
}

# check_model LABEL DIR PROMPT_IDS BATCH_PROMPTS
check_model() {
    local label=$1 dir=$2 ids=$3 batch=$4
    rm -rf "$dir.zsv"
    "$Z" compress "$dir" -o "$dir.zsv" >"$OUT/$label-compress.log" 2>&1 || { note "$label: compress FAIL"; status=1; return; }
    python3 "$S/check_transformers.py" --zipserv "$Z" --model "$dir" --compressed "$dir.zsv" \
        --prompt-ids "$ids" --batch-prompts "$batch" --steps 32 --work "$W/$label" --label "$label" \
        >"$OUT/$label-check.log" 2>&1 || status=1
    grep -E '^\[' "$OUT/$label-check.log" | grep -v "greedy generate:" | tee -a "$summary"
    grep -qE 'FAIL|Traceback|Error' "$OUT/$label-check.log" && tail -n 30 "$OUT/$label-check.log"
    # Seeded sampling: the same seed twice gives the same tokens.
    for r in 1 2; do
        "$Z" generate --model "$dir.zsv" --prompt-ids "$ids" --max-new-tokens 24 --temperature 0.8 \
            --top-p 0.9 --seed 42 --json "$W/$label-sample$r.json" >"$OUT/$label-sample$r.log" 2>&1
    done
    if cmp -s <(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['tokens'])" "$W/$label-sample1.json") \
              <(python3 -c "import json,sys;print(json.load(open(sys.argv[1]))['tokens'])" "$W/$label-sample2.json"); then
        note "[$label] sampling T=0.8 top-p 0.9 seed 42 (compressed): same tokens on a second run OK"
    else
        note "[$label] sampling: runs with one seed differ FAIL"; status=1
    fi
}

stage_random() {
    local dir="$W/random-llama"
    rm -rf "$dir"
    python3 "$S/check_transformers.py" --make-random "$dir" >"$OUT/random-make.log" 2>&1 || {
        note "random: making the model FAIL"; tail -n 20 "$OUT/random-make.log"; status=1; return; }
    check_model random "$dir" "1,17,250,2999,42,7,1000,5,123,77,900,31" "5,6,7,8,9,10,11,12,13;300,301;42,43,44,45,46"
}

stage_part_a() {
    cp "$B/parts/gguf.part-a" "$KEEP/" && cp "$B/parts/gguf.sha256" "$KEEP/" &&
        note "part-a: kept $(stat -c %s "$KEEP/gguf.part-a") bytes in $KEEP"
}

stage_smollm2() {
    local a="$KEEP/gguf.part-a" gguf="$W/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" dir="$W/smollm2/hf"
    [[ -f "$B/parts/gguf.part-a" ]] && a="$B/parts/gguf.part-a"
    if [[ ! -f "$a" || ! -f "$B/parts/gguf.part-b" ]]; then
        note "smollm2: SKIPPED: GGUF part missing (part-a kept: $([[ -f $KEEP/gguf.part-a ]] && echo yes || echo no)); the machine was given back between the calls"
        status=1; return
    fi
    mkdir -p "$W/smollm2"
    cat "$a" "$B/parts/gguf.part-b" >"$gguf"
    if ! (cd "$W/smollm2" && sha256sum -c --quiet <(sed "s|  .*|  $(basename "$gguf")|" "$B/parts/gguf.sha256")); then
        note "smollm2: joined GGUF checksum FAIL"; status=1; return
    fi
    py_site || { note "smollm2: installing gguf FAIL"; status=1; return; }
    rm -rf "$dir"
    python3 "$S/gguf_to_hf.py" "$gguf" "$dir" >"$OUT/smollm2-convert.log" 2>&1 || {
        note "smollm2: conversion FAIL"; tail -n 20 "$OUT/smollm2-convert.log"; status=1; return; }
    python3 "$S/check_gguf_conversion.py" "$gguf" "$dir" >"$OUT/smollm2-gguf-check.log" 2>&1
    grep -E 'GGUF conversion' "$OUT/smollm2-gguf-check.log" | tee -a "$summary" ||
        { note "smollm2: GGUF loader check did not run (see smollm2-gguf-check.log)"; tail -n 5 "$OUT/smollm2-gguf-check.log"; }
    local ids
    ids=$(python3 -c "from tokenizers import Tokenizer;import sys;print(','.join(map(str,Tokenizer.from_file(sys.argv[1]).encode('The capital of France is').ids)))" "$dir/tokenizer.json")
    check_model smollm2 "$dir" "$ids" "$ids;504,3575,282;1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"
    for form in bf16 compressed; do
        local model=$dir; [[ $form == compressed ]] && model="$dir.zsv"
        "$Z" generate --model "$model" --weights $form --prompt "The capital of France is" \
            --prompt "Gravity is" --max-new-tokens 48 >"$OUT/smollm2-generate-$form.log" 2>&1 || status=1
    done
    cat "$OUT/smollm2-generate-compressed.log"
}

# llama3_config FILE HIDDEN INTERMEDIATE HEADS LAYERS
llama3_config() {
    cat >"$1" <<JSON
{"model_type": "llama", "hidden_size": $2, "intermediate_size": $3, "num_attention_heads": $4,
 "num_key_value_heads": 8, "num_hidden_layers": $5, "vocab_size": 128256, "rms_norm_eps": 1e-05,
 "rope_theta": 500000.0, "bos_token_id": 128000, "eos_token_id": 128001, "tie_word_embeddings": false,
 "max_position_embeddings": 131072,
 "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
   "original_max_position_embeddings": 8192, "rope_type": "llama3"}}
JSON
}

stage_speed() {
    local cfg="$W/llama3-8b.json"
    llama3_config "$cfg" 4096 14336 32 32
    python3 - >"$OUT/copy-bandwidth.log" 2>&1 <<'PY'
import torch
x = torch.empty(1 << 29, dtype=torch.float16, device="cuda"); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(10): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f"copy bandwidth {2 * x.numel() * 2 * 10 / (s.elapsed_time(e) / 1e3) / 1e9:.0f} GB/s")
PY
    note "speed: $(cat "$OUT/copy-bandwidth.log" | tail -n1)"
    # SPEED_OVERLAP_AB=1 runs each form again with --launch-overlap off;
    # SPEED_ATTENTION_AB=1 again with the block-per-head-chunk attention
    # kernel (ZIPSERV_ATTENTION=heads); SPEED_BF16_AB=1 the BF16 form again
    # with cuBLAS for every product (ZIPSERV_BF16_PATH=cublas), not the
    # library's GEMV at batches up to 8.
    local variants=(auto)
    [[ ${SPEED_OVERLAP_AB:-0} == 1 ]] && variants+=(off)
    [[ ${SPEED_ATTENTION_AB:-0} == 1 ]] && variants+=(heads)
    [[ ${SPEED_BF16_AB:-0} == 1 ]] && variants+=(cublas)
    for variant in "${variants[@]}"; do
        local suffix="" overlap=auto attention=auto bf16_path=auto forms=(bf16 compressed)
        [[ $variant == off ]] && suffix="-no-overlap" overlap=off
        [[ $variant == heads ]] && suffix="-attn-heads" attention=heads
        local batches=${SPEED_BATCHES:-1,8,32,64}
        # Above 8 the BF16 form takes cuBLAS either way.
        [[ $variant == cublas ]] && suffix="-cublas" bf16_path=cublas forms=(bf16) batches=1,8
        for form in "${forms[@]}"; do
            local run="$form$suffix"
            ZIPSERV_BF16_PATH=$bf16_path ZIPSERV_ATTENTION=$attention "$Z" generate --random-weights "$cfg" --weights $form --launch-overlap $overlap \
                --random-prompt 512 --ignore-eos --max-new-tokens 128 --batch "$batches" \
                --profile-step --json "$OUT/speed-$run.json" \
                >"$OUT/speed-$run.log" 2>&1 || { note "speed $run: FAIL"; tail -n 20 "$OUT/speed-$run.log"; status=1; }
            grep -E '^(batch|profiled|load|launch)' "$OUT/speed-$run.log" | sed "s/^/speed $run: /" | tee -a "$summary"
        done
    done
    if [[ ${SPEED_UNSTACKED:-1} == 1 ]]; then
        "$Z" generate --random-weights "$cfg" --weights compressed --no-stack --random-prompt 512 --ignore-eos \
            --max-new-tokens 128 --batch 1,64 --json "$OUT/speed-compressed-unstacked.json" \
            >"$OUT/speed-compressed-unstacked.log" 2>&1 || { note "speed unstacked: FAIL"; status=1; }
        grep -E '^(batch|decode|load)' "$OUT/speed-compressed-unstacked.log" | sed "s/^/speed compressed, not stacked: /" | tee -a "$summary"
    fi
    python3 - "$OUT" >>"$summary" <<'PY'
import json, os, sys
out = sys.argv[1]
rows = {}
for suffix in ("", "-no-overlap", "-attn-heads", "-cublas"):
    for form in ("bf16", "compressed"):
        p = os.path.join(out, f"speed-{form}{suffix}.json")
        if not os.path.exists(p):
            continue
        recs = json.load(open(p))
        for r in recs if isinstance(recs, list) else [recs]:
            rows.setdefault((suffix, r["batch"]), {})[form] = r
print("| variant | launch overlap | batch | BF16 tok/s | compressed tok/s | speedup | BF16 ms/step | compressed ms/step | prefill BF16 / compressed (s) | weights BF16 / compressed (GB) | graph |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for key in sorted(rows):
    suffix, b = key
    f, c = rows[key].get("bf16"), rows[key].get("compressed")
    on = (c or f or {}).get("launch_overlap")
    g = lambda r, k: r[k] if r else float("nan")
    sp = g(c, "tokens_per_s") / g(f, "tokens_per_s") if f and c else float("nan")
    print(f"| {suffix.lstrip('-') or 'default'} | {'on' if on else 'off'} | {b} | {g(f,'tokens_per_s'):.1f} | {g(c,'tokens_per_s'):.1f} | {sp:.3f} | {g(f,'ms_per_step'):.3f} | "
          f"{g(c,'ms_per_step'):.3f} | {g(f,'prefill_s'):.2f} / {g(c,'prefill_s'):.2f} | "
          f"{g(f,'weight_bytes')/1e9:.2f} / {g(c,'weight_bytes')/1e9:.2f} | {g(f,'graph')}/{g(c,'graph')} |")
PY
}

stage_hf_speed() {
    local cfg="$W/llama3-8b.json"
    llama3_config "$cfg" 4096 14336 32 32
    timeout "${HF_TIMEOUT:-420}" python3 "$S/transformers_speed.py" --config "$cfg" \
        --batches "${HF_BATCHES:-1,8,32,64}" --prompt 512 --new 128 --json "$OUT/hf-speed.json" \
        --budget-s "${HF_BUDGET:-300}" >"$OUT/hf-speed.log" 2>&1 || { note "hf-speed: FAIL or partial"; status=1; }
    grep -E '^(transformers|batch)' "$OUT/hf-speed.log" | sed 's/^/hf-speed: /' | tee -a "$summary"
}

stage_capacity() {
    local cfg="$W/llama3-70b.json"
    llama3_config "$cfg" 8192 28672 64 80
    for form in bf16 compressed; do
        "$Z" generate --random-weights "$cfg" --repeat-layers --weights $form --random-prompt 512 --ignore-eos \
            --max-new-tokens 64 --context 4096 --batch max,1 --json "$OUT/capacity-$form.json" \
            >"$OUT/capacity-$form.log" 2>&1 || { note "capacity $form: FAIL"; tail -n 20 "$OUT/capacity-$form.log"; status=1; }
        grep -E '^(largest|batch|decode|load|memory|GPU)' "$OUT/capacity-$form.log" | sed "s/^/capacity $form: /" | tee -a "$summary"
    done
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/card.txt" 2>&1
note "card: $(cat "$OUT/card.txt"); commit $(cat "$B/COMMIT" 2>/dev/null)"
for stage in "$@"; do
    case $stage in
        kernels) stage_kernels ;;
        random) stage_random ;;
        part-a) stage_part_a ;;
        smollm2) stage_smollm2 ;;
        speed) stage_speed ;;
        hf-speed) stage_hf_speed ;;
        capacity) stage_capacity ;;
        *) note "unknown stage $stage"; status=1 ;;
    esac
done
echo "=== summary"
cat "$summary"
exit $status
