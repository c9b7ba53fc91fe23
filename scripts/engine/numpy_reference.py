#!/usr/bin/env python3
"""A plain float32 NumPy forward of a BF16 Llama directory, greedy, on the
CPU: checks a converted model (scripts/engine/gguf_to_hf.py) without a GPU
or torch. Needs numpy and tokenizers.

  numpy_reference.py HF_DIR "PROMPT" NEW_TOKENS

SmolLM2-135M-Instruct, "The capital of France is", 12 tokens: " Paris.\n\n
The answer is: 201" (ids 7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34,
32, 33).
"""
import json
import struct
import sys

import numpy as np
from tokenizers import Tokenizer


def load(d):
    """Every tensor of model.safetensors (BF16) as float32."""
    buf = open(f"{d}/model.safetensors", "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header, base = json.loads(buf[8:8 + n]), 8 + n
    out = {}
    for name, v in header.items():
        if name == "__metadata__":
            continue
        if v["dtype"] != "BF16":
            raise SystemExit(f"{name} is {v['dtype']}, not BF16")
        a, b = v["data_offsets"]
        bits = np.frombuffer(buf[base + a:base + b], dtype=np.uint16).astype(np.uint32) << 16
        out[name] = bits.view(np.float32).reshape(v["shape"])
    return out


def main(d, prompt, new_tokens):
    cfg = json.load(open(f"{d}/config.json"))
    W = load(d)
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or cfg["hidden_size"] // heads
    eps, theta = cfg["rms_norm_eps"], cfg.get("rope_theta", 10000.0)
    if cfg.get("rope_scaling"):
        raise SystemExit("rope scaling is not implemented here")
    head = W.get("lm_head.weight", W["model.embed_tokens.weight"])
    inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)

    def norm(x, w):
        return w * (x / np.sqrt((x * x).mean(-1, keepdims=True) + eps))

    def rope(x, pos):  # x: (T, heads, hd), rotate-half pairs (i, i + hd/2)
        angle = pos[:, None] * inv[None]
        c, s = np.cos(angle)[:, None], np.sin(angle)[:, None]
        a, b = x[..., :hd // 2], x[..., hd // 2:]
        return np.concatenate([a * c - b * s, b * c + a * s], -1)

    def forward(ids):
        T = len(ids)
        x = W["model.embed_tokens.weight"][ids]
        pos = np.arange(T, dtype=np.float64)
        mask = np.triu(np.full((T, T), -np.inf), 1)
        for l in range(cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            y = norm(x, W[p + "input_layernorm.weight"])
            q = rope((y @ W[p + "self_attn.q_proj.weight"].T).reshape(T, heads, hd), pos)
            k = rope((y @ W[p + "self_attn.k_proj.weight"].T).reshape(T, kv_heads, hd), pos)
            v = (y @ W[p + "self_attn.v_proj.weight"].T).reshape(T, kv_heads, hd)
            k, v = np.repeat(k, heads // kv_heads, 1), np.repeat(v, heads // kv_heads, 1)
            s = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            x = x + np.einsum("hts,shd->thd", s, v).reshape(T, heads * hd) @ W[p + "self_attn.o_proj.weight"].T
            y = norm(x, W[p + "post_attention_layernorm.weight"])
            g, u = y @ W[p + "mlp.gate_proj.weight"].T, y @ W[p + "mlp.up_proj.weight"].T
            x = x + ((g / (1 + np.exp(-g))) * u) @ W[p + "mlp.down_proj.weight"].T
        return norm(x, W["model.norm.weight"])[-1] @ head.T

    tok = Tokenizer.from_file(f"{d}/tokenizer.json")
    ids = tok.encode(prompt).ids
    out = list(ids)
    for _ in range(new_tokens):
        out.append(int(np.argmax(forward(out))))
    print("prompt ids", ids)
    print("new ids", out[len(ids):])
    print(repr(tok.decode(out)))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
