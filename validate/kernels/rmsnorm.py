"""RMSNorm: y = x / sqrt(mean(x^2) + eps) * weight, row by row.

x: [T, H] (or any [..., H], flattened to rows), weight: [H]. The sum of squares and the
scaling run in fp32; y comes back in x's dtype, as Llama's RMSNorm does.

One program normalises one row. A row of at most MAX_FUSED_H elements is held in registers
in one block (read once); a longer row is read twice, once to sum the squares and once to
scale. FLOP and byte counts are at the bottom (`flops`, `bytes_moved`).

Benchmark on a CUDA GPU: `python -m validate.kernels.rmsnorm`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import (
    check_dim,
    check_dtype,
    check_inner_contiguous,
    check_launchable,
    check_out,
    interpreting,
)

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
MAX_FUSED_H = 16384  # widest row kept in registers on a GPU (Llama-405B has H = 16384)
INTERPRETER_BLOCK_H = 64  # under the interpreter: small blocks, so the two-pass path is tested


@triton.jit
def _rmsnorm_kernel(
    x_ptr, w_ptr, y_ptr,
    H, stride_x, stride_y, eps,
    BLOCK_H: tl.constexpr,
    ONE_BLOCK: tl.constexpr,  # BLOCK_H >= H: the whole row fits in one block
):
    row = tl.program_id(0).to(tl.int64)  # T * H may pass 2^31
    x_row = x_ptr + row * stride_x
    y_row = y_ptr + row * stride_y
    cols = tl.arange(0, BLOCK_H)

    if ONE_BLOCK:
        ok = cols < H
        x = tl.load(x_row + cols, mask=ok, other=0.0).to(tl.float32)
        rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / H + eps)
        w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        tl.store(y_row + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=ok)
    else:
        # Pass 1: sum of squares, accumulated per lane and reduced once at the end.
        sq = tl.zeros((BLOCK_H,), dtype=tl.float32)
        for h0 in range(0, H, BLOCK_H):
            x = tl.load(x_row + h0 + cols, mask=h0 + cols < H, other=0.0).to(tl.float32)
            sq += x * x
        rstd = 1.0 / tl.sqrt(tl.sum(sq, axis=0) / H + eps)
        # Pass 2: scale; the row was just read, so it mostly comes from cache.
        for h0 in range(0, H, BLOCK_H):
            ok = h0 + cols < H
            x = tl.load(x_row + h0 + cols, mask=ok, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + h0 + cols, mask=ok, other=0.0).to(tl.float32)
            tl.store(y_row + h0 + cols, (x * rstd * w).to(y_ptr.dtype.element_ty), mask=ok)


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """RMS-normalise the last axis of x and scale by weight.

    x: [..., H] bf16/fp16/fp32 with unit stride on the last axis; weight: [H], same dtype.
    eps: added to the mean square, > 0.
    out: optional contiguous buffer shaped and typed like x to write y into.
    Returns y with x's shape and dtype.
    """
    if x.dim() < 1:
        raise ValueError(f"x must have at least one axis [..., H], got shape {tuple(x.shape)}")
    check_dtype("x", x, DTYPES)
    if weight.dtype != x.dtype:
        raise ValueError(f"weight.dtype={weight.dtype} does not match x.dtype={x.dtype}")
    H = x.shape[-1]
    if weight.dim() != 1:
        raise ValueError(f"weight must be 1-D [H], got shape {tuple(weight.shape)}")
    check_dim("weight", weight, 0, H, "x.shape[-1] (H)")
    if not eps > 0:
        raise ValueError(f"eps={eps} must be > 0")
    check_inner_contiguous("x", x)
    device = check_launchable({"x": x, "weight": weight})
    if out is not None:
        check_out("out", out, x.shape, x.dtype, device)
        if not out.is_contiguous():
            raise ValueError(f"out must be contiguous, got strides {out.stride()}")

    result = out if out is not None else torch.empty(x.shape, dtype=x.dtype, device=device)
    if x.numel() == 0:
        return result
    x2 = x.reshape(-1, H)  # a view when the leading axes allow it, else a copy
    y = result.view(-1, H)
    weight = weight.contiguous()
    T = x2.shape[0]

    block_h = min(triton.next_power_of_2(H), INTERPRETER_BLOCK_H if interpreting() else MAX_FUSED_H)
    # Enough threads that each holds a handful of elements, at most 16 warps.
    num_warps = min(max(block_h // 512, 1), 16)
    _rmsnorm_kernel[(T,)](
        x2, weight, y, H, x2.stride(0), y.stride(0), float(eps),
        BLOCK_H=block_h, ONE_BLOCK=block_h >= H, num_warps=num_warps,
    )
    return result


# --- cost formulas ---------------------------------------------------------------------------


def flops(tokens: int, hidden: int) -> int:
    """Per element: square, add to the sum, scale by rstd, scale by weight (the per-row
    sqrt and divide are negligible)."""
    return 4 * tokens * hidden


def bytes_moved(tokens: int, hidden: int, elem_bytes: int = 2) -> int:
    """Read x, write y, read weight once."""
    return (2 * tokens * hidden + hidden) * elem_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("rmsnorm: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    print(f"{'T':>6} {'H':>6} {'us':>8} {'GB/s':>8}")
    for t, h in [(1, 8192), (256, 4096), (4096, 8192), (16384, 8192), (4096, 16384)]:
        x = torch.randn(t, h, device=device, dtype=torch.bfloat16)
        w = torch.randn(h, device=device, dtype=torch.bfloat16)
        ms = triton.testing.do_bench(lambda x=x, w=w: rms_norm(x, w))
        print(f"{t:6d} {h:6d} {ms * 1e3:8.1f} {bytes_moved(t, h) / ms * 1e-6:8.1f}")


if __name__ == "__main__":
    _bench()
