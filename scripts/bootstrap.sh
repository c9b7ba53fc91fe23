# Sourced by scripts/quickstart.sh and scripts/test.sh: makes the pinned
# Rust toolchain (rust-toolchain.toml) available, installing rustup itself
# from static.rust-lang.org when the machine has none. Nothing else is
# installed; CUDA is not needed to build (see README, "Building without
# CUDA").
_zipserv_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if ! command -v rustup >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/rustup" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
if ! command -v rustup >/dev/null 2>&1; then
    echo "== installing rustup (no rustup on this machine)" >&2
    _zipserv_init=$(mktemp)
    curl --proto '=https' --tlsv1.2 -sSf -o "$_zipserv_init" \
        "https://static.rust-lang.org/rustup/dist/$(uname -m)-unknown-linux-gnu/rustup-init" ||
        { echo "error: cannot download rustup-init" >&2; return 1; }
    chmod +x "$_zipserv_init"
    "$_zipserv_init" -y --no-modify-path --default-toolchain none --profile minimal >&2 ||
        { echo "error: rustup-init failed" >&2; return 1; }
    rm -f "$_zipserv_init"
    export PATH="$HOME/.cargo/bin:$PATH"
fi
# rustup does not install a pinned toolchain by itself; inside the
# repository this installs the one rust-toolchain.toml names, with its
# components and the nvptx64 target (quick when it is already there).
(cd "$_zipserv_root" && rustup toolchain install --no-self-update >&2) ||
    { echo "error: installing the pinned toolchain failed" >&2; return 1; }
unset _zipserv_root _zipserv_init
