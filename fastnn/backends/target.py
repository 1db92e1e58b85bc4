"""The CPU that Numba compiles for, and what the kernels make of it: decided once, at import.

Numba compiles for ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` when they are set (the name
alone keeps the host's features; with ``NUMBA_CPU_FEATURES=`` empty the named CPU's own),
else for the host. ``TARGET`` asks LLVM, with exactly that CPU name and feature string,
how it compiles two probe functions, rather than parsing feature names:

``lanes``   float32 lanes of the vector registers the target uses for a ``<16 x float>``
            sum (16 over the number of adds it takes): 16 (AVX-512), 8 (AVX, AVX2), 4 (SSE,
            NEON), 1 (no vector unit). The zero-skipping kernels keep their sums in vectors
            of this width.
``fma``     whether ``llvm.fma`` is one instruction (FMA3, FMA4, NEON ``fmla``) rather
            than a call to libm's ``fmaf``. Decides the arithmetic of every term of a
            first-layer sum (``simd.muladd``): fused where it is an instruction, else a
            separately rounded multiply and add (a software ``fmaf`` per term would make
            the kernels 30-80x slower than NumPy).
``avx2``    whether 8-lane integer vectors and AVX2's lane permutes exist (x86 only):
            ``simd.list_row_group`` then packs each 8 pixels with one table look-up and
            ``vpermd`` (without AVX-512's ``vpcompressd``, LLVM expands a vector compress
            into one store per lane, which made listing 4x slower than on AVX-512).
``registers``  vector registers of that width: 32 (AVX-512, NEON), else 16 (x86's
            xmm/ymm); how many accumulators a gather loop can keep in them.
``first_layer``  ``"lists"`` (the zero-skipping kernels over non-zero lists) or ``"blas"``
            (dense BLAS products, as the NumPy backend): the lists where they were measured
            to beat BLAS, that is with vectors of 4 or more lanes; see ``_first_layer``.
            ``FASTNN_FIRST_LAYER=lists|blas`` overrides the choice (for measuring it).

Numba keys its cache index by the same CPU name and features (``magic_tuple``), so each
target compiles and caches its own kernels. Must not import any kernel module.
"""

import os
import re
from dataclasses import asdict, dataclass

import llvmlite.binding as ll
from numba.core import config

# The list kernels beat BLAS on every CPU emulated (README, "Other CPUs"), down to 4-lane SSE
# without FMA: nehalem, NumPy and OpenBLAS held to SSE4.2, MNIST 784-128-64-10, 1 thread,
# batch 8 / 128: 150k / 180k samples/s on the lists against 50k / 67k with a BLAS first
# layer (NumPy 36k / 62k). Without vectors (never measured) BLAS is the safe side.
LIST_MIN_LANES = 4

_PROBE_IR = r"""
declare <4 x float> @llvm.fma.v4f32(<4 x float>, <4 x float>, <4 x float>)

define <4 x float> @probe_fma(<4 x float> %a, <4 x float> %b, <4 x float> %c) {
  %r = call <4 x float> @llvm.fma.v4f32(<4 x float> %a, <4 x float> %b, <4 x float> %c)
  ret <4 x float> %r
}

define void @probe_int8(<8 x i32>* %a, <8 x i32>* %b) {
  %x = load <8 x i32>, <8 x i32>* %a, align 4
  %y = load <8 x i32>, <8 x i32>* %b, align 4
  %s = add <8 x i32> %x, %y
  store <8 x i32> %s, <8 x i32>* %a, align 4
  ret void
}

define void @probe_width(<16 x float>* %a, <16 x float>* %b) {
  %x = load <16 x float>, <16 x float>* %a, align 4
  %y = load <16 x float>, <16 x float>* %b, align 4
  %s = fadd <16 x float> %x, %y
  store <16 x float> %s, <16 x float>* %a, align 4
  ret void
}
"""


@dataclass(frozen=True)
class Target:
    """What the kernels compile for. ``cpu``: LLVM's CPU name; ``features``: the feature
    string Numba passes ('' = the CPU's own); ``arch``: the triple's architecture."""

    cpu: str
    features: str
    arch: str
    lanes: int
    fma: bool
    avx2: bool
    first_layer: str
    registers: int

    def describe(self):
        """One line for reports, e.g. 'skylake-avx512: 16 lanes, FMA, first layer: lists'."""
        return (f"{self.cpu}: {self.lanes} lanes, {'FMA' if self.fma else 'no FMA'}, "
                f"first layer: {self.first_layer}")

    def as_dict(self):
        d = asdict(self)
        d["features"] = _feature_summary(self.features)
        return d


def numba_cpu():
    """(cpu name, feature string) exactly as Numba's JIT codegen chooses them."""
    name = config.CPU_NAME or ll.get_host_cpu_name()
    if config.CPU_FEATURES is not None:
        return name, config.CPU_FEATURES
    try:  # Numba's own reading (it honours NUMBA_ENABLE_AVX)
        from numba.core.codegen import get_host_cpu_features
        return name, get_host_cpu_features()
    except ImportError:
        return name, ll.get_host_cpu_features().flatten()


def _assembly(cpu, features):
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    triple = ll.get_process_triple()
    machine = ll.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, opt=2)
    module = ll.parse_assembly(_PROBE_IR)
    module.triple = triple
    module.verify()
    return triple, machine.emit_assembly(module)


def _function(asm, name):
    # the text of one function of the probe (from its label to the next function's)
    start = asm.index(f"{name}:")
    end = asm.find(".Lfunc_end", start)
    return asm[start:end if end > 0 else None]


def _first_layer(lanes, fma):
    # fma does not enter: an unfused multiply-add costs one more instruction per vector
    # (sandybridge still ran 3.5x NumPy at batch 8); only a libm fmaf call would lose, and
    # muladd never makes one.
    return "lists" if lanes >= LIST_MIN_LANES else "blas"


def probe(cpu, features):
    """The ``Target`` LLVM makes of a CPU name and a feature string."""
    triple, asm = _assembly(cpu, features)
    adds = len(re.findall(r"^\s*\S*add\S*\s", _function(asm, "probe_width"), re.MULTILINE))
    lanes = {1: 16, 2: 8, 4: 4, 16: 1}.get(adds, 4)
    fused = _function(asm, "probe_fma")
    fma = "fmaf" not in fused and re.search(r"\bv?fn?madd|\bfmla\b", fused) is not None
    avx2 = triple.startswith(("x86_64", "i686", "i386")) and "ymm" in _function(asm, "probe_int8")
    forced = os.environ.get("FASTNN_FIRST_LAYER", "")
    if forced not in ("", "lists", "blas"):
        raise ValueError(f"FASTNN_FIRST_LAYER must be 'lists' or 'blas' (or unset: chosen for the CPU); "
                         f"got {forced!r}. Unset it to let fastnn choose.")
    arch = triple.split("-")[0]
    return Target(cpu=cpu, features=features, arch=arch, lanes=lanes, fma=fma, avx2=avx2,
                  first_layer=forced or _first_layer(lanes, fma),
                  registers=32 if lanes == 16 or arch in ("aarch64", "arm64") else 16)


def _feature_summary(features):
    # the vector features worth a report, from a '+a,-b' string ('' = the CPU's own)
    if not features:
        return "(the CPU's own)"
    on = [f[1:] for f in features.split(",") if f.startswith("+")]
    keep = [f for f in on if re.fullmatch(r"avx512f|avx2|avx|fma4?|sse4\.2|neon|sve2?", f)]
    return ",".join(keep) or "(none of avx/fma/neon)"


TARGET = probe(*numba_cpu())
