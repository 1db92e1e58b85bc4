#!/usr/bin/env bash
# fastnn's kernels compiled for aarch64 (NEON: 4 lanes, FMA, 32 vector registers) and checked
# under qemu-user on an x86-64 Debian/Ubuntu machine: the gather loop's assembly (instructions,
# spills) and the kernel tests that pin the bit-identity contract. Timings under qemu mean
# nothing; this checks correctness and code generation only.
#
#   bash benchmarks/aarch64_qemu.sh            # sets up $ARM_ROOT once (root, apt and PyPI), then runs
#   ARM_ROOT=/somewhere bash benchmarks/aarch64_qemu.sh
#
# Needs qemu-user-static (apt-get install qemu-user-static); without it, says so and exits 0.
# The sysroot is Debian bookworm's arm64 python3.11 (apt-get download with the arm64
# architecture added for the download only) plus the manylinux aarch64 wheels of fastnn's
# dependencies (pip download), unpacked under $ARM_ROOT; nothing is installed on the host
# besides qemu. Numba compiles under emulation: the first run takes several minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
ARM_ROOT="${ARM_ROOT:-/tmp/fastnn-aarch64}"
QEMU="$(command -v qemu-aarch64-static || command -v qemu-aarch64 || true)"
if [ -z "$QEMU" ]; then
    echo "skipped: no qemu-aarch64(-static) on this machine (apt-get install qemu-user-static)"
    exit 0
fi
PY="$ARM_ROOT/root/usr/bin/python3.11"
if [ ! -x "$PY" ] || [ ! -d "$ARM_ROOT/site/numba" ]; then
    echo "setting up the arm64 sysroot in $ARM_ROOT"
    mkdir -p "$ARM_ROOT/debs" "$ARM_ROOT/root" "$ARM_ROOT/wheels" "$ARM_ROOT/site"
    added=""
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
        dpkg --add-architecture arm64 && added=1
    fi
    apt-get update -qq
    (cd "$ARM_ROOT/debs" && apt-get download -qq python3.11-minimal:arm64 libpython3.11-minimal:arm64 \
        libpython3.11-stdlib:arm64 libc6:arm64 libexpat1:arm64 zlib1g:arm64 libffi8:arm64 libssl3:arm64 \
        libbz2-1.0:arm64 liblzma5:arm64 libgcc-s1:arm64 libstdc++6:arm64 libuuid1:arm64 libcrypt1:arm64 \
        libsqlite3-0:arm64 libncursesw6:arm64 libtinfo6:arm64 libreadline8:arm64 libgomp1:arm64 libdb5.3:arm64 \
        libnsl2:arm64 libtirpc3:arm64 libgssapi-krb5-2:arm64 libkrb5-3:arm64 libk5crypto3:arm64 \
        libkrb5support0:arm64 libcom-err2:arm64 libkeyutils1:arm64)
    [ -n "$added" ] && dpkg --remove-architecture arm64
    for deb in "$ARM_ROOT"/debs/*.deb; do dpkg -x "$deb" "$ARM_ROOT/root"; done
    python3 -m pip download -q --only-binary=:all: --platform manylinux2014_aarch64 --platform manylinux_2_17_aarch64 \
        --platform manylinux_2_28_aarch64 --python-version 3.11 --implementation cp -d "$ARM_ROOT/wheels" \
        "numba>=0.68.1" "numpy>=2.4" "scipy>=1.17" tqdm threadpoolctl pytest hypothesis
    for whl in "$ARM_ROOT"/wheels/*.whl; do python3 -m zipfile -e "$whl" "$ARM_ROOT/site/"; done
fi
run() {
    PYTHONPATH="$ARM_ROOT/site:$PWD" QEMU_LD_PREFIX="$ARM_ROOT/root" NUMBA_CACHE_DIR="$ARM_ROOT/cache" "$QEMU" "$PY" "$@"
}
run -c "import platform; print('python', platform.python_version(), 'on', platform.machine(), 'under qemu')"
run benchmarks/target_asm.py --print
run -m pytest tests/test_kernels.py tests/test_target.py -q -p no:cacheprovider \
    -k "gather or muladd or csr_build or list_nonzero or encode_bytes or sparse_kernels or fused_sgd or width or first_layer"
