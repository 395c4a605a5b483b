"""Fused mixture-of-experts layer: a grouped GEMM over the tokens routed to each expert.

    out[t] = sum_j w[t, j] * down_e( silu(gate_e(x[t])) * up_e(x[t]) ),  e = ids[t, j]

Inputs: x [T, H]; w1 [E, 2I, H] (gate rows first, then up, as vLLM stores `w13`); w2 [E, H, I];
topk_ids [T, k] (int), topk_weights [T, k]. Weights bf16 / fp16 / fp32, or fp8 e4m3 with
128 x 128 block scales (`w1_scale` [E, 2I/128, H/128], `w2_scale` [E, H/128, I/128]; the
activations are then quantised per token and 128-wide group on the fly: W8A8 block FP8, as
DeepSeek-V3 checkpoints run). Output [T, H] in x's dtype.

How it runs (vLLM's Triton fused-MoE design):
1. `align_by_expert` (torch, on the device): the T x k routed rows sorted by expert, each
   expert's rows padded to a whole BLOCK_M tile with a sentinel, and the expert of every tile.
   The tile count is bounded by shapes alone (T k / BLOCK_M + E tiles), so the grid never
   depends on the routing: no host read, capture-safe.
2. `_moe_gemm_kernel` over (tile, N block): loads its tile's rows (the token of each routed row
   for the first GEMM, the routed row itself for the second), runs the K loop against its
   expert's weights, scales by the routed weight in the second GEMM, stores the rows back in
   routed order; tiles past the used ones return at once.
3. SiLU-and-mul between the two GEMMs (validate/kernels/swiglu.py); the k rows of a token summed.

FLOP and byte counts at the bottom (`flops`, `bytes_moved`): the roofline costmodel/moe_kernels.py
prices. Benchmark on a CUDA GPU: `python -m validate.kernels.fused_moe`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import check_dtype, check_launchable, check_ndim, interpreting
from .swiglu import silu_and_mul

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
GROUP = 128  # block-FP8 scale block (weights 128 x 128, activations 1 x 128)
FP8_MAX = 448.0


@triton.jit
def _moe_gemm_kernel(
    a_ptr, w_ptr, c_ptr, sorted_ptr, tile_expert_ptr, weight_ptr, a_scale_ptr, w_scale_ptr,
    n_rows, N, K, top_k,
    stride_a, stride_we, stride_wn, stride_c, stride_as, stride_wse, stride_wsn,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    A_PER_TOKEN: tl.constexpr, MUL_WEIGHT: tl.constexpr, BLOCK_FP8: tl.constexpr,
    UPCAST: tl.constexpr,
):
    tile = tl.program_id(0)
    expert = tl.load(tile_expert_ptr + tile).to(tl.int64)
    if expert < 0:  # a tile past the routed rows: nothing to do
        return
    rows = tl.load(sorted_ptr + tile * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = rows < n_rows
    rows = tl.where(valid, rows, 0).to(tl.int64)
    a_rows = rows // top_k if A_PER_TOKEN else rows
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_ok = ks < K
        a = tl.load(a_ptr + a_rows[:, None] * stride_a + ks[None, :],
                    mask=valid[:, None] & k_ok[None, :], other=0.0)
        w = tl.load(w_ptr + expert * stride_we + cols[None, :] * stride_wn + ks[:, None],
                    mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if BLOCK_FP8:  # one activation scale per row and one weight scale per tile, per K block
            a_s = tl.load(a_scale_ptr + a_rows * stride_as + k0 // BLOCK_K, mask=valid, other=0.0)
            w_s = tl.load(w_scale_ptr + expert * stride_wse
                          + (tl.program_id(1) * BLOCK_N // BLOCK_K) * stride_wsn + k0 // BLOCK_K)
            acc += tl.dot(a, w) * a_s[:, None] * w_s
        else:
            if UPCAST:  # the interpreter's tl.dot cannot multiply bf16
                a = a.to(tl.float32)
                w = w.to(tl.float32)
            acc = tl.dot(a, w, acc, input_precision="ieee")
    if MUL_WEIGHT:
        acc = acc * tl.load(weight_ptr + rows, mask=valid, other=0.0).to(tl.float32)[:, None]
    tl.store(c_ptr + rows[:, None] * stride_c + cols[None, :], acc.to(c_ptr.dtype.element_ty),
             mask=valid[:, None] & col_ok[None, :])


def align_by_expert(topk_ids: torch.Tensor, num_experts: int, block_m: int):
    """Routed rows (t * k + j) sorted by expert, each expert padded to whole `block_m` tiles.

    Returns (sorted_rows [tiles * block_m] int32, sentinel T*k in the padding; tile_expert
    [tiles] int32, -1 past the used tiles). tiles = cdiv(T k, block_m) + E bounds any routing.
    Device ops only: nothing is read back."""
    flat = topk_ids.reshape(-1).to(torch.int64)
    n, dev = flat.numel(), flat.device
    tiles = -(-n // block_m) + num_experts
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(
        0, flat, torch.ones_like(flat))
    padded = (counts + block_m - 1) // block_m * block_m
    ends = torch.cumsum(padded, 0)
    order = torch.argsort(flat, stable=True)
    first = torch.cumsum(counts, 0) - counts  # first sorted index of each expert
    e_sorted = flat[order]
    slot = (ends - padded)[e_sorted] + torch.arange(n, device=dev) - first[e_sorted]
    sorted_rows = torch.full((tiles * block_m,), n, dtype=torch.int32, device=dev)
    sorted_rows.scatter_(0, slot, order.to(torch.int32))
    starts = torch.arange(tiles, device=dev) * block_m
    tile_expert = torch.searchsorted(ends, starts, right=True)
    tile_expert = torch.where(tile_expert < num_experts, tile_expert, -1).to(torch.int32)
    return sorted_rows, tile_expert


def quantize_groups(x: torch.Tensor):
    """Per row and 128-wide group: fp8 e4m3 values and fp32 scales (amax / 448)."""
    rows, k = x.shape
    g = x.float().reshape(rows, k // GROUP, GROUP)
    scale = (g.abs().amax(-1) / FP8_MAX).clamp_min(1e-10)
    return (g / scale[..., None]).to(torch.float8_e4m3fn).reshape(rows, k), scale


def _gemm(a, w, c, sorted_rows, tile_expert, weights, top_k, a_per_token, a_scale, w_scale,
          block_m):
    n_rows, N, K = c.shape[0], w.shape[1], w.shape[2]
    fp8 = w_scale is not None
    block_k = GROUP if fp8 else (32 if interpreting() else 64)
    block_n = 64 if interpreting() else 128
    grid = (tile_expert.numel(), triton.cdiv(N, block_n))
    _moe_gemm_kernel[grid](
        a, w, c, sorted_rows, tile_expert, weights if weights is not None else c,
        a_scale if fp8 else c, w_scale if fp8 else c,
        n_rows, N, K, top_k,
        a.stride(0), w.stride(0), w.stride(1), c.stride(0),
        a_scale.stride(0) if fp8 else 0, w_scale.stride(0) if fp8 else 0,
        w_scale.stride(1) if fp8 else 0,
        BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k, A_PER_TOKEN=a_per_token,
        MUL_WEIGHT=weights is not None, BLOCK_FP8=fp8,
        UPCAST=interpreting() and a.dtype == torch.bfloat16, num_warps=4)


def fused_moe(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, w1_scale: torch.Tensor | None = None,
              w2_scale: torch.Tensor | None = None, block_m: int = 16) -> torch.Tensor:
    """The MoE layer's routed experts (module docstring). x [T, H] -> [T, H] in x's dtype."""
    check_ndim("x", x, 2, "[T, H]")
    check_ndim("w1", w1, 3, "[E, 2I, H]")
    check_ndim("w2", w2, 3, "[E, H, I]")
    check_ndim("topk_ids", topk_ids, 2, "[T, k]")
    check_dtype("x", x, DTYPES)
    T, H = x.shape
    E, two_i, _ = w1.shape
    inter = two_i // 2
    if w1.shape[2] != H or tuple(w2.shape) != (E, H, inter) or two_i % 2:
        raise ValueError(f"w1 {tuple(w1.shape)} and w2 {tuple(w2.shape)} do not fit x "
                         f"{tuple(x.shape)}: expected [E, 2I, {H}] and [E, {H}, I]")
    if tuple(topk_weights.shape) != tuple(topk_ids.shape) or topk_ids.shape[0] != T:
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights "
                         f"{tuple(topk_weights.shape)}: expected both [{T}, k]")
    fp8 = w1.dtype == torch.float8_e4m3fn
    if fp8 != (w1_scale is not None) or (w2_scale is None) != (w1_scale is None) \
            or (fp8 and w2.dtype != torch.float8_e4m3fn):
        raise ValueError("block-FP8 experts need fp8 e4m3 w1 and w2 with w1_scale and w2_scale; "
                         "bf16/fp16/fp32 experts take no scales")
    if fp8 and (H % GROUP or inter % GROUP):
        raise ValueError(f"block-FP8 experts need hidden ({H}) and expert width ({inter}) in "
                         f"multiples of {GROUP}")
    if not fp8 and w1.dtype != x.dtype:
        check_dtype("w1", w1, (x.dtype,))
    device = check_launchable({"x": x, "w1": w1, "w2": w2, "topk_ids": topk_ids})
    k = topk_ids.shape[1]
    n = T * k
    sorted_rows, tile_expert = align_by_expert(topk_ids, E, block_m)
    up = torch.empty((n, two_i), dtype=x.dtype, device=device)
    a, a_s = (quantize_groups(x) if fp8 else (x, None))
    _gemm(a, w1, up, sorted_rows, tile_expert, None, k, True, a_s, w1_scale, block_m)
    act = silu_and_mul(up)
    a, a_s = (quantize_groups(act) if fp8 else (act, None))
    down = torch.empty((n, H), dtype=x.dtype, device=device)
    _gemm(a, w2, down, sorted_rows, tile_expert, topk_weights.reshape(-1).float(), k, False,
          a_s, w2_scale, block_m)
    return down.view(T, k, H).sum(1)


# --- cost formulas ---------------------------------------------------------------------------


def flops(tokens: int, hidden: int, inter: int, topk: int) -> int:
    """Both GEMMs over the routed rows (padding not counted): 2 x T k x H x 3I."""
    return 2 * tokens * topk * hidden * 3 * inter


def bytes_moved(tokens: int, hidden: int, inter: int, topk: int, active_experts: int,
                w_bytes: float = 2.0) -> float:
    """Each active expert's weights once, x in, the routed rows' intermediates out and back,
    the output: the fused-MoE roofline's bytes (costmodel/moe_kernels.py)."""
    rows = tokens * topk
    return (active_experts * 3 * hidden * inter * w_bytes + tokens * hidden * 2
            + rows * (2 * inter * 2 * 2 + inter * 2 * 2 + hidden * 2 * 2) + tokens * hidden * 2)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit("the benchmark needs a CUDA GPU (tests run the kernel under TRITON_INTERPRET=1)")
    dev = "cuda"
    T, H, inter, E, k = 256, 4096, 1536, 128, 8
    x = torch.randn(T, H, device=dev, dtype=torch.bfloat16)
    w1 = torch.randn(E, 2 * inter, H, device=dev, dtype=torch.bfloat16) * 0.02
    w2 = torch.randn(E, H, inter, device=dev, dtype=torch.bfloat16) * 0.02
    logits = torch.randn(T, E, device=dev)
    wts, ids = logits.softmax(-1).topk(k, dim=-1)
    ms = triton.testing.do_bench(lambda: fused_moe(x, w1, w2, wts, ids))
    print(f"fused_moe T={T} H={H} I={inter} E={E} top-{k}: {ms * 1e3:.1f} us, "
          f"{flops(T, H, inter, k) / ms / 1e9:.1f} TFLOP/s")
