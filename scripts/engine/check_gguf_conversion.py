#!/usr/bin/env python3
"""Checks gguf_to_hf.py's directory against transformers' own GGUF loader
(which dequantizes with `gguf` and undoes llama.cpp's rotary row order
itself): every tensor, rounded to BF16, must be bit-identical.

  check_gguf_conversion.py MODEL.gguf HF_DIR
"""
import os
import sys

import torch
from transformers import AutoModelForCausalLM


def main(gguf_path, hf_dir):
    ours = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.bfloat16).state_dict()
    ref = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(os.path.abspath(gguf_path)), gguf_file=os.path.basename(gguf_path),
        dtype=torch.float32).state_dict()
    bad, checked = [], 0
    for name, t in ours.items():
        if name not in ref:
            continue
        r = ref[name].to(torch.bfloat16)
        checked += 1
        if r.shape != t.shape or not torch.equal(r.view(torch.int16), t.view(torch.int16)):
            diff = (r.float() - t.float()).abs().max().item() if r.shape == t.shape else "shape"
            bad.append(f"{name} ({diff})")
    verdict = "OK" if not bad and checked > 0 else "FAIL"
    print(f"GGUF conversion vs transformers' GGUF loader: {checked} tensors compared, "
          f"{len(bad)} differ {verdict}" + ("" if not bad else ": " + ", ".join(bad[:8])))
    sys.exit(0 if verdict == "OK" else 1)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2])
