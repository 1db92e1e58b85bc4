"""Numba intrinsics for the zero-skipping kernels: register-blocked gather-AXPYs, vector
compresses that list the non-zeros of a group of rows, cache prefetches and the thread count.
Vector width and arithmetic follow the CPU Numba compiles for (``target.TARGET``).

    gather_axpy_wide(out, r, idx, vals, k0, k1, M, j)
        out[r, j:j+BLOCK_WIDE] = sum over k in [k0, k1) of vals[k] * M[idx[k], j:j+BLOCK_WIDE]

with the sums kept in eight vector registers of ``LANES`` float32 lanes (16 with AVX-512,
8 with AVX/AVX2, 4 with SSE/NEON: BLOCK_WIDE = 128, 64 or 32 columns) for the whole list
and stored once at the end (``gather_axpy_half`` and ``gather_axpy_one``: four and one
register; ``gather_axpy_masked`` takes a ninth argument ``count`` < LANES and sums the first
``count`` columns in one register, loading M and storing out under a lane mask: the column
tail of a layer whose width is no multiple of LANES, e.g. 10 outputs or 100 units).
``gather_axpy_long``, the forward's, sums ``LONG`` registers: 16 with AVX2 + FMA
and NEON (BLOCK_LONG = 128 or 64 columns; on x86 two of them in stack slots, as 16 registers
cannot hold 16 sums, the broadcast value and a loaded row), else it is ``gather_axpy_wide``.
The ``_sgd`` variants take a float32 last argument ``lr`` and apply ``out[r, j:] -= lr * sum``
instead (the rounding of ``w - lr * g`` with g the stored sum: a plain SGD step whose gradient
is never stored).

    gather_group(out, r, idx, vals, plane, k0, k1, M, j)
        the same for the GROUP = 3 rows r, r + 1, r + 2 of out at once, over one list:
        out[r + g, j:j+BLOCK_GROUP] = sum over k of vals[g * plane + k] * M[idx[k], j:...]
        (row g's values in plane g of vals). Each loaded row of M serves the three rows:
        GROUP x GROUP_VECTORS sums in registers (8 vectors with AVX-512: BLOCK_GROUP = 128).
        Three rows of a batch share ~40% of their MNIST pixels, and three neighbouring pixels
        ~55% of their batch rows, so the first layer's forward (rows of a batch over the
        union of their pixels) and weight gradient (pixels over the union of their rows)
        load M's rows 1.6 and 2.3 times less often, for 1.8 and 1.3 times the multiply-adds.
        ``gather_group_sgd`` as the ``_sgd`` variants; ``gather_pair`` for two rows (the
        last group of a batch whose size leaves two).

    dense_rows(out, r, step, vals, plane, k0, k1, M, j)
        no list: out[r + g, j:j+BLOCK_HALF] = sum over k of v[k * step + (r + g) * plane] *
        M[k, j:...] for the DENSE_ROWS rows g (5 with AVX-512, else 2), v the elements of vals
        (any C-contiguous float32 array) in order, each loaded row of M serving all the rows;
        ``dense_row`` for one row. ``jit_gemm``'s small products: x @ W is vals x, step 1 and
        plane x's row length; x.T @ dz is vals x, step x's row length and plane 1.

    scatter_group{1,2,3}(out, r, idx, vals, plane, k0, k1, M, j)
        the transpose, for a list that holds each idx[k] once: the ``rows`` rows M[r:r + rows,
        j:j+BLOCK_GROUP] held in registers, out[idx[k], j:...] = sum over g of
        vals[g * plane + k] * M[r + g, j:...]: the weight gradient of a batch of 1 to 3 rows,
        without buckets. ``scatter_groups`` and ``scatter_groups_sgd`` hold the three.

The bit-identity contract: each term is one ``muladd`` per lane, in increasing k, starting
from +0: ``s = muladd(vals[k], M[idx[k], c], s)``, where ``muladd(a, b, c)`` is the fused
``fma(a, b, c)`` (one rounding) on a target with an FMA instruction and the separately
rounded ``c + a * b`` on one without (never libm's ``fmaf``, which is a slow software
routine there). The scalar ``muladd`` below is the same operation, so the column tails and
the plain Numba kernels these replace return the same bits as the vector kernels on every
target; the bits differ between FMA and no-FMA targets (by the rounding of each product).

Why an intrinsic: written in Numba, ``out[r, c] += v * M[t, c]`` reloads and stores
``out`` for every term, because LLVM cannot prove that ``out`` and ``M`` do not overlap
(it adds run-time overlap checks per list instead), and a tuple of 16 scalar
accumulators is not vectorised either. Here each term costs eight vector loads of M
and multiply-adds, and the independent accumulation chains cover the FMA latency (eight
chains measured 7% faster per training step than four at 784-128-64-10, batch 128, AVX-512).
Eight accumulators plus the broadcast value and a loaded row fit the 16 registers of
AVX2/SSE without spilling (16 lanes split in two on AVX2 needed 16 accumulators and spilled).

Arguments: ``out`` and ``M`` 2-D float32 arrays with unit column stride (C order),
``idx`` 1-D int32, ``vals`` 1-D float32, the rest integers. Nothing is bounds-checked:
callers guarantee 0 <= k0 <= k1 <= len(idx), 0 <= idx[k] < M.shape[0],
j + width <= M.shape[1] and the same for ``out``.

    muladd(a, b, c) -> float32
        a * b + c for float32 scalars with the target's rounding (see above).

    list_row_group(a, src, count, ci, cv, plane, pos, counted) -> int64
        appends to the row-group lists the features t < L (a 2-D C array, L its row length
        rounded down to a multiple of LIST_CHUNK = 16; the caller lists any rest) where any
        of the rows a[src[g]], g < count <= GROUP, is non-zero, in increasing t: ci[p] = t and
        cv[g * plane + p] = row g's value (+0 where it is zero, and for g >= count), p
        counting up from ``pos``; returns the p after the last one and adds the rows'
        non-zeros to counted[0]. ``a`` is float32 (the value as is; NaN counts as non-zero,
        -0.0 does not) or uint8 pixel codes k (the value k / 255 in float32, correctly
        rounded: the bits of ``BYTE_VALUES[k]``).
        Sixteen features per step on every target: a compare per row, a compress of the
        indices and of each row's values (``llvm.experimental.vector.compress``: vpcompressd
        with AVX-512, one table look-up and permutation per 8 lanes on AVX2, expanded by LLVM
        elsewhere), full-width stores and a popcount, no per-pixel branch. The stores write
        all 16 lanes, so ci and each plane of cv need 16 writable entries past the last one
        listed (``numba_sparse.csr_alloc`` allocates them); those are left undefined.

    list_group_rows(dense, s0, r0, rows, vals, plane, pos) -> int64
        the same across a (features x rows) float32 block: the rows r0 + i, i < 16, where any
        of dense[s0:s0 + GROUP, r0 + i] is non-zero go to rows[pos:], their GROUP values to
        vals[g * plane + pos:]; those 16 columns of dense are set to 0. The feature-group
        buckets of the weight gradient, 16 rows at a time (``numba_sparse._fill_buckets``).

    thread_count() -> intp
        ``numba.get_num_threads()`` inside compiled code, without making the caller
        uncacheable (Numba's own overload embeds a ctypes pointer; this calls the threading
        layer's exported symbol, as Numba's internal ``_iget_num_threads`` does).

    prefetch_row(a, row)
        asks the CPU to start loading every cache line of a[row] (a 2-D C array), so that
        rows visited in random order arrive while earlier rows are being processed.
        A hint only: no effect on results.

    prefetch_line(a, row)
        the same for the first cache line of a[row] only: enough, a step ahead, to have the
        row's page translated and its memory opened (see jit_loop's ``_prefetch_next``).
"""

