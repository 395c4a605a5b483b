"""Rotary position embedding (RoPE), Llama / GPT-NeoX "rotate-half" layout.

For a head vector x of size D, split it into halves x1 = x[:D/2], x2 = x[D/2:]. Pair j
(j < D/2) turns by the angle pos * theta^(-2j/D):

    out[j]       = x1[j] * cos - x2[j] * sin
    out[j + D/2] = x2[j] * cos + x1[j] * sin

This is applied to every query head of q [T, Hq, D] and every key head of k [T, Hkv, D],
with token t at position positions[t]. q and k may be strided views (for example slices of
a fused QKV projection) as long as the last axis is contiguous. The results go to new
tensors unless output buffers are passed; passing q and k themselves rotates in place
(each element is read before it is written, by the same program).

One program handles one token: it computes the D/2 angles once and rotates all of that
token's query and key heads with them. The inverse frequencies are computed in float64 and
kept as fp32, as Hugging Face's Llama does, once per (head dim, theta, device), on the device
itself (`_inv_freq`): a repeated call copies nothing from the host, so it can be captured in a
CUDA graph. Angles and the rotation are fp32. FLOP and byte counts are at the bottom (`flops`,
`bytes_moved`).

Benchmark on a CUDA GPU: `python -m validate.kernels.rope`.
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
    check_ndim,
    check_out,
    interpreting,
)

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
POSITION_DTYPES = (torch.int32, torch.int64)
_INV_FREQ: dict[tuple[int, float, torch.device], torch.Tensor] = {}


def _inv_freq(head_dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """fp32 [D/2] theta^(-2j/D), computed in float64 on `device` the first time it is asked
    for, then reused."""
    key = (head_dim, float(theta), device)
    t = _INV_FREQ.get(key)
    if t is None:
        j = torch.arange(0, head_dim // 2, dtype=torch.float64, device=device)
        t = (1.0 / theta ** (j * 2.0 / head_dim)).to(torch.float32)
        _INV_FREQ[key] = t
    return t


@triton.jit
def _rotate_heads(
    src, dst, n_heads, stride_src_h, stride_dst_h, cos, sin,
    HALF: tl.constexpr, BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    """Rotate n_heads head vectors of one token; cos, sin: [BLOCK_HALF] fp32."""
    j = tl.arange(0, BLOCK_HALF)
    for h0 in range(0, n_heads, BLOCK_HEADS):
        heads = h0 + tl.arange(0, BLOCK_HEADS)
        ok = (heads[:, None] < n_heads) & (j[None, :] < HALF)
        first = src + heads[:, None] * stride_src_h + j[None, :]  # x1, [BLOCK_HEADS, BLOCK_HALF]
        x1 = tl.load(first, mask=ok, other=0.0).to(tl.float32)
        x2 = tl.load(first + HALF, mask=ok, other=0.0).to(tl.float32)
        out1 = x1 * cos[None, :] - x2 * sin[None, :]
        out2 = x2 * cos[None, :] + x1 * sin[None, :]
        out = dst + heads[:, None] * stride_dst_h + j[None, :]
        tl.store(out, out1.to(dst.dtype.element_ty), mask=ok)
        tl.store(out + HALF, out2.to(dst.dtype.element_ty), mask=ok)


@triton.jit
def _rope_kernel(
    q_ptr, k_ptr, q_out_ptr, k_out_ptr, pos_ptr, inv_freq_ptr,
    n_q_heads, n_kv_heads,
    stride_qt, stride_qh, stride_kt, stride_kh,
    stride_qot, stride_qoh, stride_kot, stride_koh,
    HALF: tl.constexpr, BLOCK_HEADS: tl.constexpr, BLOCK_HALF: tl.constexpr,
):
    t = tl.program_id(0).to(tl.int64)  # T * (Hq + Hkv) * D may pass 2^31
    j = tl.arange(0, BLOCK_HALF)
    inv_freq = tl.load(inv_freq_ptr + j, mask=j < HALF, other=0.0)
    angle = tl.load(pos_ptr + t).to(tl.float32) * inv_freq
    cos = tl.cos(angle)
    sin = tl.sin(angle)
    _rotate_heads(q_ptr + t * stride_qt, q_out_ptr + t * stride_qot, n_q_heads,
                  stride_qh, stride_qoh, cos, sin, HALF, BLOCK_HEADS, BLOCK_HALF)
    _rotate_heads(k_ptr + t * stride_kt, k_out_ptr + t * stride_kot, n_kv_heads,
                  stride_kh, stride_koh, cos, sin, HALF, BLOCK_HEADS, BLOCK_HALF)


def apply_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    positions: torch.Tensor,
    theta: float = 10000.0,
    *,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply rotate-half RoPE to q and k.

    q: [T, Hq, D], k: [T, Hkv, D], same dtype (bf16/fp16/fp32), D even, last axis contiguous.
    positions: [T] int32/int64, the absolute position of each token (in chunked prefill and
        decode it continues from the cached prefix).
    theta: the RoPE base (10000 for Llama-2, 500000 for Llama-3).
    q_out, k_out: optional buffers shaped and typed like q and k to write into (may be q and
        k themselves, for an in-place rotation).
    Returns (q_rotated, k_rotated), by default new contiguous tensors.
    """
    check_ndim("q", q, 3, "[T, Hq, D]")
    check_ndim("k", k, 3, "[T, Hkv, D]")
    check_dtype("q", q, DTYPES)
    if k.dtype != q.dtype:
        raise ValueError(f"k.dtype={k.dtype} does not match q.dtype={q.dtype}")
    check_ndim("positions", positions, 1, "[T]")
    check_dtype("positions", positions, POSITION_DTYPES)
    T, n_q_heads, D = q.shape
    n_kv_heads = k.shape[1]
    check_dim("k", k, 0, T, "q.shape[0] (T)")
    check_dim("k", k, 2, D, "q.shape[2] (D)")
    check_dim("positions", positions, 0, T, "q.shape[0] (T)")
    if D % 2:
        raise ValueError(f"head dim D={D} must be even for rotate-half RoPE")
    if not theta > 0:
        raise ValueError(f"theta={theta} must be > 0")
    check_inner_contiguous("q", q)
    check_inner_contiguous("k", k)
    device = check_launchable({"q": q, "k": k, "positions": positions})

    if q_out is None:
        q_out = torch.empty(q.shape, dtype=q.dtype, device=device)
    check_out("q_out", q_out, q.shape, q.dtype, device)
    if k_out is None:
        k_out = torch.empty(k.shape, dtype=k.dtype, device=device)
    check_out("k_out", k_out, k.shape, k.dtype, device)
    if T == 0:
        return q_out, k_out
    half = D // 2
    inv_freq = _inv_freq(D, theta, device)

    block_half = triton.next_power_of_2(half)
    if interpreting():
        block_heads = 4  # small, so the loop over heads and its tail are exercised
    else:
        # About 4K elements of a head block per iteration.
        block_heads = min(triton.next_power_of_2(max(n_q_heads, n_kv_heads)),
                          max(4096 // block_half, 1))
    _rope_kernel[(T,)](
        q, k, q_out, k_out, positions, inv_freq,
        n_q_heads, n_kv_heads,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
        HALF=half, BLOCK_HEADS=block_heads, BLOCK_HALF=block_half,
        num_warps=4,
    )
    return q_out, k_out


# --- cost formulas ---------------------------------------------------------------------------


def flops(tokens: int, q_heads: int, kv_heads: int, head_dim: int) -> int:
    """Each output element is two multiplies and one add (cos/sin per token are negligible)."""
    return 3 * tokens * (q_heads + kv_heads) * head_dim


def bytes_moved(tokens: int, q_heads: int, kv_heads: int, head_dim: int,
                elem_bytes: int = 2, position_bytes: int = 8) -> int:
    """Read and write q and k once, read the positions."""
    return 2 * tokens * (q_heads + kv_heads) * head_dim * elem_bytes + tokens * position_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("rope: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    print(f"{'T':>6} {'Hq':>4} {'Hkv':>4} {'D':>4} {'us':>8} {'GB/s':>8}")
    for t, hq, hkv, d in [(1, 64, 8, 128), (256, 32, 8, 128), (4096, 64, 8, 128),
                          (16384, 32, 8, 128)]:
        q = torch.randn(t, hq, d, device=device, dtype=torch.bfloat16)
        k = torch.randn(t, hkv, d, device=device, dtype=torch.bfloat16)
        pos = torch.arange(t, device=device)
        ms = triton.testing.do_bench(lambda q=q, k=k, pos=pos: apply_rope(q, k, pos, 500000.0))
        gbs = bytes_moved(t, hq, hkv, d) / ms * 1e-6
        print(f"{t:6d} {hq:4d} {hkv:4d} {d:4d} {ms * 1e3:8.1f} {gbs:8.1f}")


if __name__ == "__main__":
    _bench()
