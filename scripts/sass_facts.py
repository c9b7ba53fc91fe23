#!/usr/bin/env python3
"""SASS facts of the ZipGEMM kernels from nvdisasm's listing of one cubin:
per kernel, instructions in the smallest loop that holds the most matrix
instructions (the K loop), tiles per loop turn, instructions per warp-tile and per
decoded weight and thread, the memory instructions of that loop (load
widths), and local-memory use (STL/LDL) anywhere in the kernel.

  sass_facts.py LISTING.sass

A tile is 16 x 128 weights per warp for the mma.sync kernels and the
compressed GEMV (8 k-steps of m16n8k16, `NT` n-tiles each: n8/n16/n32
issue 1/2/4 HMMA per k-step, the GEMV 1) and
64 x 128 per consumer warpgroup for the wgmma kernels (8 HGMMA per tile);
either way 64 weights per thread per tile.
"""
import collections
import re
import sys

MMA_PER_TILE = {
    "zipserv_gemm_n8": 8, "zipserv_gemm_n8_early": 8, "zipserv_gemm_n16": 16, "zipserv_gemm_n32": 32,
    "zipserv_gemm_sm90_n16_x2": 8, "zipserv_gemm_sm90_n32_x2": 8, "zipserv_gemm_sm90_n64_x2": 8,
    "zipserv_gemm_sm90_n64": 8, "zipserv_gemm_sm90_n128": 8, "zipserv_gemm_sm90_n256": 8,
    # The compressed GEMV: one tile per warp and turn, 8 HMMA (n = 8 at most).
    "zipserv_zipgemv": 8, "zipserv_zipgemv_n16": 16,
}
WEIGHTS_PER_THREAD_PER_TILE = 64


def functions(lines):
    out, name = {}, None
    for line in lines:
        m = re.match(r"^\.text\.(\w+):", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name:
            out[name].append(line)
    return out


def instructions(body):
    ins, labels = [], {}
    for line in body:
        m = re.match(r"^\s*(\.L_x_\d+):", line)
        if m:
            labels[m.group(1)] = len(ins)
            continue
        m = re.search(r"/\*[0-9a-f]{4,}\*/\s+(.*?);", line)
        if m:
            ins.append(m.group(1).strip())
    return ins, labels


def opcode(text):
    return re.sub(r"^@!?U?P\w+\s+", "", text).split()[0]


def main():
    funcs = functions(open(sys.argv[1]).read().split("\n"))
    print("| kernel | loop instructions | matrix instructions | tiles per turn | instructions per warp-tile | per weight per thread | loop memory instructions | STL/LDL in kernel |")
    print("|---|---|---|---|---|---|---|---|")
    for name, per_tile in MMA_PER_TILE.items():
        if name not in funcs:
            continue
        ins, labels = instructions(funcs[name])
        local = sum(opcode(i) in ("STL", "LDL") or opcode(i).startswith(("STL.", "LDL.")) for i in ins)
        loops = []
        for i, text in enumerate(ins):
            m = re.search(r"BRA\s+(?:`\()?(\.L_x_\d+)", text)
            if m and m.group(1) in labels and labels[m.group(1)] <= i:
                start = labels[m.group(1)]
                mma = sum("HMMA" in t or "HGMMA" in t for t in ins[start:i + 1])
                if mma:
                    loops.append((i + 1 - start, start, i + 1, mma))
        if not loops:
            continue
        # The K loop holds every matrix instruction of a turn. The smallest
        # back edge over any of them can be an inner loop whose blocks ptxas
        # placed after the loop's body (the exception patch's tail), so
        # take the smallest among those with the most.
        most = max(loop[3] for loop in loops)
        n, a, b, mma = min(loop for loop in loops if loop[3] == most)
        tiles = max(1, mma // per_tile)
        ops = collections.Counter(opcode(t) for t in ins[a:b])
        mem = ", ".join(f"{k} {v}" for k, v in sorted(ops.items())
                        if k.startswith(("LDG", "LDS", "STS", "LDSM", "LDGSTS", "LDC", "SYNCS", "UTMA", "UBLKCP")))
        print(f"| {name} | {n} | {mma} | {tiles} | {n / tiles:.0f} | {n / tiles / WEIGHTS_PER_THREAD_PER_TILE:.2f} | {mem} | {local} |")


if __name__ == "__main__":
    main()
