"""Numba intrinsics for the zero-skipping kernels: a register-blocked gather-AXPY, a
vector compress that lists a row's non-zero pixels, cache prefetches and the thread count.
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
The ``_sgd`` variants take a float32 ninth argument ``lr`` and apply ``out[r, j:] -= lr * sum`` instead (the rounding of ``w - lr * g`` with g the stored sum: a
plain SGD step whose gradient is never stored).

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

    list_nonzero(a, src, ci, cv, pos) -> int64
        appends the non-zero entries of a[src, :L] (a 2-D C array, L its row length rounded
        down to a multiple of LIST_CHUNK = 16; the caller lists any rest) to the row lists: for each t
        with a[src, t] != 0, in increasing t, ci[p] = t and cv[p] = its value, p counting up
        from ``pos``; returns the p after the last one. ``a`` is float32 (the value as is;
        NaN counts as non-zero) or uint8 pixel codes k (the value k / 255 in float32,
        correctly rounded: the bits of ``BYTE_VALUES[k]``).
        Sixteen entries per step on every target: one compare, a compress of the indices and
        of the values (``llvm.experimental.vector.compress``: vpcompressd with AVX-512,
        expanded by LLVM elsewhere), two full-width stores and a popcount, no per-pixel branch.
        The stores write all 16 lanes, so ci and cv need 16 writable entries past the last
        one listed (``numba_sparse.csr_alloc`` allocates them); those are left undefined.

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
LIST_CHUNK = 16  # entries list_nonzero examines per step (one 16-bit mask), on every target


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


def _make_gather_axpy(n_vec, sgd_step=False, in_memory=0, masked=False):
    # masked (one vector, no SGD step): a ninth argument ``count`` < LANES, the columns summed;
    # M is loaded and out stored under a mask of the first ``count`` lanes (the others are 0)
    width = n_vec * LANES
    n_reg = n_vec - in_memory  # accumulators held in registers; the last in_memory on the stack

    def typing(out, r, idx, vals, k0, k1, M, j, *lr):
        _check_types(out, idx, vals, M)
        if masked:
            if len(lr) != 1 or not isinstance(lr[0], types.Integer):
                raise TypingError(f"{impl.__name__} takes an integer column count as its ninth argument; got {lr}")
        elif lr != ((types.float32,) if sgd_step else ()):
            wanted = "a float32 lr as its ninth argument" if sgd_step else "eight arguments"
            raise TypingError(f"{impl.__name__} takes {wanted}; got extra {lr}")
        sig = types.void(out, r, idx, vals, k0, k1, M, j, *lr)

        def codegen(context, builder, signature, args):
            out_a, idx_a, vals_a, m_a = (context.make_array(signature.args[i])(context, builder, args[i])
                                         for i in (0, 2, 3, 6))
            i64 = ir.IntType(64)
            vec = ir.VectorType(ir.FloatType(), LANES)

            def as_i64(i):
                return context.cast(builder, args[i], signature.args[i], types.int64)

            def row_stride(a):  # elements between rows (strides are in bytes)
                return builder.sdiv(cgutils.unpack_tuple(builder, a.strides)[0], ir.Constant(i64, 4))

            def vec_ptr(a, element):
                return builder.bitcast(builder.gep(a.data, [element]), vec.as_pointer())

            def splat(scalar):  # the float32 in every lane
                one = builder.insert_element(ir.Constant(vec, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
                return builder.shuffle_vector(one, ir.Constant(vec, ir.Undefined),
                                              ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

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
            for _ in range(n_reg):
                a = builder.phi(vec)
                a.add_incoming(ir.Constant(vec, None), entry)  # +0.0 in every lane
                acc.append(a)
            builder.cbranch(builder.icmp_signed("<", k, k1_), body, done)

            builder.position_at_end(body)
            if in_memory:  # an empty asm that may read and write the slots, so they are not promoted to registers
                builder.asm(ir.FunctionType(ir.VoidType(), [stack.type]), "", "r,~{memory}", [stack], True)
            t = builder.sext(builder.load(builder.gep(idx_a.data, [k])), i64)
            v_all = splat(builder.load(builder.gep(vals_a.data, [k])))
            base = builder.add(builder.mul(t, m_stride), j_)
            new = []
            for q in range(n_vec):
                w = load(vec_ptr(m_a, builder.add(base, ir.Constant(i64, q * LANES))))
                if q < n_reg:
                    new.append(_muladd_ir(builder, v_all, w, acc[q]))
                else:
                    slot = slots[q - n_reg]
                    builder.store(_muladd_ir(builder, v_all, w, builder.load(slot)), slot)
            for q in range(n_reg):
                acc[q].add_incoming(new[q], body)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
            builder.branch(head)

            builder.position_at_end(done)
            out_base = builder.add(builder.mul(r_, out_stride), j_)
            for q in range(n_vec):
                ptr = vec_ptr(out_a, builder.add(out_base, ir.Constant(i64, q * LANES)))
                result = acc[q] if q < n_reg else builder.load(slots[q - n_reg])
                if sgd_step:  # out - lr * sum: a product and a difference, each rounded (no fma)
                    result = builder.fsub(builder.load(ptr, align=4), builder.fmul(splat(args[8]), result))
                store(result, ptr)
            return context.get_dummy_value()

        return sig, codegen

    # numba's @intrinsic reads the argument names: spell them out for every variant
    if sgd_step:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j, lr):
            return typing(out, r, idx, vals, k0, k1, M, j, lr)
    elif masked:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j, count):
            return typing(out, r, idx, vals, k0, k1, M, j, count)
    else:
        def impl(typingctx, out, r, idx, vals, k0, k1, M, j):
            return typing(out, r, idx, vals, k0, k1, M, j)
    impl.__name__ = impl.__qualname__ = f"gather_axpy{width}" + ("_sgd" if sgd_step else "_masked" if masked else "")
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
LONG = 2 * WIDE if LANES < 16 and FMA else WIDE
LONG_IN_MEMORY = max(0, LONG + 2 - TARGET.registers) if LONG > WIDE else 0
BLOCK_LONG = LONG * LANES


def _make_interpreted(width, sgd_step=False):
    # NUMBA_DISABLE_JIT: intrinsics cannot run in the interpreter; the same sums in float32
    # NumPy (separately rounded products, so not the compiled bits; for debugging only).
    def gather_axpy_py(out, r, idx, vals, k0, k1, M, j, lr=None):
        acc = np.zeros(width, np.float32)
        for k in range(k0, k1):
            acc += vals[k] * M[idx[k], j:j + width]
        out[r, j:j + width] = out[r, j:j + width] - lr * acc if sgd_step else acc

    return gather_axpy_py


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


@intrinsic
def _list_nonzero(typingctx, a, src, ci, cv, pos):
    if not (isinstance(a, types.Array) and a.dtype in (types.uint8, types.float32) and a.ndim == 2
            and a.layout == "C" and isinstance(ci, types.Array) and ci.dtype == types.int32 and ci.ndim == 1
            and isinstance(cv, types.Array) and cv.dtype == types.float32 and cv.ndim == 1):
        raise TypingError("list_nonzero needs C-contiguous 2-D uint8 or float32 rows, 1-D int32 ci and 1-D "
                          f"float32 cv; got {a}, {ci}, {cv}")
    floats = a.dtype == types.float32
    sig = types.int64(a, src, ci, cv, pos)

    def codegen(context, builder, signature, args):
        rows_a, ci_a, cv_a = (context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 2, 3))
        i64, i32, i16 = ir.IntType(64), ir.IntType(32), ir.IntType(16)
        index_t, value_t = ir.VectorType(i32, LIST_CHUNK), ir.VectorType(ir.FloatType(), LIST_CHUNK)
        chunk_t = value_t if floats else ir.VectorType(ir.IntType(8), LIST_CHUNK)
        mask_t = ir.VectorType(ir.IntType(1), LIST_CHUNK)

        def function(name, result, *arguments):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(result, arguments), name)

        compress_index = function("llvm.experimental.vector.compress.v16i32", index_t, index_t, mask_t, index_t)
        compress_value = function("llvm.experimental.vector.compress.v16f32", value_t, value_t, mask_t, value_t)
        popcount = function("llvm.ctpop.i16", i16, i16)
        src_ = context.cast(builder, args[1], signature.args[1], types.int64)
        pos_ = context.cast(builder, args[4], signature.args[4], types.int64)
        row_length = cgutils.unpack_tuple(builder, rows_a.shape)[1]
        row = builder.gep(rows_a.data, [builder.mul(src_, row_length)])
        lane = ir.Constant(index_t, list(range(LIST_CHUNK)))
        scale = ir.Constant(value_t, [255.0] * LIST_CHUNK)
        zeros = ir.Constant(chunk_t, None)
        entry, head, body, done = _loop_blocks(builder, "list_nonzero")
        t, p = builder.phi(i64), builder.phi(i64)
        t.add_incoming(ir.Constant(i64, 0), entry)
        p.add_incoming(pos_, entry)
        last = builder.sub(row_length, ir.Constant(i64, LIST_CHUNK))  # whole chunks only: never past the row
        builder.cbranch(builder.icmp_signed("<=", t, last), body, done)

        builder.position_at_end(body)
        chunk = builder.load(builder.bitcast(builder.gep(row, [t]), chunk_t.as_pointer()), align=1)
        # float rows: unordered !=, so NaN is listed (as ``v != 0`` lists it)
        nonzero = builder.fcmp_unordered("!=", chunk, zeros) if floats else builder.icmp_unsigned("!=", chunk, zeros)
        first = builder.insert_element(ir.Constant(index_t, ir.Undefined), builder.trunc(t, i32), ir.Constant(i32, 0))
        features = builder.add(builder.shuffle_vector(first, ir.Constant(index_t, ir.Undefined),
                                                      ir.Constant(index_t, [0] * LIST_CHUNK)), lane)
        # codes: k / 255, rounded once, is BYTE_VALUES[k]
        values = chunk if floats else builder.fdiv(builder.uitofp(chunk, value_t), scale)
        if TARGET.lanes < 16 and TARGET.avx2:
            after = _left_pack_halves(builder, features, values, nonzero, ci_a.data, cv_a.data, p)
        else:
            undefined = ir.Constant(index_t, ir.Undefined)
            builder.store(builder.call(compress_index, [features, nonzero, undefined]),
                          builder.bitcast(builder.gep(ci_a.data, [p]), index_t.as_pointer()), align=4)
            builder.store(builder.call(compress_value, [values, nonzero, ir.Constant(value_t, ir.Undefined)]),
                          builder.bitcast(builder.gep(cv_a.data, [p]), value_t.as_pointer()), align=4)
            after = builder.add(p, builder.zext(builder.call(popcount, [builder.bitcast(nonzero, i16)]), i64))
        t.add_incoming(builder.add(t, ir.Constant(i64, LIST_CHUNK)), body)
        p.add_incoming(after, body)
        builder.branch(head)

        builder.position_at_end(done)
        return p

    return sig, codegen


# For each 8-bit mask, the lanes it keeps in increasing order, packed 4 bits per index (lane
# i in bits 4i..4i+3; the lanes past the count are 0): AVX2's left-pack permutation.
_LEFT_PACK = [sum(lane << (4 * i) for i, lane in enumerate(b for b in range(8) if mask >> b & 1))
              for mask in range(256)]


def _left_pack_halves(builder, features, values, nonzero, ci, cv, p):
    """AVX2's replacement for the 16-lane compress of ``list_nonzero``: each half of 8 lanes is
    packed with one permutation looked up by its mask (``vpermd`` / ``vpermps``), stored whole
    at ci/cv[p], and p advanced by its popcount. Returns the new p. The same entries, in the
    same order, as the compress; the 8 stores past the count stay within the 16 spare ones."""
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
        part_f = builder.shuffle_vector(features, ir.Constant(features.type, ir.Undefined), lanes)
        part_v = builder.shuffle_vector(values, ir.Constant(values.type, ir.Undefined), lanes)
        builder.store(builder.call(permd, [part_f, order]),
                      builder.bitcast(builder.gep(ci, [p]), int8_t.as_pointer()), align=4)
        builder.store(builder.call(permps, [part_v, order]),
                      builder.bitcast(builder.gep(cv, [p]), float8_t.as_pointer()), align=4)
        p = builder.add(p, builder.zext(builder.call(popcount, [mask]), i64))
    return p


def _list_nonzero_interpreted(a, src, ci, cv, pos):
    whole = a.shape[1] - a.shape[1] % LIST_CHUNK
    t = np.flatnonzero(a[src, :whole])
    ci[pos:pos + len(t)] = t
    v = a[src, t]
    cv[pos:pos + len(t)] = v if v.dtype == np.float32 else v.astype(np.float32) / np.float32(255)
    return pos + len(t)


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
    prefetch_row = prefetch_line = _prefetch_row_interpreted
    list_nonzero = _list_nonzero_interpreted
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
    list_nonzero = _list_nonzero
    muladd = _muladd
    gather_axpy_wide, gather_axpy_half, gather_axpy_one = (_make_gather_axpy(n) for n in (WIDE, HALF, ONE))
    gather_axpy_wide_sgd, gather_axpy_half_sgd, gather_axpy_one_sgd = (_make_gather_axpy(n, sgd_step=True)
                                                                      for n in (WIDE, HALF, ONE))
    gather_axpy_long = gather_axpy_wide if LONG == WIDE else _make_gather_axpy(LONG, in_memory=LONG_IN_MEMORY)
    gather_axpy_masked = _make_gather_axpy(ONE, masked=True)
