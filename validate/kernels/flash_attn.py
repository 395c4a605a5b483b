"""Causal flash attention for prefill and chunked prefill, with GQA, over variable-length
sequences packed back to back (the "varlen" layout of FlashAttention-2).

Layout. A batch of B sequences is packed along the token axis:
    q: [total_q, Hq, D]   the new tokens of every sequence, sequence b in rows
                           cu_seqlens_q[b] : cu_seqlens_q[b+1]
    k, v: [total_k, Hkv, D] every key/value a sequence attends to, sequence b in rows
                           cu_seqlens_k[b] : cu_seqlens_k[b+1]: its cached prefix first,
                           then its new tokens
with cu_seqlens_* int32 [B+1] prefix sums starting at 0. For sequence b the chunk has
Tq = len_q new tokens and the prefix has P = len_k - len_q >= 0 tokens. Query i sits at
absolute position P + i and sees keys 0 .. P + i (causal, aligned at the bottom right, as
FlashAttention >= 2.1 does). A plain prefill is P = 0; chunked prefill (Sarathi-Serve) is
P = the tokens of the prompt already processed. Query head h reads KV head h // (Hq / Hkv).

Algorithm. One program computes one BLOCK_M block of queries of one head of one sequence,
keeping a running max m, running sum l and an unnormalised output acc, and visits key
blocks left to right (the online softmax of FlashAttention):
    s = q k^T * scale;  m' = max(m, rowmax s);  p = exp(s - m')
    l = l * exp(m - m') + rowsum p;  acc = acc * exp(m - m') + p v;  m = m'
and writes acc / l. Exponentials are base 2 with log2(e) folded into the scale. Key blocks
that every query of the block sees run without a mask; only the blocks on the diagonal
pay for the causal mask. Matmuls accumulate in fp32; p is rounded to v's dtype for p v.
On a GPU the tile shapes, warps and pipeline depth are autotuned per (longest chunk, total
keys, head dim, GQA group), the sizes bucketed to powers of two; under the interpreter 16 x 16
tiles keep the tests fast and cover several blocks and the tails.

FLOP and byte counts are at the bottom (`flops`, `bytes_moved`).
Benchmark on a CUDA GPU: `python -m validate.kernels.flash_attn`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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
from ._tuning import autotune, bucket, elem_bytes, smem_prune

DTYPES = (torch.bfloat16, torch.float16, torch.float32)
LOG2E = 1.4426950408889634


@triton.jit
def _attend(
    q, k_ptrs, v_ptrs, acc, m_i, l_i, qk_scale, q_pos, k_pos, d_ok, k_len,
    MASKED: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    """Fold one block of keys into the running softmax state of a block of queries.

    q: [BLOCK_M, BLOCK_D]; k_ptrs, v_ptrs: [BLOCK_N, BLOCK_D] pointers; q_pos [BLOCK_M] and
    k_pos [BLOCK_N] are absolute positions, used only when MASKED.
    """
    if MASKED:
        k_ok = k_pos < k_len
        k = tl.load(k_ptrs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=k_ok[:, None] & d_ok[None, :], other=0.0)
    else:
        k = tl.load(k_ptrs, mask=d_ok[None, :], other=0.0)
        v = tl.load(v_ptrs, mask=d_ok[None, :], other=0.0)
    if UPCAST:
        k = k.to(tl.float32)
        v = v.to(tl.float32)
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
    if MASKED:
        visible = (k_pos[None, :] <= q_pos[:, None]) & k_ok[None, :]
        s = tl.where(visible, s, float("-inf"))
    # Key 0 is in the first block visited and every query sees it, so m_new is finite.
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(s - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return acc, m_new, l_i


@triton.jit
def _flash_prefill_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, cu_q_ptr, cu_k_ptr,
    qk_scale, MAXQ_BUCKET, TOTAL_K_BUCKET,  # the buckets only key the autotuner
    stride_qt, stride_qh, stride_kt, stride_kh, stride_vt, stride_vh, stride_ot, stride_oh,
    GROUP: tl.constexpr,  # query heads per KV head
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    m_block = tl.program_id(0)
    head = tl.program_id(1)
    seq = tl.program_id(2)
    q_start = tl.load(cu_q_ptr + seq)
    q_len = tl.load(cu_q_ptr + seq + 1) - q_start
    if m_block * BLOCK_M >= q_len:  # the grid is sized for the longest chunk
        return
    k_start = tl.load(cu_k_ptr + seq)
    k_len = tl.load(cu_k_ptr + seq + 1) - k_start
    prefix = k_len - q_len
    kv_head = head // GROUP

    rows = m_block * BLOCK_M + tl.arange(0, BLOCK_M)  # query index within the chunk
    q_pos = prefix + rows  # absolute position = last key the query may see
    d = tl.arange(0, BLOCK_D)
    d_ok = d < HEAD_DIM
    # Row offsets in int64: total_q * Hq * D can pass 2^31 for long packed batches.
    q_rows = (q_start + rows).to(tl.int64)
    q_ptrs = q_ptr + q_rows[:, None] * stride_qt + head * stride_qh + d[None, :]
    q = tl.load(q_ptrs, mask=(rows < q_len)[:, None] & d_ok[None, :], other=0.0)
    if UPCAST:
        q = q.to(tl.float32)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)

    cols = tl.arange(0, BLOCK_N)
    k_rows = (k_start + cols).to(tl.int64)
    k_base = k_ptr + k_rows[:, None] * stride_kt + kv_head * stride_kh + d[None, :]
    v_base = v_ptr + k_rows[:, None] * stride_vt + kv_head * stride_vh + d[None, :]
    # The first query of the block sees keys 0 .. prefix + m_block * BLOCK_M, so whole key
    # blocks below that bound are visible to every row: no causal or bounds mask needed.
    unmasked_end = (prefix + m_block * BLOCK_M + 1) // BLOCK_N * BLOCK_N
    # The last query of the block sees up to prefix + (m_block + 1) * BLOCK_M - 1.
    end = tl.minimum(k_len, prefix + (m_block + 1) * BLOCK_M)
    for n0 in range(0, unmasked_end, BLOCK_N):
        acc, m_i, l_i = _attend(q, k_base + n0 * stride_kt, v_base + n0 * stride_vt,
                                acc, m_i, l_i, qk_scale, q_pos, n0 + cols, d_ok, k_len,
                                False, PRECISION, UPCAST)
    for n0 in range(unmasked_end, end, BLOCK_N):
        acc, m_i, l_i = _attend(q, k_base + n0 * stride_kt, v_base + n0 * stride_vt,
                                acc, m_i, l_i, qk_scale, q_pos, n0 + cols, d_ok, k_len,
                                True, PRECISION, UPCAST)

    out = acc / l_i[:, None]
    o_ptrs = o_ptr + q_rows[:, None] * stride_ot + head * stride_oh + d[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows < q_len)[:, None] & d_ok[None, :])


def _configs() -> list[triton.Config]:
    """Query x key tiles for Hopper's wgmma (64-row warpgroup steps), 2-4 stages of K/V in
    flight; fp32 and head dims above 128 only fit the smaller ones (the autotuner drops the
    rest)."""
    shapes = [(128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3), (128, 32, 4, 4),
              (64, 64, 4, 4), (64, 128, 4, 3), (64, 32, 4, 2)]
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=st)
            for m, n, w, st in shapes]


def _smem(c: dict, args: dict) -> float:
    """Shared memory of a config: its stages of K and V tiles and the query tile."""
    e = elem_bytes(args["q_ptr"])
    return (2 * c["num_stages"] * c["BLOCK_N"] + c["BLOCK_M"]) * args["BLOCK_D"] * e


_flash_autotuned = autotune(_configs(), ["MAXQ_BUCKET", "TOTAL_K_BUCKET", "HEAD_DIM", "GROUP",
                                         "PRECISION"], smem_prune(_smem))(_flash_prefill_kernel)
_INTERPRETER = {"BLOCK_M": 16, "BLOCK_N": 16, "num_warps": 1, "num_stages": 1}


def flash_attn_prefill(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    cu_seqlens_q: torch.Tensor,
    cu_seqlens_k: torch.Tensor,
    max_seqlen_q: int,
    *,
    softmax_scale: float | None = None,
    check_offsets: bool = True,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal attention of each sequence's new tokens over its prefix and themselves.

    q: [total_q, Hq, D]; k, v: [total_k, Hkv, D]; same dtype (bf16/fp16/fp32), Hq a
        multiple of Hkv, last axis contiguous.
    cu_seqlens_q, cu_seqlens_k: int32 [B+1], offsets of each sequence's rows in q and k/v;
        sequence b has len_k >= len_q and a prefix of len_k - len_q cached tokens.
    max_seqlen_q: the longest len_q (sizes the launch grid without reading the offsets).
    softmax_scale: defaults to 1/sqrt(D).
    check_offsets: read the offsets back to the host and validate them (a device sync;
        pass False when timing).
    out: optional [total_q, Hq, D] buffer of q's dtype to write o into.
    Returns o: [total_q, Hq, D] in q's dtype.
    """
    check_ndim("q", q, 3, "[total_q, Hq, D]")
    check_ndim("k", k, 3, "[total_k, Hkv, D]")
    check_ndim("v", v, 3, "[total_k, Hkv, D]")
    check_dtype("q", q, DTYPES)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{name}.dtype={t.dtype} does not match q.dtype={q.dtype}")
    total_q, n_q_heads, head_dim = q.shape
    total_k, n_kv_heads, _ = k.shape
    check_dim("k", k, 2, head_dim, "q.shape[2] (D)")
    if tuple(v.shape) != tuple(k.shape):
        raise ValueError(f"v.shape={tuple(v.shape)} does not match k.shape={tuple(k.shape)}")
    if n_kv_heads == 0 or n_q_heads % n_kv_heads:
        raise ValueError(f"Hq={n_q_heads} query heads is not a multiple of Hkv={n_kv_heads}")
    for name, cu in (("cu_seqlens_q", cu_seqlens_q), ("cu_seqlens_k", cu_seqlens_k)):
        check_ndim(name, cu, 1, "[B+1]")
        check_dtype(name, cu, (torch.int32,))
    if cu_seqlens_q.numel() < 2 or cu_seqlens_k.numel() != cu_seqlens_q.numel():
        raise ValueError(f"cu_seqlens_q has {cu_seqlens_q.numel()} entries and cu_seqlens_k "
                         f"{cu_seqlens_k.numel()}: both must be B+1 >= 2")
    if max_seqlen_q < 0:
        raise ValueError(f"max_seqlen_q={max_seqlen_q} must be >= 0")
    for name, t in (("q", q), ("k", k), ("v", v)):
        check_inner_contiguous(name, t)
    device = check_launchable({"q": q, "k": k, "v": v, "cu_seqlens_q": cu_seqlens_q,
                               "cu_seqlens_k": cu_seqlens_k})
    if check_offsets:
        _check_offsets(cu_seqlens_q.cpu().tolist(), cu_seqlens_k.cpu().tolist(),
                       total_q, total_k, max_seqlen_q)

    o = out if out is not None else torch.empty(q.shape, dtype=q.dtype, device=device)
    check_out("out", o, q.shape, q.dtype, device)
    batch = cu_seqlens_q.numel() - 1
    if max_seqlen_q == 0 or total_q == 0:
        return o
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(head_dim)

    def grid(meta: dict) -> tuple[int, int, int]:
        return (triton.cdiv(max_seqlen_q, meta["BLOCK_M"]), n_q_heads, batch)

    kernel = _flash_prefill_kernel if interpreting() else _flash_autotuned
    kernel[grid](
        q, k, v, o, cu_seqlens_q, cu_seqlens_k,
        scale * LOG2E, bucket(max_seqlen_q), bucket(total_k),
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        v.stride(0), v.stride(1), o.stride(0), o.stride(1),
        GROUP=n_q_heads // n_kv_heads, HEAD_DIM=head_dim,
        BLOCK_D=max(triton.next_power_of_2(head_dim), 16),
        PRECISION="ieee", UPCAST=interpreting() and q.dtype == torch.bfloat16,
        **(_INTERPRETER if interpreting() else {}),
    )
    return o


