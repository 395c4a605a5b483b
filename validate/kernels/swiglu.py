"""SwiGLU activation: out = silu(gate) * up, with silu(g) = g * sigmoid(g).

Input x: [T, 2I], the output of the fused gate/up projection, gate in the first I columns
and up in the last I (the layout vLLM's SiluAndMul uses). Output: [T, I] in x's dtype; the
math runs in fp32. (In code I is `n_cols`.)

The grid is (T, cdiv(I, BLOCK_I)): each program handles one block of one row. FLOP and byte
counts are at the bottom (`flops`, `bytes_moved`).

Benchmark on a CUDA GPU: `python -m validate.kernels.swiglu`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import (
    check_dtype,
    check_inner_contiguous,
    check_launchable,
    check_ndim,
    check_out,
    interpreting,
)

DTYPES = (torch.bfloat16, torch.float16, torch.float32)


@triton.jit
def _swiglu_kernel(
    x_ptr, out_ptr, n_cols, stride_x, stride_out,
    BLOCK_I: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)  # T * 2I may pass 2^31
    cols = tl.program_id(1) * BLOCK_I + tl.arange(0, BLOCK_I)
    ok = cols < n_cols
    gate = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * stride_x + n_cols + cols, mask=ok, other=0.0).to(tl.float32)
    out = gate * tl.sigmoid(gate) * up
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=ok)


def silu_and_mul(x: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """silu(x[:, :I]) * x[:, I:].

    x: [T, 2I] bf16/fp16/fp32 with a contiguous last axis.
    out: optional [T, I] buffer of x's dtype to write into.
    Returns [T, I] in x's dtype.
    """
    check_ndim("x", x, 2, "[T, 2I]")
    check_dtype("x", x, DTYPES)
    if x.shape[1] % 2:
        raise ValueError(f"x.shape[1]={x.shape[1]} must be even: gate and up halves of [T, 2I]")
    check_inner_contiguous("x", x)
    device = check_launchable({"x": x})

    T, n_cols = x.shape[0], x.shape[1] // 2
    if out is None:
        out = torch.empty((T, n_cols), dtype=x.dtype, device=device)
    check_out("out", out, (T, n_cols), x.dtype, device)
    if T == 0 or n_cols == 0:
        return out
    block_i = 64 if interpreting() else min(triton.next_power_of_2(n_cols), 1024)
    grid = (T, triton.cdiv(n_cols, block_i))
    _swiglu_kernel[grid](x, out, n_cols, x.stride(0), out.stride(0), BLOCK_I=block_i,
                         num_warps=4)
    return out


# --- cost formulas ---------------------------------------------------------------------------


def flops(tokens: int, intermediate: int) -> int:
    """Per output element: sigmoid (exp, add, divide) and two multiplies."""
    return 5 * tokens * intermediate


def bytes_moved(tokens: int, intermediate: int, elem_bytes: int = 2) -> int:
    """Read gate and up, write the product."""
    return 3 * tokens * intermediate * elem_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("swiglu: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    print(f"{'T':>6} {'I':>6} {'us':>8} {'GB/s':>8}")
    for t, i in [(1, 28672), (256, 14336), (4096, 14336), (8192, 28672)]:
        x = torch.randn(t, 2 * i, device=device, dtype=torch.bfloat16)
        ms = triton.testing.do_bench(lambda x=x: silu_and_mul(x))
        print(f"{t:6d} {i:6d} {ms * 1e3:8.1f} {bytes_moved(t, i) / ms * 1e-6:8.1f}")


if __name__ == "__main__":
    _bench()