import numpy as np
from llvmlite import ir
from numba import config, types
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic

from .target import TARGET

LANES = TARGET.lanes  # float32 lanes of one vector register of the target
FMA = TARGET.fma  # muladd is fused (one rounding) rather than a product and a sum
LIST_CHUNK = 16  # entries list_row_group examines per step (one 16-bit mask), on every target


def _check_types(out, idx, vals, M):
    f32_2d = all(isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout == "C"
                 for a in (out, M))
    if not (f32_2d and isinstance(idx, types.Array) and idx.dtype == types.int32 and idx.ndim == 1
            and isinstance(vals, types.Array) and vals.dtype == types.float32 and vals.ndim == 1):
        raise TypingError("gather_axpy needs C-contiguous 2-D float32 out and M, 1-D int32 idx and "
                          f"1-D float32 vals; got {out}, {idx}, {vals}, {M}")


def _loop_blocks(builder, name):
    """The blocks of a loop: ends the current block (``entry``) with a branch to ``head``,
    positions the builder there, and returns (entry, head, body, done)."""
    entry = builder.block
    head, body, done = (builder.append_basic_block(f"{name}.{part}") for part in ("head", "body", "done"))
    builder.branch(head)
    builder.position_at_end(head)
    return entry, head, body, done


def _muladd_ir(builder, a, b, c):
    """a * b + c (float32 scalars or vectors) with the target's rounding: ``llvm.fma`` where it
    is one instruction, else a rounded product and a rounded sum (no fast-math flags, so
    LLVM may not fuse them either)."""
    if not FMA:
        return builder.fadd(c, builder.fmul(a, b))
    suffix = f"v{a.type.count}f32" if isinstance(a.type, ir.VectorType) else "f32"
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(a.type, [a.type] * 3), f"llvm.fma.{suffix}")
    return builder.call(fma, [a, b, c])


@intrinsic
def _muladd(typingctx, a, b, c):
    if not all(t == types.float32 for t in (a, b, c)):
        raise TypingError(f"muladd takes three float32 scalars; got {a}, {b}, {c}")

    def codegen(context, builder, signature, args):
        return _muladd_ir(builder, *args)

    return types.float32(a, b, c), codegen


def _muladd_interpreted(a, b, c):
    # NUMBA_DISABLE_JIT: a rounded product and sum (the no-FMA bits; for debugging only)
    return np.float32(np.float32(a) * np.float32(b)) + np.float32(c)


