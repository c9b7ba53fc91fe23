#!/usr/bin/env python3
"""Turn a llama.cpp GGUF file of a Llama-architecture model into a BF16
Hugging Face model directory: config.json, tokenizer.json and
model.safetensors.

Quantized tensors (Q4_0/Q4_1/Q8_0/... as PyPI `gguf` knows them) are
dequantized to float32 by `gguf.quants.dequantize` (numpy only) and rounded
to BF16, nearest even. llama.cpp's converter stores the query and key
projections with each head's rows interleaved for its rotary layout (pairs
(i, i + d/2) made neighbours); this undoes it, as transformers' GGUF loader
does, so the directory matches the original Hugging Face checkpoint's
layout. The tokenizer (GPT-2 style byte-level BPE, `tokenizer.ggml.model ==
"gpt2"`) is rebuilt as a `tokenizers` JSON from the vocabulary and merges
the GGUF carries.

Usage: gguf_to_hf.py MODEL.gguf OUT_DIR      (OUT_DIR must not exist)
       gguf_to_hf.py --self-test
"""
import json
import os
import struct
import sys

import numpy as np


def unpermute_rotary(w, heads):
    """Inverse of llama.cpp's rotary row order for a (heads * d, in) matrix:
    there, each head's rows are stored as (d/2, 2) pairs; here as (2, d/2)
    halves."""
    rows = w.shape[0]
    return (
        w.reshape(heads, rows // heads // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def permute_rotary(w, heads):
    """llama.cpp's order (for the self-test)."""
    rows = w.shape[0]
    return (
        w.reshape(heads, 2, rows // heads // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def to_bf16_bits(a):
    """float32 → BF16 bit patterns, round to nearest even (NaN kept quiet)."""
    bits = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def write_safetensors(path, tensors):
    """tensors: list of (name, uint16 BF16 array). Header padded to 8 bytes."""
    header, offset = {}, 0
    for name, a in tensors:
        n = a.size * 2
        header[name] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header["__metadata__"] = {"format": "pt"}
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for _, a in tensors:
            f.write(np.ascontiguousarray(a).astype("<u2").tobytes())
    os.replace(path + ".part", path)


def field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    return f.contents()


# GGUF tensor name → Hugging Face name, per block and global.
BLOCK_NAMES = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}


def hf_name(name):
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[2] in BLOCK_NAMES and parts[3] == "weight":
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.weight"
    raise SystemExit(f"error: unexpected GGUF tensor {name}")


def tokenizer_json(reader):
    model = field(reader, "tokenizer.ggml.model")
    if model != "gpt2":
        raise SystemExit(f"error: tokenizer model {model!r}: only byte-level BPE (gpt2) is converted")
    tokens = field(reader, "tokenizer.ggml.tokens")
    types = field(reader, "tokenizer.ggml.token_type")
    merges = field(reader, "tokenizer.ggml.merges")
    pre = field(reader, "tokenizer.ggml.pre", "default")
    # llama.cpp's "smollm" pre-tokenizer is GPT-2's regex with every digit
    # split off on its own.
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    if pre in ("smollm", "starcoder", "refact"):
        pre_tokenizer = {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]}
    else:
        pre_tokenizer = byte_level
    CONTROL = 3
    added = [
        {"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL
    ]
    post = None
    if field(reader, "tokenizer.ggml.add_bos_token", False):
        bos = tokens[field(reader, "tokenizer.ggml.bos_token_id")]
        post = {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos: {"id": bos, "ids": [field(reader, "tokenizer.ggml.bos_token_id")], "tokens": [bos]}}}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": list(merges)},
    }


def convert(gguf_path, out_dir):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    reader = GGUFReader(gguf_path)
    arch = field(reader, "general.architecture")
    if arch != "llama":
        raise SystemExit(f"error: architecture {arch!r}: only llama is converted")
    a = lambda k, d=None: field(reader, f"llama.{k}", d)
    heads, kv_heads = a("attention.head_count"), a("attention.head_count_kv")
    hidden = a("embedding_length")
    names = {t.name for t in reader.tensors}
    tokens = field(reader, "tokenizer.ggml.tokens")
    eps = float(f"{a('attention.layer_norm_rms_epsilon'):.7g}")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": a("feed_forward_length"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": hidden // heads,
        "num_hidden_layers": a("block_count"),
        "vocab_size": len(tokens),
        "max_position_embeddings": a("context_length"),
        "rms_norm_eps": eps,
        "rope_theta": float(a("rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "hidden_act": "silu",
        "tie_word_embeddings": "output.weight" not in names,
        "bos_token_id": field(reader, "tokenizer.ggml.bos_token_id"),
        "eos_token_id": field(reader, "tokenizer.ggml.eos_token_id"),
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "bfloat16",
    }
    os.makedirs(out_dir)
    tensors = []
    for t in reader.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        name = hf_name(t.name)
        if name.endswith("q_proj.weight"):
            w = unpermute_rotary(w, heads)
        elif name.endswith("k_proj.weight"):
            w = unpermute_rotary(w, kv_heads)
        tensors.append((name, to_bf16_bits(w)))
    tensors.sort(key=lambda nt: nt[0])
    write_safetensors(os.path.join(out_dir, "model.safetensors"), tensors)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tokenizer_json(reader), f, ensure_ascii=False)
    print(f"{out_dir}: {len(tensors)} tensors, {sum(a.size for _, a in tensors)} parameters")


def self_test():
    rng = np.random.default_rng(0)
    for heads, d, cols in [(9, 64, 5), (3, 64, 7), (2, 8, 1)]:
        w = rng.standard_normal((heads * d, cols)).astype(np.float32)
        assert np.array_equal(unpermute_rotary(permute_rotary(w, heads), heads), w)
        # In llama.cpp's order, row 2i+1 of a head holds original row i + d/2.
        p = permute_rotary(w, heads)
        assert np.array_equal(p[1], w[d // 2]) and np.array_equal(p[2], w[1])
    x = np.array([1.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -2.5, np.inf], dtype=np.float32)
    assert list(to_bf16_bits(x)) == [0x3F80, 0x3F80, 0x3F82, 0xC020, 0x7F80]
    print("self-test passed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    elif len(sys.argv) == 3:
        convert(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit(__doc__)
