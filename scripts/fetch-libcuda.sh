#!/usr/bin/env bash
# Make the CUDA driver library available for *linking* on a machine without
# the NVIDIA driver (a CPU-only build or CI machine).
#
# `cust` links against libcuda.so. Debian ships it in the non-free package
# `libcuda1`; installing that package would pull in the whole driver stack,
# so we only download it and unpack it into the build tree. Nothing outside
# the repository is changed: apt runs with a private source list and cache.
#
# Prints the directory to export as CUDA_LIBRARY_PATH (cust's build script
# looks for $CUDA_LIBRARY_PATH/lib64/libcuda.so). At run time on such a
# machine, point LD_LIBRARY_PATH at the same lib64: cuInit then reports that
# there is no device, and zipserv says so instead of failing to start.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dest="$root/target/cuda-driver"
if [[ -e "$dest/lib64/libcuda.so" ]]; then
    echo "$dest"
    exit 0
fi

work="$root/target/cuda-driver-fetch"
rm -rf "$work"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/sources"

# Reuse the machine's configured Debian mirror, adding the non-free component.
shopt -s nullglob
found=0
for f in /etc/apt/sources.list.d/*.sources; do
    sed -E 's/^(Components:.*)$/\1 non-free/' "$f" >"$work/sources/$(basename "$f")"
    found=1
done
if [[ -f /etc/apt/sources.list ]] && grep -q '^deb ' /etc/apt/sources.list; then
    sed -E 's/^(deb .*)$/\1 non-free/' /etc/apt/sources.list >"$work/sources/main.list"
    found=1
fi
if [[ $found == 0 ]]; then
    echo "fetch-libcuda: no apt sources configured on this machine" >&2
    exit 1
fi

apt_opts=(
    -o "Dir::Etc::SourceList=/dev/null"
    -o "Dir::Etc::SourceParts=$work/sources"
    -o "Dir::State::Lists=$work/lists"
    -o "Dir::Cache=$work/cache"
    -o "APT::Sandbox::User=root"
)
apt-get "${apt_opts[@]}" update -qq >&2
(cd "$work" && apt-get "${apt_opts[@]}" download libcuda1 >&2)

mkdir -p "$work/x" "$dest/lib64"
dpkg -x "$work"/libcuda1_*.deb "$work/x"
lib=$(find "$work/x" -name 'libcuda.so.1' | head -n1)
if [[ -z "$lib" ]]; then
    echo "fetch-libcuda: libcuda.so.1 not found in the libcuda1 package" >&2
    exit 1
fi
cp -L "$lib" "$dest/lib64/libcuda.so.1"
ln -sf libcuda.so.1 "$dest/lib64/libcuda.so"
rm -rf "$work"
echo "$dest"
