"""Speculative-decoding verify attention: k + 1 query tokens per sequence over its paged cache.

In a verify step the target model scores the last accepted token and the k draft tokens in
one forward pass. Their keys and values are appended to the paged cache first, so for
sequence b the k + 1 queries sit at positions context_lens[b] - k - 1 ... context_lens[b] - 1,
and query t sees every cached token up to its own position: the whole prefix plus the new
tokens before it (causal among the k + 1).

This is the paged decode kernel with Lq = k + 1 query tokens: each program takes the
(k + 1) * (Hq / Hkv) query rows that share one KV head, so the cache is read once per verify
step, not k + 1 times. That is why verifying is cheap when decode is memory-bound, and why
it stops being cheap once (k + 1) * batch rows make the step compute-bound. The KV budget
works as in decode; a budgeted selection should list the k + 1 new positions too.

FLOP and byte counts are at the bottom (`flops`, `bytes_moved`).
Benchmark on a CUDA GPU: `python -m validate.kernels.spec_verify`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton

from ._device import check_ndim, interpreting
from .paged_decode import paged_attention


def spec_verify_attention(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    *,
    softmax_scale: float | None = None,
    selected_positions: torch.Tensor | None = None,
    num_selected: torch.Tensor | None = None,
    num_splits: int | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention for a verify step of k draft tokens.

    q: [B, k + 1, Hq, D], the last accepted token then the k drafts of each sequence.
    k_cache, v_cache: [num_blocks, block_size, Hkv, D], already holding the k + 1 new tokens.
    block_tables: int32 [B, max_blocks_per_seq]; context_lens: int32 [B], including the
        k + 1 new tokens.
    selected_positions, num_selected, num_splits, softmax_scale, out: as in
        `paged_decode.paged_attention`.
    Returns [B, k + 1, Hq, D] in q's dtype.
    """
    check_ndim("q", q, 4, "[B, k + 1, Hq, D]")
    return paged_attention(q, k_cache, v_cache, block_tables, context_lens,
                           softmax_scale=softmax_scale, selected_positions=selected_positions,
                           num_selected=num_selected, num_splits=num_splits, out=out)


# --- cost formulas ---------------------------------------------------------------------------


def attended_pairs(context_lens: Sequence[int], num_draft: int) -> int:
    """(query, key) pairs: with c cached tokens including the k + 1 new ones, query t sees
    c - k + t keys, so a sequence gives (k + 1) * (c - k) + k * (k + 1) / 2."""
    k = num_draft
    return sum((k + 1) * (c - k) + k * (k + 1) // 2 for c in context_lens)


def flops(context_lens: Sequence[int], num_draft: int, q_heads: int, head_dim: int) -> int:
    """q k^T and p v: 2 * D FLOPs each per (query head, query token, visible key)."""
    return 4 * attended_pairs(context_lens, num_draft) * q_heads * head_dim


def bytes_moved(context_lens: Sequence[int], num_draft: int, q_heads: int, kv_heads: int,
                head_dim: int, elem_bytes: int = 2) -> int:
    """K and V of the whole context once per KV head, plus q in and o out for k + 1 tokens."""
    rows = len(context_lens) * (num_draft + 1)
    return (2 * sum(context_lens) * kv_heads + 2 * rows * q_heads) * head_dim * elem_bytes


# --- benchmark -------------------------------------------------------------------------------


def _bench() -> None:
    if not torch.cuda.is_available() or interpreting():
        print("spec_verify: no CUDA GPU (or TRITON_INTERPRET is set); nothing to benchmark")
        return
    device = torch.device("cuda")
    hq, hkv, d, page, ctx = 64, 8, 128, 16, 4096
    print(f"{'B':>4} {'k':>3} {'us':>8} {'TFLOP/s':>8} {'GB/s':>8}")
    for batch in (1, 16, 64):
        blocks_per_seq = triton.cdiv(ctx, page)
        k_cache = torch.randn(batch * blocks_per_seq, page, hkv, d, device=device,
                              dtype=torch.bfloat16)
        v_cache = torch.randn_like(k_cache)
        tables = torch.arange(batch * blocks_per_seq, device=device,
                              dtype=torch.int32).view(batch, -1)
        lens = torch.full((batch,), ctx, device=device, dtype=torch.int32)
        for k in (0, 3, 7):
            q = torch.randn(batch, k + 1, hq, d, device=device, dtype=torch.bfloat16)
            ms = triton.testing.do_bench(
                lambda q=q, kc=k_cache, vc=v_cache, t=tables, n=lens:
                spec_verify_attention(q, kc, vc, t, n))
            tflops = flops([ctx] * batch, k, hq, d) / ms * 1e-9
            gbs = bytes_moved([ctx] * batch, k, hq, hkv, d) / ms * 1e-6
            print(f"{batch:4d} {k:3d} {ms * 1e3:8.1f} {tflops:8.2f} {gbs:8.1f}")


if __name__ == "__main__":
    _bench()
