"""Fused mixture-of-experts: a grouped GEMM over the top-k routed tokens, as vLLM's Triton
`fused_experts` runs one MoE layer on one GPU.

    x [T, H], top-k routing (ids [T, k], weights [T, k])
      -> moe_align        the T x k (token, expert) rows sorted by expert, each expert's rows
                          padded to BLOCK_M, on the device (no host copy, no sync)
      -> gate/up GEMM     one program per (block of BLOCK_M rows of one expert, N tile):
                          rows of x gathered by token, times that expert's w1 [2I, H]
      -> SiLU-and-mul     silu(gate) * up, [T k, I] (`swiglu.silu_and_mul`)
      -> down GEMM        the same grouped GEMM with w2 [H, I], each row times its routing weight
      -> top-k sum        out[t] = sum over the k rows of token t
Weights are stored as vLLM keeps them: w1 [E, 2I, H] (gate rows, then up rows), w2 [E, H, I].

Precisions:
- bf16 / fp16 / fp32 activations and weights of that dtype, fp32 accumulation;
- block FP8 (DeepSeek-V3 checkpoints): fp8 e4m3 weights with one fp32 scale per 128 x 128
  block (w1_scale [E, cdiv(2I, 128), cdiv(H, 128)], w2_scale [E, cdiv(H, 128), cdiv(I, 128)]);
  activations quantised per token and group of 128 along K (`per_token_group_quant`), so a K
  step of at most 128 has one activation scale per row and one weight scale per column.

Expert parallelism: the weights hold the E experts `expert_offset .. expert_offset + E - 1` of
`num_experts`; rows routed to other experts are left out (another rank computes them) and add
nothing to the output. Every wrapper is capture-safe: shapes come from tensor shapes, routing
stays on the device, and the launch grid is sized by the worst-case padding
(T k + E (BLOCK_M - 1) rows), programs past the real padded length returning at once.

FLOP and byte counts are at the bottom (`flops`, `bytes_moved`). The benchmark against vLLM's
kernel sits with the references: `python -m validate.moe_reference` on a CUDA GPU.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._device import check_dtype, check_launchable, check_ndim, fp8_supported, interpreting
from .swiglu import silu_and_mul

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
GROUP = 128  # block-fp8: weight blocks GROUP x GROUP, activation groups of GROUP along K
DTYPES = (torch.bfloat16, torch.float16, torch.float32)
ID_DTYPES = (torch.int32, torch.int64)


@triton.jit
def _moe_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, w_ptr,
    sorted_ptr, expert_ptr, n_padded_ptr,
    N, K, num_rows, top_k,
    stride_am, stride_ak, stride_be, stride_bn, stride_bk, stride_cm, stride_cn,
    stride_asm, stride_ask, stride_bse, stride_bsn, stride_bsk,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    A_BY_TOKEN: tl.constexpr,  # rows of A are tokens (gate/up) or routed rows (down)
    MUL_WEIGHT: tl.constexpr, BLOCK_FP8: tl.constexpr, GROUP_K: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # C[r, n] = sum_k A[row(r), k] * W[e, n, k] for the BLOCK_M sorted rows r of one expert e
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    if pid_m * BLOCK_M >= tl.load(n_padded_ptr):
        return  # past the padded rows of the experts that have any
    offs = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rid = tl.load(sorted_ptr + offs)  # routed row t * k + j; num_rows marks padding
    row_ok = rid < num_rows
    expert = tl.load(expert_ptr + pid_m).to(tl.int64)
    if A_BY_TOKEN:
        a_rows = rid // top_k
    else:
        a_rows = rid
    a_rows = a_rows.to(tl.int64)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    ks = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + a_rows[:, None] * stride_am + ks[None, :] * stride_ak
    b_ptrs = b_ptr + expert * stride_be + cols.to(tl.int64)[None, :] * stride_bn + ks[:, None] * stride_bk
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + ks) < K
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & col_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter's tl.dot multiplies neither bf16 nor fp8
            a = a.to(tl.float32)
            b = b.to(tl.float32)
        if BLOCK_FP8:  # BLOCK_K divides GROUP_K: one scale per row and per column this step
            g = k0 // GROUP_K
            sa = tl.load(a_scale_ptr + a_rows * stride_asm + g * stride_ask, mask=row_ok, other=0.0)
            sb = tl.load(b_scale_ptr + expert * stride_bse + (cols // GROUP_K) * stride_bsn
                         + g * stride_bsk, mask=col_ok, other=0.0)
            acc += tl.dot(a, b, input_precision=PRECISION) * sa[:, None] * sb[None, :]
        else:
            acc = tl.dot(a, b, acc, input_precision=PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if MUL_WEIGHT:
        w = tl.load(w_ptr + rid, mask=row_ok, other=0.0)
        acc = acc * w[:, None]
    c_ptrs = c_ptr + rid.to(tl.int64)[:, None] * stride_cm + cols.to(tl.int64)[None, :] * stride_cn
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


# --- routing: sort the routed rows by expert, pad each expert to BLOCK_M ------------------------


def moe_align(topk_ids: torch.Tensor, num_local: int, block_m: int,
              expert_offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sorted_ids, expert_ids, n_padded) of the T x k routed rows, all on the device.

    sorted_ids int32 [cap]: the routed rows (t * k + j) grouped by local expert, each group
        padded with T k to a multiple of `block_m`; cap = T k + E (block_m - 1) rounded up to
        `block_m`, the most padding can take, so the size never depends on the routing;
    expert_ids int32 [cap / block_m]: the local expert of each block;
    n_padded int32 [1]: the padded rows in use (blocks from there on hold nothing).
    Rows routed outside `expert_offset .. expert_offset + num_local - 1` are dropped."""
    dev = topk_ids.device
    n = topk_ids.numel()
    E = num_local
    cap = -(-(n + E * (block_m - 1)) // block_m) * block_m
    e = topk_ids.reshape(-1).to(torch.int64) - expert_offset
    e = torch.where((e >= 0) & (e < E), e, E)  # E: a bucket for other ranks' experts
    counts = torch.zeros(E + 1, dtype=torch.int64, device=dev).scatter_add_(0, e, torch.ones_like(e))
    padded = (counts[:E] + block_m - 1) // block_m * block_m
    pad_end = padded.cumsum(0)
    pad_start = pad_end - padded
    start = counts.cumsum(0) - counts  # unpadded start of each bucket in sorted order
    order = torch.argsort(e, stable=True)
    se = e[order]
    rank = torch.arange(n, device=dev) - start[se]
    dest = torch.where(se < E, pad_start[se.clamp(max=E - 1)] + rank, cap)  # cap: a trash slot
    sorted_ids = torch.full((cap + 1,), n, dtype=torch.int32, device=dev)
    sorted_ids.scatter_(0, dest, order.to(torch.int32))
    block_starts = torch.arange(cap // block_m, device=dev) * block_m
    expert_ids = torch.searchsorted(pad_end, block_starts, right=True).clamp(max=E - 1)
    return sorted_ids[:cap], expert_ids.to(torch.int32), pad_end[-1:].to(torch.int32)


def per_token_group_quant(x: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (fp8 e4m3 [M, K], fp32 scales [M, cdiv(K, group)]): each row's groups of
    `group` columns scaled so their largest magnitude lands on e4m3's largest value."""
    M, K = x.shape
    G = -(-K // group)
    xf = torch.nn.functional.pad(x.float(), (0, G * group - K)).view(M, G, group)
    s = (xf.abs().amax(-1) / FP8_MAX).clamp(min=1e-10)
    q = (xf / s[..., None]).view(M, G * group)[:, :K].to(FP8)
    return q.contiguous(), s


def quantise_block_weights(w: torch.Tensor, group: int = GROUP) -> tuple[torch.Tensor, torch.Tensor]:
    """w [E, N, K] (16/32-bit) -> (fp8 [E, N, K], fp32 scales [E, cdiv(N, group), cdiv(K, group)]),
    one scale per group x group block, as block-fp8 checkpoints store them."""
    E, N, K = w.shape
    gn, gk = -(-N // group), -(-K // group)
    wf = torch.nn.functional.pad(w.float(), (0, gk * group - K, 0, gn * group - N))
    blocks = wf.view(E, gn, group, gk, group)
    s = (blocks.abs().amax(dim=(2, 4)) / FP8_MAX).clamp(min=1e-10)
    q = (blocks / s[:, :, None, :, None]).view(E, gn * group, gk * group)[:, :N, :K].to(FP8)
    return q.contiguous(), s


# --- launch -------------------------------------------------------------------------------------


def _config(rows: int, experts: int, n: int, fp8: bool) -> dict:
    """Block shapes: under the interpreter small ones (several tiles, K tails); on a GPU the M
    tile from the mean rows per local expert (as vLLM's default configs pick it)."""
    if interpreting():
        return {"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32, "num_warps": 4}
    mean = rows / max(experts, 1)
    bm = 16 if mean <= 16 else 32 if mean <= 32 else 64 if mean <= 96 else 128
    bn = 64 if n <= 1024 or bm <= 16 else 128
    bk = 128 if fp8 else 64
    return {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "num_warps": 4 if bm <= 32 else 8,
            "num_stages": 3 if fp8 else 4}


def _grouped_gemm(a, w, out, sorted_ids, expert_ids, n_padded, num_rows, top_k, cfg, *,
                  a_scale=None, w_scale=None, weights=None, by_token: bool) -> None:
    N, K = w.shape[1], w.shape[2]
    fp8 = w.dtype == FP8
    dummy = out
    grid = (expert_ids.numel(), triton.cdiv(N, cfg["BLOCK_N"]))
    sa = a_scale if fp8 else dummy
    sb = w_scale if fp8 else dummy
    _moe_gemm_kernel[grid](
        a, w, out, sa, sb, weights if weights is not None else dummy,
        sorted_ids, expert_ids, n_padded, N, K, num_rows, top_k,
        a.stride(0), a.stride(1), w.stride(0), w.stride(1), w.stride(2), out.stride(0), out.stride(1),
        sa.stride(0) if fp8 else 0, sa.stride(1) if fp8 else 0,
        sb.stride(0) if fp8 else 0, sb.stride(1) if fp8 else 0, sb.stride(2) if fp8 else 0,
        BLOCK_M=cfg["BLOCK_M"], BLOCK_N=cfg["BLOCK_N"], BLOCK_K=cfg["BLOCK_K"],
        A_BY_TOKEN=by_token, MUL_WEIGHT=weights is not None, BLOCK_FP8=fp8, GROUP_K=GROUP,
        PRECISION="ieee", UPCAST=interpreting() and a.dtype != torch.float32,
        num_warps=cfg["num_warps"], **({"num_stages": cfg["num_stages"]} if "num_stages" in cfg else {}))


def _check(x, w1, w2, topk_weights, topk_ids, w1_scale, w2_scale, gated, num_experts, expert_offset):
    check_ndim("x", x, 2, "[T, H]")
    check_dtype("x", x, DTYPES)
    check_ndim("w1", w1, 3, "[E, 2I, H] (gated) or [E, I, H]")
    check_ndim("w2", w2, 3, "[E, H, I]")
    check_ndim("topk_ids", topk_ids, 2, "[T, top_k]")
    check_dtype("topk_ids", topk_ids, ID_DTYPES)
    check_ndim("topk_weights", topk_weights, 2, "[T, top_k]")
    T, H = x.shape
    E, inter = w2.shape[0], w2.shape[2]
    k = topk_ids.shape[1]
    if w1.shape[0] != E:
        raise ValueError(f"w1 holds {w1.shape[0]} experts but w2 holds {E}; expected the same")
    if tuple(w1.shape[1:]) != ((2 if gated else 1) * inter, H):
        raise ValueError(f"w1.shape={tuple(w1.shape)}; expected [E, {(2 if gated else 1) * inter}, {H}] "
                         f"({'gate and up' if gated else 'up'} rows of width I={inter} from w2, hidden "
                         f"H={H} from x)")
    if w2.shape[1] != H:
        raise ValueError(f"w2.shape={tuple(w2.shape)}; expected [E, H={H}, I]")
    if tuple(topk_ids.shape) != (T, k) or tuple(topk_weights.shape) != (T, k):
        raise ValueError(f"topk_ids {tuple(topk_ids.shape)} and topk_weights "
                         f"{tuple(topk_weights.shape)}; expected both [T={T}, top_k]")
    total = num_experts if num_experts is not None else E
    if not 1 <= k <= total:
        raise ValueError(f"top_k={k} with {total} experts; expected 1 <= top_k <= experts")
    if expert_offset < 0 or expert_offset + E > total:
        raise ValueError(f"expert_offset={expert_offset} with {E} local experts of {total}; expected "
                         f"0 <= expert_offset <= {total - E}")
    if (w1.dtype == FP8) != (w2.dtype == FP8):
        raise ValueError(f"w1.dtype={w1.dtype}, w2.dtype={w2.dtype}; expected both fp8 or neither")
    if w1.dtype == FP8:
        if not fp8_supported(x.device):
            raise ValueError(f"block-fp8 experts need a CUDA GPU with compute capability >= 8.9; "
                             f"{x.device} has none")
        for name, w, s in (("w1_scale", w1, w1_scale), ("w2_scale", w2, w2_scale)):
            want = (E, -(-w.shape[1] // GROUP), -(-w.shape[2] // GROUP))
            if s is None or tuple(s.shape) != want or s.dtype != torch.float32:
                got = None if s is None else f"{tuple(s.shape)} {s.dtype}"
                raise ValueError(f"{name}={got}; fp8 weights need fp32 block scales of shape {want} "
                                 f"(one per {GROUP} x {GROUP} block)")
    else:
        if w1.dtype != x.dtype or w2.dtype != x.dtype:
            raise ValueError(f"w1.dtype={w1.dtype}, w2.dtype={w2.dtype} with x.dtype={x.dtype}; "
                             "expected x's dtype, or float8_e4m3fn block-scaled weights")
        if w1_scale is not None or w2_scale is not None:
            raise ValueError("w1_scale/w2_scale apply to float8_e4m3fn weights only")
    return T, H, E, k


def fused_experts(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, topk_weights: torch.Tensor,
              topk_ids: torch.Tensor, *, w1_scale: torch.Tensor | None = None,
              w2_scale: torch.Tensor | None = None, gated: bool = True,
              num_experts: int | None = None, expert_offset: int = 0) -> torch.Tensor:
    """One MoE layer: sum over j of topk_weights[t, j] * expert_{ids[t, j]}(x[t]).

    x: [T, H] bf16/fp16/fp32. w1: [E, 2I, H] (gate rows then up rows; [E, I, H] when not
    `gated`), w2: [E, H, I], x's dtype, or float8_e4m3fn with w1_scale / w2_scale (fp32, one
    per 128 x 128 block). topk_ids: int32/int64 [T, top_k], topk_weights: [T, top_k].
    gated: silu(gate) * up; else relu(up)^2 (squared-ReLU experts).
    num_experts, expert_offset: the model's expert count and the first expert these weights
    hold (expert parallelism; defaults: all of them). Returns [T, H] in x's dtype."""
    T, H, E, k = _check(x, w1, w2, topk_weights, topk_ids, w1_scale, w2_scale, gated,
                           num_experts, expert_offset)
    device = check_launchable({"x": x, "w1": w1, "w2": w2, "topk_ids": topk_ids,
                               "topk_weights": topk_weights})
    fp8 = w1.dtype == FP8
    if T == 0:
        return torch.zeros((0, H), dtype=x.dtype, device=device)
    rows = T * k
    cfg = _config(rows, E, w1.shape[1], fp8)
    sorted_ids, expert_ids, n_padded = moe_align(topk_ids, E, cfg["BLOCK_M"], expert_offset)
    weights = topk_weights.reshape(-1).to(torch.float32)
    # rows routed to no local expert are never written: zeros, so the top-k sum skips them
    up = torch.zeros((rows, w1.shape[1]), dtype=x.dtype, device=device)
    a, sa = (per_token_group_quant(x) if fp8 else (x, None))
    _grouped_gemm(a, w1, up, sorted_ids, expert_ids, n_padded, rows, k, cfg, a_scale=sa,
                  w_scale=w1_scale, by_token=True)
    act = silu_and_mul(up) if gated else torch.relu(up).square()
    a2, sa2 = (per_token_group_quant(act) if fp8 else (act, None))
    down = torch.zeros((rows, H), dtype=torch.float32, device=device)
    _grouped_gemm(a2, w2, down, sorted_ids, expert_ids, n_padded, rows, k, cfg, a_scale=sa2,
                  w_scale=w2_scale, weights=weights, by_token=False)
    return down.view(T, k, H).sum(1).to(x.dtype)


# --- cost formulas ------------------------------------------------------------------------------


def flops(rows: int, hidden: int, inter: int, gated: bool = True) -> int:
    """The two GEMMs over `rows` routed rows (T x top-k that land on local experts)."""
    return 2 * rows * hidden * inter * ((2 if gated else 1) + 1)


def bytes_moved(tokens: int, rows: int, active: int, hidden: int, inter: int, gated: bool = True,
                w_bytes: float = 2.0, a_bytes: int = 2) -> float:
    """Each active expert's weights once, x read per token, and the intermediate rows written
    and read back (gate/up, activation, down in fp32, the top-k sum's output)."""
    up = (2 if gated else 1) * inter
    w = active * (up * hidden + hidden * inter) * w_bytes
    act = rows * (up * a_bytes + 2 * inter * a_bytes + hidden * 4 * 2) + tokens * hidden * a_bytes * 2
    return w + act