def _codegen_helpers(context, builder, signature, args):
    """Helpers of a gather or scatter intrinsic's code: as_i64(i) (argument i as int64),
    row_stride(array) (elements between its rows), vec_ptr(array, element) (a pointer to the
    LANES-float vector there) and splat(float32 scalar) (it in every lane)."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    vec = ir.VectorType(ir.FloatType(), LANES)

    def as_i64(i):
        return context.cast(builder, args[i], signature.args[i], types.int64)

    def row_stride(a):  # strides are in bytes
        return builder.sdiv(cgutils.unpack_tuple(builder, a.strides)[0], ir.Constant(i64, 4))

    def vec_ptr(a, element):
        return builder.bitcast(builder.gep(a.data, [element]), vec.as_pointer())

    def splat(scalar):
        one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar, ir.Constant(i32, 0))
        return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                      ir.Constant(ir.VectorType(i32, LANES), [0] * LANES))

    return as_i64, row_stride, vec_ptr, splat


def _make_gather_axpy(n_vec, sgd_step=False, in_memory=0, masked=False, rows=None, dense=False):
    # masked (one vector, no SGD step): a ninth argument ``count`` < LANES, the columns summed;
    # M is loaded and out stored under a mask of the first ``count`` lanes (the others are 0).
    # rows (``gather_group``): out rows r .. r + rows - 1 share the list; an argument
    # ``plane`` after vals, row g's values at vals[g * plane + k].
    # dense (with rows, no SGD step; ``dense_rows``): no list: an integer ``step`` in idx's
    # place, vals any C-contiguous float32 array (its elements counted in order), the term k of
    # row g is vals[k * step + (r + g) * plane] * M[k].
    width = n_vec * LANES
    n_reg = n_vec - in_memory  # accumulators held in registers; the last in_memory on the stack
    group = rows is not None
    rows = rows or 1
    assert not (group and (masked or in_memory)) and not (dense and (sgd_step or not group))

    def typing(out, r, idx, vals, *rest):
        if group:
            plane, *rest = rest
            if not isinstance(plane, types.Integer):
                raise TypingError(f"{impl.__name__} takes an integer plane stride after vals; got {plane}")
        k0, k1, M, j, *lr = rest
        lr = tuple(lr)
        if dense:
            if not (isinstance(idx, types.Integer) and isinstance(vals, types.Array) and vals.layout == "C"):
                raise TypingError(f"{impl.__name__} takes an integer step in place of idx and C-contiguous "
                                  f"vals; got {idx}, {vals}")
            _check_types(out, types.int32[::1], vals.copy(ndim=1), M)
        else:
            _check_types(out, idx, vals, M)
        if masked:
            if len(lr) != 1 or not isinstance(lr[0], types.Integer):
                raise TypingError(f"{impl.__name__} takes an integer column count as its ninth argument; got {lr}")
        elif lr != ((types.float32,) if sgd_step else ()):
            wanted = "a float32 lr as its ninth argument" if sgd_step else "eight arguments"
            raise TypingError(f"{impl.__name__} takes {wanted}; got extra {lr}")
        sig = types.void(out, r, idx, vals, *((plane,) if group else ()), k0, k1, M, j, *lr)

        def codegen(context, builder, signature, args):
            plane_ = None
            if group:  # the plane stride out of the way: the rest as for one row
                plane_ = context.cast(builder, args[4], signature.args[4], types.int64)
                args = args[:4] + args[5:]
                signature = types.void(*signature.args[:4], *signature.args[5:])
            out_a, vals_a, m_a = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 3, 6))
            i64, vec = ir.IntType(64), ir.VectorType(ir.FloatType(), LANES)
            as_i64, row_stride, vec_ptr, splat = _codegen_helpers(context, builder, signature, args)
            if dense:  # vals[k * step + (r + g) * plane]: row g's values start at (r + g) * plane
                step_ = as_i64(2)
                vals_a.data = builder.gep(vals_a.data, [builder.mul(as_i64(1), plane_)])
            else:
                idx_a = context.make_array(signature.args[2])(context, builder, args[2])

            r_, k0_, k1_, j_ = as_i64(1), as_i64(4), as_i64(5), as_i64(7)
            m_stride, out_stride = row_stride(m_a), row_stride(out_a)
            # the accumulators past n_reg: a stack slot each, loaded and stored per term (an FMA
            # with a memory operand); LLVM left to itself spills them far worse (a 54-instruction loop)
            stack = cgutils.alloca_once(builder, ir.ArrayType(vec, in_memory)) if in_memory else None
            slots = [builder.gep(stack, [ir.Constant(ir.IntType(32), 0), ir.Constant(ir.IntType(32), q)])
                     for q in range(in_memory)]
            for slot in slots:
                builder.store(ir.Constant(vec, None), slot)
            if masked:  # lane i < count
                lanes = ir.Constant(ir.VectorType(i64, LANES), list(range(LANES)))
                count = builder.insert_element(ir.Constant(ir.VectorType(i64, LANES), ir.Undefined), as_i64(8),
                                               ir.Constant(ir.IntType(32), 0))
                count = builder.shuffle_vector(count, ir.Constant(ir.VectorType(i64, LANES), ir.Undefined),
                                               ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))
                mask = builder.icmp_unsigned("<", lanes, count)

            def load(ptr):
                if not masked:
                    return builder.load(ptr, align=4)
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(vec, [ptr.type, ir.IntType(32), mask.type, vec]),
                    f"llvm.masked.load.v{LANES}f32.p0")
                return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 4), mask, ir.Constant(vec, None)])

            def store(value, ptr):
                if not masked:
                    return builder.store(value, ptr, align=4)
                fn = cgutils.get_or_insert_function(
                    builder.module, ir.FunctionType(ir.VoidType(), [vec, ptr.type, ir.IntType(32), mask.type]),
                    f"llvm.masked.store.v{LANES}f32.p0")
                return builder.call(fn, [value, ptr, ir.Constant(ir.IntType(32), 4), mask])

            entry, head, body, done = _loop_blocks(builder, "gather_axpy")
            k = builder.phi(i64)
            k.add_incoming(k0_, entry)
            acc = []
            for _ in range(n_reg * rows):
                a = builder.phi(vec)
                a.add_incoming(ir.Constant(vec, None), entry)  # +0.0 in every lane
                acc.append(a)
            builder.cbranch(builder.icmp_signed("<", k, k1_), body, done)

            builder.position_at_end(body)
            if in_memory:  # an empty asm that may read and write the slots, so they are not promoted to registers
                builder.asm(ir.FunctionType(ir.VoidType(), [stack.type]), "", "r,~{memory}", [stack], True)
            if dense:
                t, kv = k, builder.mul(k, step_)
            else:
                t, kv = builder.sext(builder.load(builder.gep(idx_a.data, [k])), i64), k
            v_rows = [splat(builder.load(builder.gep(vals_a.data, [kv if g == 0 else builder.add(
                kv, builder.mul(plane_, ir.Constant(i64, g)))]))) for g in range(rows)]
            base = builder.add(builder.mul(t, m_stride), j_)
            new = [None] * (n_reg * rows)  # row g's q-th sum: acc[g * n_reg + q]
            for q in range(n_vec):
                w = load(vec_ptr(m_a, builder.add(base, ir.Constant(i64, q * LANES))))
                if q < n_reg:
                    for g, v_all in enumerate(v_rows):
                        new[g * n_reg + q] = _muladd_ir(builder, v_all, w, acc[g * n_reg + q])
                else:
                    slot = slots[q - n_reg]
                    builder.store(_muladd_ir(builder, v_rows[0], w, builder.load(slot)), slot)
            for q in range(n_reg * rows):
                acc[q].add_incoming(new[q], body)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
            builder.branch(head)

            builder.position_at_end(done)
            for g in range(rows):
                out_base = builder.add(builder.mul(builder.add(r_, ir.Constant(i64, g)), out_stride), j_)
                for q in range(n_vec):
                    ptr = vec_ptr(out_a, builder.add(out_base, ir.Constant(i64, q * LANES)))
                    result = acc[g * n_reg + q] if q < n_reg else builder.load(slots[q - n_reg])
                    if sgd_step:  # out - lr * sum: a product and a difference, each rounded (no fma)
                        result = builder.fsub(builder.load(ptr, align=4), builder.fmul(splat(args[8]), result))
                    store(result, ptr)
            return context.get_dummy_value()

        return sig, codegen

    # numba's @intrinsic reads the argument names: spell them out for every variant
    if dense:
        def impl(typingctx, out, r, step, vals, plane, k0, k1, M, j):
            return typing(out, r, step, vals, plane, k0, k1, M, j)
    elif group and sgd_step:
        def impl(typingctx, out, r, idx, vals, plane, k0, k1, M, j, lr):
            return typing(out, r, idx, vals, plane, k0, k1, M, j, lr)
    elif group:
        def impl(typingctx, out, r, idx, vals, plane, k0, k1, M, j):
            return typing(out, r, idx, vals, plane, k0, k1, M, j)
    elif sgd_step:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j, lr):
            return typing(out, r, idx, vals, k0, k1, M, j, lr)
    elif masked:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j, count):
            return typing(out, r, idx, vals, k0, k1, M, j, count)
    else:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j):
            return typing(out, r, idx, vals, k0, k1, M, j)
    impl.__name__ = impl.__qualname__ = (("dense" if dense else "gather_axpy") + f"{width}"
                                         + (f"x{rows}" if group else "")
                                         + ("_sgd" if sgd_step else "_masked" if masked else ""))
    return intrinsic(impl)


#: vector registers summed per call of gather_axpy_wide / _half / _one
WIDE, HALF, ONE = 8, 4, 1
#: columns per call of gather_axpy_wide / _half / _one
BLOCK_WIDE, BLOCK_HALF, BLOCK_ONE = WIDE * LANES, HALF * LANES, ONE * LANES
#: vectors summed per call of gather_axpy_long, the forward's widest block: 16 where vectors are
#: narrower than AVX-512's and FMA takes its row from memory (128 columns on AVX2, 64 on NEON),
#: so that a row's list is read once per 128 columns, not twice; those of its accumulators that
#: the registers cannot hold besides the broadcast value and a loaded row (2 of 16 on x86
#: without AVX-512) live in stack slots (``_make_gather_axpy``). Without FMA a product needs a
#: register of its own, and 16 accumulators spilled 3-5 more (sandybridge, nehalem): WIDE there.
#: The weight gradient keeps WIDE everywhere: its 64-column blocks of dz stay in L1 on AVX2
#: (12% faster than 128 at batch 8, 11% at 128; see numba_sparse._dw_range).
#: batch rows (forward) or input features (weight gradient) summed together over one list
#: (``gather_group``), and the vectors summed per row: GROUP x GROUP_VECTORS sums, the
#: broadcast values and a loaded row (and, without FMA, a product) within the registers.
#: Three measured best (standalone, MNIST batch 128, AVX-512: forward 123 -> 94 us and fused
#: weight gradient 107 -> 72 us; 2 rows or 4 rows of 64 columns gained less).
GROUP = 3
GROUP_VECTORS = min(WIDE, (TARGET.registers - GROUP - (1 if FMA else 2)) // GROUP)
BLOCK_GROUP = GROUP_VECTORS * LANES
#: rows of out summed together by ``dense_rows`` (HALF vectors each: BLOCK_HALF columns): the
#: small dense products of hidden layers (``jit_gemm``). Per row HALF sums and a broadcast
#: value, besides three loaded rows of M (LLVM's schedule): 5 rows within AVX-512's 32
#: registers (6 spilled and shuffled registers every term), 2 within 16.
DENSE_ROWS = (TARGET.registers - 3 - (0 if FMA else 1)) // (HALF + 1)
LONG = 2 * WIDE if LANES < 16 and FMA else WIDE
LONG_IN_MEMORY = max(0, LONG + 2 - TARGET.registers) if LONG > WIDE else 0
BLOCK_LONG = LONG * LANES


def _make_scatter_group(rows, sgd_step):
    # scatter_group{rows}(out, r, idx, vals, plane, k0, k1, M, j[, lr]): for k in [k0, k1),
    # with s = muladd(vals[(rows - 1) * plane + k], M[r + rows - 1], ... muladd(vals[k], M[r], +0))
    # over columns j:j + BLOCK_GROUP: out[idx[k]] = s, or with ``sgd_step`` out[idx[k]] -= lr * s.
    # The rows of M are held in registers; each k's row of out is written once. The gradient
    # of one feature from a batch of ``rows`` rows, whose list holds each feature once.
    n_vec = GROUP_VECTORS

    def typing(out, r, idx, vals, plane, k0, k1, M, j, *lr):
        _check_types(out, idx, vals, M)
        if tuple(lr) != ((types.float32,) if sgd_step else ()):
            raise TypingError(f"{impl.__name__}: lr (float32) {'needed' if sgd_step else 'not taken'}; got {lr}")
        sig = types.void(out, r, idx, vals, plane, k0, k1, M, j, *lr)

        def codegen(context, builder, signature, args):
            out_a, idx_a, vals_a, m_a = (context.make_array(signature.args[i])(context, builder, args[i])
                                         for i in (0, 2, 3, 7))
            i64, vec = ir.IntType(64), ir.VectorType(ir.FloatType(), LANES)
            as_i64, row_stride, vec_ptr, splat = _codegen_helpers(context, builder, signature, args)

            r_, plane_, k0_, k1_, j_ = as_i64(1), as_i64(4), as_i64(5), as_i64(6), as_i64(8)
            m_stride, out_stride = row_stride(m_a), row_stride(out_a)
            held = []  # held[g][q]: M[r + g, j + q * LANES:...]
            for g in range(rows):
                base = builder.add(builder.mul(builder.add(r_, ir.Constant(i64, g)), m_stride), j_)
                held.append([builder.load(vec_ptr(m_a, builder.add(base, ir.Constant(i64, q * LANES))), align=4)
                             for q in range(n_vec)])
            lr_all = splat(args[9]) if sgd_step else None
            entry, head, body, done = _loop_blocks(builder, "scatter_group")
            k = builder.phi(i64)
            k.add_incoming(k0_, entry)
            builder.cbranch(builder.icmp_signed("<", k, k1_), body, done)
            builder.position_at_end(body)
            t = builder.sext(builder.load(builder.gep(idx_a.data, [k])), i64)
            v_rows = [splat(builder.load(builder.gep(vals_a.data, [builder.add(
                k, builder.mul(plane_, ir.Constant(i64, g)))]))) for g in range(rows)]
            out_base = builder.add(builder.mul(t, out_stride), j_)
            for q in range(n_vec):
                ptr = vec_ptr(out_a, builder.add(out_base, ir.Constant(i64, q * LANES)))
                acc = ir.Constant(vec, None)  # +0.0 in every lane
                for g in range(rows):
                    acc = _muladd_ir(builder, v_rows[g], held[g][q], acc)
                if sgd_step:  # out - lr * sum: a product and a difference, each rounded (no fma)
                    acc = builder.fsub(builder.load(ptr, align=4), builder.fmul(lr_all, acc))
                builder.store(acc, ptr, align=4)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
            builder.branch(head)
            builder.position_at_end(done)
            return context.get_dummy_value()

        return sig, codegen

    if sgd_step:
        def impl(typingctx, out, r, idx, vals, plane, k0, k1, M, j, lr):
            return typing(out, r, idx, vals, plane, k0, k1, M, j, lr)
    else:
        def impl(typingctx, out, r, idx, vals, plane, k0, k1, M, j):
            return typing(out, r, idx, vals, plane, k0, k1, M, j)
    impl.__name__ = impl.__qualname__ = f"scatter_group{rows}" + ("_sgd" if sgd_step else "")
    return intrinsic(impl)


def _make_scatter_interpreted(rows, sgd_step):
    def scatter_group_py(out, r, idx, vals, plane, k0, k1, M, j, lr=None):
        for k in range(k0, k1):
            acc = np.zeros(BLOCK_GROUP, np.float32)
            for g in range(rows):
                acc = acc + vals[g * plane + k] * M[r + g, j:j + BLOCK_GROUP]
            row = out[idx[k], j:j + BLOCK_GROUP]
            out[idx[k], j:j + BLOCK_GROUP] = row - lr * acc if sgd_step else acc

    return scatter_group_py


def _make_interpreted(width, sgd_step=False):
    # NUMBA_DISABLE_JIT: intrinsics cannot run in the interpreter; the same sums in float32
    # NumPy (separately rounded products, so not the compiled bits; for debugging only).
    def gather_axpy_py(out, r, idx, vals, k0, k1, M, j, lr=None):
        acc = np.zeros(width, np.float32)
        for k in range(k0, k1):
            acc += vals[k] * M[idx[k], j:j + width]
        out[r, j:j + width] = out[r, j:j + width] - lr * acc if sgd_step else acc

    return gather_axpy_py


def _make_group_interpreted(sgd_step, rows=GROUP):
    one_row = _make_interpreted(BLOCK_GROUP, sgd_step)

    def gather_group_py(out, r, idx, vals, plane, k0, k1, M, j, lr=None):
        for g in range(rows):
            one_row(out, r + g, idx, vals[g * plane:], k0, k1, M, j, lr)

    return gather_group_py


def _make_dense_interpreted(rows):
    def dense_py(out, r, step, vals, plane, k0, k1, M, j):
        vals = vals.reshape(-1)
        for g in range(rows):
            acc = np.zeros(BLOCK_HALF, np.float32)
            for k in range(k0, k1):
                acc += vals[k * step + (r + g) * plane] * M[k, j:j + BLOCK_HALF]
            out[r + g, j:j + BLOCK_HALF] = acc

    return dense_py


def _gather_axpy_masked_interpreted(out, r, idx, vals, k0, k1, M, j, count):
    _make_interpreted(count)(out, r, idx, vals, k0, k1, M, j)


def _make_prefetch(whole_row):
    name = "prefetch_row" if whole_row else "prefetch_line"

    def typing(a, row):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" and isinstance(row, types.Integer)):
            raise TypingError(f"{name} needs a C-contiguous 2-D array and an integer row; got {a}, {row}")
        sig = types.void(a, row)

        def codegen(context, builder, signature, args):
            arr = context.make_array(signature.args[0])(context, builder, args[0])
            i64, i32 = ir.IntType(64), ir.IntType(32)
            row_ = context.cast(builder, args[1], signature.args[1], types.int64)
            row_bytes = cgutils.unpack_tuple(builder, arr.strides)[0]
            start = builder.gep(builder.bitcast(arr.data, cgutils.voidptr_t), [builder.mul(row_, row_bytes)])
            prefetch = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(ir.VoidType(), [cgutils.voidptr_t, i32, i32, i32]), "llvm.prefetch.p0")
            # read access (0), keep in all cache levels (3), data cache (1)
            hint = [ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
            if not whole_row:
                builder.call(prefetch, [start, *hint])
                return context.get_dummy_value()
            with cgutils.for_range_slice(builder, ir.Constant(i64, 0), row_bytes, ir.Constant(i64, 64)) as (offset, _):
                builder.call(prefetch, [builder.gep(start, [offset]), *hint])
            return context.get_dummy_value()

        return sig, codegen

    def impl(typingctx, a, row):
        return typing(a, row)
    impl.__name__ = impl.__qualname__ = f"_{name}"
    return intrinsic(impl)


_prefetch_row, _prefetch_line = _make_prefetch(True), _make_prefetch(False)


def _prefetch_row_interpreted(a, row):
    pass


# For each 8-bit mask, the lanes it keeps in increasing order, packed 4 bits per index (lane
# i in bits 4i..4i+3; the lanes past the count are 0): AVX2's left-pack permutation.
_LEFT_PACK = [sum(lane << (4 * i) for i, lane in enumerate(b for b in range(8) if mask >> b & 1))
              for mask in range(256)]


def _left_pack_halves(builder, stores, nonzero, p):
    """AVX2's replacement for the 16-lane compress of ``list_row_group``: each half of 8 lanes
    of every vector in ``stores`` ((vector, pointer) pairs, the vector's entries going to
    pointer[p], ...) is packed with one permutation looked up by its mask (``vpermd`` /
    ``vpermps``), stored whole, and p advanced by its popcount. Returns the new p. The same
    entries, in the same order, as the compress; the 8 stores past the count stay within the
    16 spare ones."""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    int8_t, float8_t = ir.VectorType(i32, 8), ir.VectorType(ir.FloatType(), 8)
    module = builder.module
    table = module.globals.get("fastnn_left_pack") or cgutils.global_constant(
        module, "fastnn_left_pack", ir.Constant(ir.ArrayType(i32, 256), _LEFT_PACK))

    def function(name, result, *arguments):
        return cgutils.get_or_insert_function(module, ir.FunctionType(result, arguments), name)

    permd = function("llvm.x86.avx2.permd", int8_t, int8_t, int8_t)
    permps = function("llvm.x86.avx2.permps", float8_t, float8_t, int8_t)
    popcount = function("llvm.ctpop.i8", i8, i8)
    shifts = ir.Constant(int8_t, [4 * i for i in range(8)])
    for half in range(2):
        lanes = ir.Constant(ir.VectorType(i32, 8), [8 * half + i for i in range(8)])
        mask = builder.bitcast(builder.shuffle_vector(nonzero, ir.Constant(nonzero.type, ir.Undefined), lanes), i8)
        packed = builder.load(builder.gep(table, [ir.Constant(i64, 0), builder.zext(mask, i64)]))
        splat = builder.shuffle_vector(builder.insert_element(ir.Constant(int8_t, ir.Undefined), packed,
                                                              ir.Constant(i32, 0)),
                                       ir.Constant(int8_t, ir.Undefined), ir.Constant(int8_t, [0] * 8))
        order = builder.and_(builder.lshr(splat, shifts), ir.Constant(int8_t, [7] * 8))
        for vector, pointer in stores:
            part = builder.shuffle_vector(vector, ir.Constant(vector.type, ir.Undefined), lanes)
            floats = isinstance(vector.type.element, ir.FloatType)
            builder.store(builder.call(permps if floats else permd, [part, order]),
                          builder.bitcast(builder.gep(pointer, [p]), (float8_t if floats else int8_t).as_pointer()),
                          align=4)
        p = builder.add(p, builder.zext(builder.call(popcount, [mask]), i64))
    return p


def _compress_stores(builder, stores, keep, p):
    """Stores the lanes of each 16-lane vector in ``stores`` ((vector, pointer) pairs) that
    ``keep`` marks, packed, at pointer[p:]; returns p plus their count. A vector compress
    (``llvm.experimental.vector.compress``: vpcompressd with AVX-512, expanded by LLVM
    elsewhere), or on AVX2 ``_left_pack_halves``. Writes all 16 lanes (16 spare entries)."""
    if TARGET.lanes < 16 and TARGET.avx2:
        return _left_pack_halves(builder, stores, keep, p)
    i16, i64 = ir.IntType(16), ir.IntType(64)
    for vector, pointer in stores:
        element = "f32" if vector.type.element == ir.FloatType() else "i32"
        compress = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector.type, [vector.type, keep.type, vector.type]),
            f"llvm.experimental.vector.compress.v{LIST_CHUNK}{element}")
        builder.store(builder.call(compress, [vector, keep, ir.Constant(vector.type, ir.Undefined)]),
                      builder.bitcast(builder.gep(pointer, [p]), vector.type.as_pointer()), align=4)
    popcount = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i16, [i16]), "llvm.ctpop.i16")
    return builder.add(p, builder.zext(builder.call(popcount, [builder.bitcast(keep, i16)]), i64))


@intrinsic
def _list_group_rows(typingctx, dense, s0, r0, rows, vals, plane, pos):
    if not (isinstance(dense, types.Array) and dense.dtype == types.float32 and dense.ndim == 2
            and dense.layout == "C" and isinstance(rows, types.Array) and rows.dtype == types.int32
            and rows.ndim == 1 and isinstance(vals, types.Array) and vals.dtype == types.float32 and vals.ndim == 1):
        raise TypingError("list_group_rows needs a C-contiguous 2-D float32 dense, 1-D int32 rows and 1-D "
                          f"float32 vals; got {dense}, {rows}, {vals}")
    sig = types.int64(dense, s0, r0, rows, vals, plane, pos)

    def codegen(context, builder, signature, args):
        dense_a, rows_a, vals_a = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 3, 4))
        i64, i32 = ir.IntType(64), ir.IntType(32)
        index_t, value_t = ir.VectorType(i32, LIST_CHUNK), ir.VectorType(ir.FloatType(), LIST_CHUNK)
        as_i64 = _codegen_helpers(context, builder, signature, args)[0]

        s0_, r0_, plane_, pos_ = as_i64(1), as_i64(2), as_i64(5), as_i64(6)
        row_length = cgutils.unpack_tuple(builder, dense_a.shape)[1]
        chunks, nonzero = [], None
        for q in range(GROUP):
            ptr = builder.bitcast(builder.gep(dense_a.data, [builder.add(
                builder.mul(builder.add(s0_, ir.Constant(i64, q)), row_length), r0_)]), value_t.as_pointer())
            chunk = builder.load(ptr, align=4)
            builder.store(ir.Constant(value_t, None), ptr, align=4)  # left all zero for the next batch
            chunks.append(chunk)
            # unordered !=: NaN is listed, as ``v != 0`` lists it
            listed = builder.fcmp_unordered("!=", chunk, ir.Constant(value_t, None))
            nonzero = listed if nonzero is None else builder.or_(nonzero, listed)
        first = builder.insert_element(ir.Constant(index_t, ir.Undefined), builder.trunc(r0_, i32), ir.Constant(i32, 0))
        lanes = builder.add(builder.shuffle_vector(first, ir.Constant(index_t, ir.Undefined),
                                                   ir.Constant(index_t, [0] * LIST_CHUNK)),
                            ir.Constant(index_t, list(range(LIST_CHUNK))))
        stores = [(lanes, rows_a.data)] + [(chunk, builder.gep(vals_a.data, [builder.mul(plane_, ir.Constant(i64, q))]))
                                           for q, chunk in enumerate(chunks)]
        return _compress_stores(builder, stores, nonzero, pos_)

    return sig, codegen


@intrinsic
def _list_row_group(typingctx, a, src, count, ci, cv, plane, pos, counted):
    if not (isinstance(a, types.Array) and a.dtype in (types.uint8, types.float32) and a.ndim == 2
            and a.layout == "C" and isinstance(src, types.Array) and src.dtype == types.int64
            and isinstance(ci, types.Array) and ci.dtype == types.int32 and ci.ndim == 1
            and isinstance(cv, types.Array) and cv.dtype == types.float32 and cv.ndim == 1
            and isinstance(counted, types.Array) and counted.dtype == types.int64):
        raise TypingError("list_row_group needs C-contiguous 2-D uint8 or float32 rows, int64 src, 1-D int32 ci, "
                          f"1-D float32 cv and int64 counted; got {a}, {src}, {ci}, {cv}, {counted}")
    floats = a.dtype == types.float32
    sig = types.int64(a, src, count, ci, cv, plane, pos, counted)

    def codegen(context, builder, signature, args):
        rows_a, src_a, ci_a, cv_a, counted_a = (context.make_array(signature.args[i])(context, builder, args[i])
                                                for i in (0, 1, 3, 4, 7))
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        index_t, value_t = ir.VectorType(i32, LIST_CHUNK), ir.VectorType(ir.FloatType(), LIST_CHUNK)
        chunk_t = value_t if floats else ir.VectorType(ir.IntType(8), LIST_CHUNK)

        def function(name, result, *arguments):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)

        as_i64 = _codegen_helpers(context, builder, signature, args)[0]

        popcount = function("llvm.ctpop.i16", i16, i16)
        count_, plane_, pos_ = as_i64(2), as_i64(5), as_i64(6)
        row_length = cgutils.unpack_tuple(builder, rows_a.shape)[1]
        starts, present = [], []
        for g in range(GROUP):  # a row past count: row src[0] read again, its chunks taken as 0
            here = builder.icmp_signed("<", ir.Constant(i64, g), count_)
            src_g = builder.load(builder.gep(src_a.data, [builder.select(here, ir.Constant(i64, g),
                                                                         ir.Constant(i64, 0))]))
            starts.append(builder.gep(rows_a.data, [builder.mul(src_g, row_length)]))
            present.append(here)
        lane = ir.Constant(index_t, list(range(LIST_CHUNK)))
        scale = ir.Constant(value_t, [255.0] * LIST_CHUNK)
        zeros = ir.Constant(chunk_t, None)
        entry, head, body, done = _loop_blocks(builder, "list_row_group")
        t, p, found = builder.phi(i64), builder.phi(i64), builder.phi(i64)
        t.add_incoming(ir.Constant(i64, 0), entry)
        p.add_incoming(pos_, entry)
        found.add_incoming(ir.Constant(i64, 0), entry)
        last = builder.sub(row_length, ir.Constant(i64, LIST_CHUNK))  # whole chunks only: never past the row
        builder.cbranch(builder.icmp_signed("<=", t, last), body, done)

        builder.position_at_end(body)
        values, union, each = [], None, ir.Constant(i64, 0)
        for start, here in zip(starts, present):
            chunk = builder.load(builder.bitcast(builder.gep(start, [t]), chunk_t.as_pointer()), align=1)
            chunk = builder.select(here, chunk, zeros)
            # float rows: unordered !=, so NaN is listed (as ``v != 0`` lists it)
            nonzero = (builder.fcmp_unordered("!=", chunk, zeros) if floats
                       else builder.icmp_unsigned("!=", chunk, zeros))
            union = nonzero if union is None else builder.or_(union, nonzero)
            each = builder.add(each, builder.zext(builder.call(popcount, [builder.bitcast(nonzero, i16)]), i64))
            # codes: k / 255, rounded once, is BYTE_VALUES[k]; a listed float's 0s are +0
            values.append(chunk if floats else builder.fdiv(builder.uitofp(chunk, value_t), scale))
        first = builder.insert_element(ir.Constant(index_t, ir.Undefined), builder.trunc(t, i32), ir.Constant(i32, 0))
        features = builder.add(builder.shuffle_vector(first, ir.Constant(index_t, ir.Undefined),
                                                      ir.Constant(index_t, [0] * LIST_CHUNK)), lane)
        stores = [(features, ci_a.data)]
        for g, value in enumerate(values):
            if floats:  # -0.0 beside a listed value of another row: stored as +0
                value = builder.select(builder.fcmp_ordered("==", value, ir.Constant(value_t, None)),
                                       ir.Constant(value_t, None), value)
            stores.append((value, builder.gep(cv_a.data, [builder.mul(plane_, ir.Constant(i64, g))])))
        after = _compress_stores(builder, stores, union, p)
        t.add_incoming(builder.add(t, ir.Constant(i64, LIST_CHUNK)), body)
        p.add_incoming(after, body)
        found.add_incoming(builder.add(found, each), body)
        builder.branch(head)

        builder.position_at_end(done)
        counted_ptr = counted_a.data
        builder.store(builder.add(builder.load(counted_ptr), found), counted_ptr)
        return p

    return sig, codegen


def _list_row_group_interpreted(a, src, count, ci, cv, plane, pos, counted):
    whole = a.shape[1] - a.shape[1] % LIST_CHUNK
    block = np.zeros((GROUP, whole), np.float32)
    block[:count] = a[src[:count], :whole]
    if a.dtype == np.uint8:
        block /= np.float32(255)
    t = np.flatnonzero((block != 0).any(0))
    ci[pos:pos + len(t)] = t
    for g in range(GROUP):
        v = block[g, t]
        cv[g * plane + pos:g * plane + pos + len(t)] = np.where(v != 0, v, np.float32(0))
    counted[0] += np.count_nonzero(block != 0)
    return pos + len(t)


def _list_group_rows_interpreted(dense, s0, r0, rows, vals, plane, pos):
    block = dense[s0:s0 + GROUP, r0:r0 + LIST_CHUNK]
    r = np.flatnonzero((block != 0).any(0))
    rows[pos:pos + len(r)] = r0 + r
    for q in range(GROUP):
        vals[q * plane + pos:q * plane + pos + len(r)] = block[q, r]
    block[...] = 0
    return pos + len(r)


if config.DISABLE_JIT:
    def thread_count():
        import numba

        return numba.get_num_threads()

    muladd = _muladd_interpreted
    gather_axpy_wide, gather_axpy_half, gather_axpy_one = (_make_interpreted(w)
                                                          for w in (BLOCK_WIDE, BLOCK_HALF, BLOCK_ONE))
    gather_axpy_wide_sgd, gather_axpy_half_sgd, gather_axpy_one_sgd = (_make_interpreted(w, True)
                                                                      for w in (BLOCK_WIDE, BLOCK_HALF, BLOCK_ONE))
    gather_axpy_long = _make_interpreted(BLOCK_LONG)
    gather_axpy_masked = _gather_axpy_masked_interpreted
    gather_group, gather_group_sgd = _make_group_interpreted(False), _make_group_interpreted(True)
    gather_pair = _make_group_interpreted(False, rows=2)
    dense_rows, dense_row = _make_dense_interpreted(DENSE_ROWS), _make_dense_interpreted(1)
    scatter_groups = tuple(_make_scatter_interpreted(rows, False) for rows in range(1, GROUP + 1))
    scatter_groups_sgd = tuple(_make_scatter_interpreted(rows, True) for rows in range(1, GROUP + 1))
    prefetch_row = prefetch_line = _prefetch_row_interpreted
    list_group_rows = _list_group_rows_interpreted
    list_row_group = _list_row_group_interpreted
else:
    try:  # Numba internals: if a release renames them, compiled code assumes several threads
        from numba.np.ufunc.parallel import _iget_num_threads, _launch_threads
    except ImportError:
        from numba import njit

        @njit(cache=True)
        def thread_count():
            return 2
    else:
        _launch_threads()  # registers the symbol that cached callers link against
        thread_count = _iget_num_threads
    prefetch_row, prefetch_line = _prefetch_row, _prefetch_line
    list_group_rows = _list_group_rows
    list_row_group = _list_row_group
    muladd = _muladd
    gather_axpy_wide, gather_axpy_half, gather_axpy_one = (_make_gather_axpy(n) for n in (WIDE, HALF, ONE))
    gather_axpy_wide_sgd, gather_axpy_half_sgd, gather_axpy_one_sgd = (_make_gather_axpy(n, sgd_step=True)
                                                                      for n in (WIDE, HALF, ONE))
    gather_axpy_long = gather_axpy_wide if LONG == WIDE else _make_gather_axpy(LONG, in_memory=LONG_IN_MEMORY)
    gather_axpy_masked = _make_gather_axpy(ONE, masked=True)
    gather_group, gather_group_sgd = (_make_gather_axpy(GROUP_VECTORS, sgd_step=sgd, rows=GROUP)
                                      for sgd in (False, True))
    gather_pair = _make_gather_axpy(GROUP_VECTORS, rows=2)
    dense_rows, dense_row = (_make_gather_axpy(HALF, rows=rows, dense=True) for rows in (DENSE_ROWS, 1))
    scatter_groups = tuple(_make_scatter_group(rows, False) for rows in range(1, GROUP + 1))
    scatter_groups_sgd = tuple(_make_scatter_group(rows, True) for rows in range(1, GROUP + 1))
