#!/usr/bin/env python3
"""Hugging Face transformers' decode speed in BF16 on this GPU, the outside
reference for `zipserv generate`'s speed table.

A Llama model of the given config.json with random weights (values do not
change the speed), a random prompt of PROMPT tokens per sequence, NEW
greedy tokens, for each batch size. Transformers' fastest setting that
works here is tried first: a static KV cache with the forward compiled by
torch.compile in "reduce-overhead" mode (CUDA graphs); if compiling fails,
the static cache without compile, then the default dynamic cache; the
setting used is printed with each result.

Decode tokens/s = batch * (NEW - 1) / (time of a NEW-token generate minus
the time of a 1-token generate), each after warm-up, medians of REPEATS.

  transformers_speed.py --config CONFIG --batches 1,8 [--prompt 512]
      [--new 128] [--repeats 3] [--json OUT] [--budget-s 300]
"""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--prompt", type=int, default=512)
    ap.add_argument("--new", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json")
    ap.add_argument("--budget-s", type=float, default=300.0,
                    help="stop starting new batch sizes after this many seconds")
    args = ap.parse_args()

    import torch
    import transformers
    from transformers import LlamaConfig, LlamaForCausalLM

    t_start = time.time()
    config = LlamaConfig(**json.load(open(args.config)))
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config)
    model.eval()
    model.generation_config.pad_token_id = 0
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, "
          f"{torch.cuda.get_device_name()}; model made in {time.time() - t_start:.1f} s", flush=True)
    def timed(ids, new, setting):
        kw = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False)
        if setting != "dynamic cache":
            kw["cache_implementation"] = "static"
        if setting == "static cache, not compiled":
            kw["disable_compile"] = True
        torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        assert out.shape[1] == ids.shape[1] + new, out.shape
        return time.perf_counter() - t

    settings = ["static cache, compiled by generate", "static cache, not compiled", "dynamic cache"]
    results = []
    for batch in [int(b) for b in args.batches.split(",")]:
        if time.time() - t_start > args.budget_s:
            print(f"batch {batch}: skipped (time budget of {args.budget_s:.0f} s spent)", flush=True)
            continue
        ids = torch.randint(0, config.vocab_size, (batch, args.prompt), device="cuda")
        for setting in settings:
            try:
                t0 = time.time()
                for _ in range(2):  # warm-up (compiles for both lengths)
                    timed(ids, 1, setting)
                    timed(ids, args.new, setting)
                warm = time.time() - t0
                one = statistics.median(timed(ids, 1, setting) for _ in range(args.repeats))
                full = statistics.median(timed(ids, args.new, setting) for _ in range(args.repeats))
            except Exception as e:  # noqa: BLE001 - report and try the next setting
                print(f"batch {batch}: {setting} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
                torch.cuda.empty_cache()
                continue
            tps = batch * (args.new - 1) / (full - one)
            r = {"batch": batch, "setting": setting, "tokens_per_s": tps,
                 "ms_per_step": 1e3 * (full - one) / (args.new - 1), "prefill_s": one,
                 "warmup_s": warm, "transformers": transformers.__version__,
                 "torch": torch.__version__, "card": torch.cuda.get_device_name()}
            print(f"batch {batch}: {tps:.1f} tokens/s, {r['ms_per_step']:.3f} ms/step, "
                  f"prefill + 1 token {one:.2f} s ({setting}; warm-up {warm:.0f} s)", flush=True)
            results.append(r)
            break
        del ids
        torch.cuda.empty_cache()
    if args.json:
        json.dump(results, open(args.json, "w"), indent=1)
    return 0 if results else 1


if __name__ == "__main__":
    sys.exit(main())