def _check_offsets(cu_q: list[int], cu_k: list[int], total_q: int, total_k: int,
                   max_seqlen_q: int) -> None:
    if cu_q[0] != 0 or cu_k[0] != 0:
        raise ValueError(f"cu_seqlens_q[0]={cu_q[0]} and cu_seqlens_k[0]={cu_k[0]} must be 0")
    if cu_q[-1] != total_q:
        raise ValueError(f"cu_seqlens_q[-1]={cu_q[-1]} does not match q.shape[0]={total_q}")
    if cu_k[-1] != total_k:
        raise ValueError(f"cu_seqlens_k[-1]={cu_k[-1]} does not match k.shape[0]={total_k}")
    for b in range(len(cu_q) - 1):
        len_q, len_k = cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b]
        if len_q < 0 or len_k < len_q:
            raise ValueError(f"sequence {b}: len_q={len_q}, len_k={len_k}; need "
                             "0 <= len_q <= len_k (keys = cached prefix + the new tokens)")
        if len_q > max_seqlen_q:
            raise ValueError(f"sequence {b}: len_q={len_q} exceeds max_seqlen_q={max_seqlen_q}")


# --- cost formulas ---------------------------------------------------------------------------


def attended_pairs(q_lens: Sequence[int], prefix_lens: Sequence[int]) -> int:
    """(query, key) pairs a causal chunk computes: query i of a chunk after P cached
    tokens sees P + i + 1 keys, so a chunk of Tq gives Tq * P + Tq * (Tq + 1) / 2."""
    return sum(tq * p + tq * (tq + 1) // 2 for tq, p in zip(q_lens, prefix_lens, strict=True))


def flops(q_lens: Sequence[int], prefix_lens: Sequence[int], q_heads: int, head_dim: int) -> int:
    """q k^T and p v are each 2 * D FLOPs per (query, key) pair per query head; the
    softmax is not counted (it runs on the vector units, off the tensor-core roofline)."""
    return 4 * attended_pairs(q_lens, prefix_lens) * q_heads * head_dim


def bytes_moved(q_lens: Sequence[int], prefix_lens: Sequence[int], q_heads: int,
                kv_heads: int, head_dim: int, elem_bytes: int = 2) -> int:
    """Read q and write o once; read each sequence's keys and values (prefix + chunk) once."""
    total_q = sum(q_lens)
    total_k = sum(q + p for q, p in zip(q_lens, prefix_lens, strict=True))
    return (2 * total_q * q_heads + 2 * total_k * kv_heads) * head_dim * elem_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("flash_attn: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    hq, hkv, d = 64, 8, 128  # Llama-3-70B attention shapes (per GPU at TP=1)
    print(f"{'B':>3} {'chunk':>6} {'prefix':>7} {'ms':>8} {'TFLOP/s':>8}")
    for batch, chunk, prefix in [(1, 2048, 0), (4, 2048, 0), (1, 8192, 0), (1, 512, 4096),
                                 (8, 512, 8192)]:
        q_lens, prefixes = [chunk] * batch, [prefix] * batch
        q = torch.randn(batch * chunk, hq, d, device=device, dtype=torch.bfloat16)
        k = torch.randn(batch * (chunk + prefix), hkv, d, device=device, dtype=torch.bfloat16)
        v = torch.randn_like(k)
        cu_q = torch.arange(0, batch + 1, device=device, dtype=torch.int32) * chunk
        cu_k = torch.arange(0, batch + 1, device=device, dtype=torch.int32) * (chunk + prefix)
        ms = triton.testing.do_bench(lambda q=q, k=k, v=v, cu_q=cu_q, cu_k=cu_k, chunk=chunk:
                                     flash_attn_prefill(q, k, v, cu_q, cu_k, chunk,
                                                        check_offsets=False))
        tflops = flops(q_lens, prefixes, hq, d) / ms * 1e-9
        print(f"{batch:3d} {chunk:6d} {prefix:7d} {ms:8.3f} {tflops:8.1f}")


if __name__ == "__main__":
    _bench()
