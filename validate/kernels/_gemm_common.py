"""Pieces shared by the GEMM kernels (`gemm.py`, `gemm_splitk.py`, `gemm_persistent.py`).

`dot_k_range` accumulates A[rows, k_lo:k_hi] @ B[k_lo:k_hi, cols] in fp32 through pointer
tiles (out-of-range rows, columns and the K tail load as 0, which adds nothing);
`scale_product` is the fp8 scales' product: a float kernel argument times the scales read from
device memory.
"""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def dot_k_range(a_ptrs, b_ptrs, rows, cols, ks, M, N, k_lo, k_hi, stride_ak, stride_bk,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(k_lo, k_hi, BLOCK_K):
        k_ok = (k0 + ks) < k_hi
        a = tl.load(a_ptrs, mask=(rows[:, None] < M) & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & (cols[None, :] < N), other=0.0)
        if UPCAST:  # the interpreter's tl.dot cannot multiply bf16
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


@triton.jit
def scale_product(scale, a_scale_ptr, b_scale_ptr, A_SCALE_PTR: tl.constexpr,
                  B_SCALE_PTR: tl.constexpr):
    mult = scale
    if A_SCALE_PTR:
        mult = mult * tl.load(a_scale_ptr)
    if B_SCALE_PTR:
        mult = mult * tl.load(b_scale_ptr)
    return mult
