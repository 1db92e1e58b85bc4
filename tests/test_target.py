"""The CPU target the kernels compile for (fastnn/backends/target.py): what LLVM makes of a CPU
name, the first-layer rule, and that the gather loop keeps its sums in registers."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastnn.backends import simd, target
from fastnn.backends.target import TARGET

ROOT = Path(__file__).resolve().parents[1]
x86 = pytest.mark.skipif(TARGET.arch != "x86_64", reason="probes x86 CPU names (LLVM compiles, nothing runs)")


def test_the_kernels_use_the_targets_width():
    assert TARGET.lanes in (1, 4, 8, 16) and simd.LANES == TARGET.lanes and simd.FMA == TARGET.fma
    assert simd.BLOCK_WIDE == 8 * TARGET.lanes and TARGET.first_layer in ("lists", "blas")
    # the forward's block: 16 vectors where they are narrower than AVX-512's and fused
    assert simd.LONG == (16 if TARGET.lanes < 16 and TARGET.fma else 8) and simd.BLOCK_LONG == simd.LONG * TARGET.lanes
    assert TARGET.registers == (32 if TARGET.lanes == 16 or TARGET.arch == "aarch64" else 16)


@x86
@pytest.mark.parametrize("cpu,lanes,fma,avx2", [("skylake-avx512", 16, True, True), ("haswell", 8, True, True),
                                                ("sandybridge", 8, False, False), ("bdver2", 8, True, False),
                                                ("nehalem", 4, False, False), ("generic", 4, False, False)])
def test_probe_reads_width_and_fma_from_llvm(cpu, lanes, fma, avx2):
    t = target.probe(cpu, "")
    assert (t.cpu, t.lanes, t.fma, t.avx2, t.first_layer) == (cpu, lanes, fma, avx2, "lists")
    # a feature string overrides the CPU's own features, as it does for Numba
    assert target.probe(cpu, "+avx2,+fma,-avx512f").lanes == 8 and target.probe(cpu, "+avx2,+fma").fma


def test_first_layer_rule_and_its_override(monkeypatch):
    assert target._first_layer(4, False) == "lists" and target._first_layer(1, False) == "blas"
    cpu, features = target.numba_cpu()
    monkeypatch.setenv("FASTNN_FIRST_LAYER", "blas")
    assert target.probe(cpu, features).first_layer == "blas"
    monkeypatch.setenv("FASTNN_FIRST_LAYER", "gemm")
    with pytest.raises(ValueError, match="FASTNN_FIRST_LAYER must be 'lists' or 'blas'.*got 'gemm'"):
        target.probe(cpu, features)


@x86
@pytest.mark.parametrize("cpu,long_spills", [("haswell", 2), ("nehalem", 0)])
def test_gather_loop_keeps_its_sums_in_registers(cpu, long_spills, tmp_path):
    """benchmarks/target_asm.py compiles the gather loops for another CPU: the weight gradient's
    eight sums stay in registers; haswell's 16-sum forward loop keeps 2 in stack slots by design
    and LLVM spills one more (2 stack accesses a term), nehalem's (8 sums) none."""
    env = {**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": "", "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "target_asm.py")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"target {cpu}:" in out.stdout and " 0 multiply" not in out.stdout
    lines = {line.split(" ", 1)[0]: line for line in out.stdout.splitlines()}
    assert "0 stack accesses, 0 of them spills" in lines["gather_axpy_wide"], out.stdout
    assert f" {long_spills} of them spills" in lines["gather_axpy_long"], out.stdout
