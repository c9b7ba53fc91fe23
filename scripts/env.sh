# Source this (`source scripts/env.sh`) before building or testing on a
# machine without the NVIDIA driver. It fetches, into target/, the two NVIDIA
# pieces a CPU-only machine lacks:
#   - libcuda (link time for `cust`; at run time it reports "no CUDA device"),
#   - ptxas (to check the generated PTX for registers and spills).
# On a machine with CUDA installed, neither is needed: cust finds
# /usr/local/cuda, and ptxas is on PATH.
_zipserv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ ! -e /usr/local/cuda/lib64/libcuda.so && -z "${CUDA_LIBRARY_PATH:-}" ]] && ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then
    CUDA_LIBRARY_PATH=$("$_zipserv_root/scripts/fetch-libcuda.sh") || return 1
    export CUDA_LIBRARY_PATH
    export LD_LIBRARY_PATH="$CUDA_LIBRARY_PATH/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
if [[ -z "${PTXAS:-}" ]] && ! command -v ptxas >/dev/null; then
    PTXAS=$("$_zipserv_root/scripts/fetch-ptxas.sh") || return 1
    export PTXAS
fi
unset _zipserv_root
