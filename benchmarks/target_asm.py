"""The first-layer gather loop as compiled for the current Numba target: its size and spills.

    python benchmarks/target_asm.py [--print]
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= python benchmarks/target_asm.py

Compiles ``simd.gather_axpy_wide`` (the forward's inner loop: one term of eight vector
multiply-adds per non-zero) for the CPU Numba targets, finds the loop that holds the
multiply-adds in the assembly, and counts its stack accesses: loads and stores relative to
the stack pointer inside the loop are register spills (0 means the accumulators stay in
registers). ``benchmarks/aarch64_qemu.sh`` runs it for aarch64. ``--print`` shows the loop.
"""

import re
import sys

import numpy as np
from numba import njit

from fastnn.backends import simd
from fastnn.backends.target import TARGET

# a multiply-add or a multiply of the term (x86: vfmadd*ps, mulps/vmulps; aarch64: fmla, fmul)
MULTIPLY = re.compile(r"\s(v?fn?madd\d*ps|v?mulps|fmla|fmul)\s")
STACK = re.compile(r"\(%rsp\)|\(%rbp\)|\[sp\b|\[sp,|\[x29")
BRANCH = re.compile(r"\s(j[a-z]+|b\.[a-z]+|b|cbn?z|tbn?z)\s+(?:\w+,\s*)*(\.?L\w+)\s*$")


@njit
def _gather(out, r, idx, vals, k0, k1, M, j):
    simd.gather_axpy_wide(out, r, idx, vals, k0, k1, M, j)


def gather_loop():
    """(assembly lines of the innermost loop holding the multiply-adds, all the assembly)."""
    M, out = np.zeros((4, 2 * simd.BLOCK_WIDE), np.float32), np.zeros((2, 2 * simd.BLOCK_WIDE), np.float32)
    _gather(out, 0, np.zeros(2, np.int32), np.zeros(2, np.float32), 0, 2, M, 0)
    asm = next(iter(_gather.inspect_asm().values())).splitlines()
    labels = {line.strip()[:-1]: i for i, line in enumerate(asm) if re.fullmatch(r"\.?L\w+:", line.strip())}
    loops = []
    for i, line in enumerate(asm):
        m = BRANCH.search(line)
        if m and labels.get(m.group(2), i) < i:  # a branch back to an earlier label
            body = asm[labels[m.group(2)]:i + 1]
            if any(MULTIPLY.search(b) for b in body):
                loops.append(body)
    if not loops:
        raise RuntimeError("no loop with multiply-adds found in the assembly (run with --print to see it)")
    return min(loops, key=len), asm


def main(argv):
    loop, asm = gather_loop()
    instructions = [line for line in loop if line.strip() and not line.strip().startswith((".", "#", "//", ";"))
                    and not line.strip().endswith(":")]
    muls = sum(bool(MULTIPLY.search(line)) for line in loop)
    spills = sum(bool(STACK.search(line)) for line in loop)
    print(f"target {TARGET.describe()}; gather_axpy_wide ({simd.BLOCK_WIDE} columns): inner loop "
          f"{len(instructions)} instructions, {muls} multiply(-add)s, {spills} stack accesses (spills)")
    if "--print" in argv:
        print("\n".join(loop))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
