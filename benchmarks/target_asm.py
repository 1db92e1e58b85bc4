"""The first-layer gather loops as compiled for the current Numba target: their size and spills.

    python benchmarks/target_asm.py [--print]
    NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES= python benchmarks/target_asm.py

Compiles ``simd.gather_axpy_long`` (the forward's inner loop: one term of LONG vector
multiply-adds per non-zero) and ``simd.gather_axpy_wide`` (the weight gradient's: eight) for
the CPU Numba targets, finds the loop that holds the multiply-adds in the assembly, and counts
its stack accesses: loads and stores relative to the stack pointer inside the loop. Each
accumulator on the stack costs two per term (a load, often folded into the multiply-add, and a
store): the long loop's ``simd.LONG_IN_MEMORY`` stack slots by design, the rest register
spills (0 means every other accumulator stays in a register). ``benchmarks/aarch64_qemu.sh``
runs it for aarch64. ``--print`` shows the loops.
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
def _gather_wide(out, r, idx, vals, k0, k1, M, j):
    simd.gather_axpy_wide(out, r, idx, vals, k0, k1, M, j)


@njit
def _gather_long(out, r, idx, vals, k0, k1, M, j):
    simd.gather_axpy_long(out, r, idx, vals, k0, k1, M, j)


LOOPS = {"gather_axpy_long": (_gather_long, simd.LONG, simd.LONG_IN_MEMORY),
         "gather_axpy_wide": (_gather_wide, simd.WIDE, 0)}


def gather_loop(name="gather_axpy_long"):
    """(assembly lines of the innermost loop holding the multiply-adds, all the assembly) of
    the loop ``name`` (a key of LOOPS)."""
    fn = LOOPS[name][0]
    M, out = np.zeros((4, 2 * simd.BLOCK_LONG), np.float32), np.zeros((2, 2 * simd.BLOCK_LONG), np.float32)
    fn(out, 0, np.zeros(2, np.int32), np.zeros(2, np.float32), 0, 2, M, 0)
    asm = next(iter(fn.inspect_asm().values())).splitlines()
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


def count(loop, in_memory):
    """{instructions, multiply_adds, stack_accesses, spills} of a loop's assembly lines, spills
    being the stack accesses beyond the two per term of each of its ``in_memory`` stack slots."""
    instructions = [line for line in loop if line.strip() and not line.strip().startswith((".", "#", "//", ";"))
                    and not line.strip().endswith(":")]
    stack = sum(bool(STACK.search(line)) for line in loop)
    return {"instructions": len(instructions), "multiply_adds": sum(bool(MULTIPLY.search(line)) for line in loop),
            "stack_accesses": stack, "spills": max(0, stack - 2 * in_memory)}


def main(argv):
    print(f"target {TARGET.describe()}, {TARGET.registers} vector registers")
    for name, (_, vectors, in_memory) in LOOPS.items():
        loop, _ = gather_loop(name)
        c = count(loop, in_memory)
        print(f"{name} ({vectors * simd.LANES} columns, {vectors} accumulators, {in_memory} in stack slots by "
              f"design): inner loop {c['instructions']} instructions, {c['multiply_adds']} multiply(-add)s, "
              f"{c['stack_accesses']} stack accesses, {c['spills']} of them spills")
        if "--print" in argv:
            print("\n".join(loop))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
