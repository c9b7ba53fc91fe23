#!/usr/bin/env bash
# Fetch NVIDIA's PTX assembler (ptxas) from PyPI's `nvidia-cuda-nvcc` wheel into
# the build tree, for checking the generated PTX (registers, spills) on
# machines without the CUDA toolkit. Prints the path of the ptxas binary.
exec "$(dirname "$0")/fetch-nvidia-tool.sh" ptxas nvidia-cuda-nvcc==13.5.37
