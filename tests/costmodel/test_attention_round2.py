"""Decode attention in vLLM's CUDA graphs: FlashAttention-3's own KV splits (hand-computed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

H100 = load_gpu("h100")  # 132 SMs, 3.35 TB/s


@pytest.mark.parametrize(("n_seqs", "kv_heads", "ctx", "keys", "splits"), [
    # 1024 tiles; an SM's share ceil(1024 x 1.1 / 132) = 9; 1024 / 9 -> 114, capped at 32
    (1, 1, 131072, 128, 32),
    (4, 1, 131072, 128, 30),   # share ceil(4096 x 1.1 / 132) = 35; ceil(1024 / 35) = 30
    (16, 1, 131072, 128, 8),   # share 137; ceil(1024 / 137) = 8
    (64, 8, 4096, 128, 1),     # 32 tiles each, share 137: no split
    (1, 1, 200, 128, 2),       # 2 tiles, share 1: one split per tile
    (1, 2, 131072, 160, 32),   # fp8 at head dim 128: 820 tiles of 160 keys, share 14 -> 59 -> 32
])
def test_graph_splits_follow_fa3_scheduler(n_seqs, kv_heads, ctx, keys, splits):
    assert at.fa3_graph_splits(n_seqs, kv_heads, float(ctx), keys, 132) == splits
    v = at.fa3_graph_splits(np.array([n_seqs, n_seqs]), kv_heads, np.array([ctx, ctx], float),
                            np.array([keys, keys], float), 132)
    np.testing.assert_array_equal(v, [splits, splits])


def test_single_long_sequence_runs_on_32_ctas_in_a_graph():
    """One sequence, one KV head (head dim 128, bf16), 131072 keys: 32 CTAs, not 128 (the old
    fill-the-SMs rule). At 1 CTA per SM for `attn_mem_eff` 0.8 the stream reads the 67.1 MB
    cache at 0.8 x 3.35 TB/s x 32 / 132 = 0.650 TB/s: 103.3 us; plus the last 64 KiB tile at
    1/132 of 0.8 x 3.35 TB/s: 3.23 us."""
    eff = replace(Efficiencies(), attn_mem_eff=0.8, attn_ctas_per_sm=1.0, attn_overhead_s=0.0,
                  attn_decode_cta_s=0.0, elem_overhead_s=0.0, attn_decode_blend=60.0)
    kv = 131072 * 2 * 128 * 2
    bw = 3.35e12 * 0.8 * 32 / 132
    expect = (kv + 512) / bw + 65536 * 132 / (3.35e12 * 0.8)
    assert expect == pytest.approx(106.5e-6, rel=1e-3)
    t = at.decode_attn_time_s(1, 131072.0, 1, 1, 1, 128, H100, eff)
    assert t == pytest.approx(expect, rel=1e-6)


def test_batches_past_512_tokens_keep_fa3_heuristic():
    """64 sequences x 9 query tokens (576 > 512 tokens) run outside the graph: FA3's heuristic
    gives ceil(132 / 64) = 3 splits; at 8 tokens (512) the graph's scheduler gives
    ceil(1024 / ceil(64 x 1024 x 1.1 / 132) = 547) = 2. A split's CTAs only change the
    bandwidth below `attn_ctas_per_sm` x SMs, so set that high: time goes as 1 / CTAs."""
    eff = replace(Efficiencies(), attn_ctas_per_sm=8.0, attn_overhead_s=0.0, attn_decode_cta_s=0.0,
                  elem_overhead_s=0.0, attn_decode_blend=60.0, attn_mem_eff=0.8)
    bw1 = 3.35e12 * 0.8 / (8.0 * 132)  # one CTA's share
    last = 65536 * 132 / (3.35e12 * 0.8)
    for q_tokens, ctas in ((8, 128), (9, 192)):
        kv = 64 * 131072 * 2 * 128 * 2
        q = 64 * q_tokens * 1 * 128 * 4
        t = at.decode_attn_time_s(64, 64 * 131072.0, q_tokens, 1, 1, 128, H100, eff)
        assert t == pytest.approx((kv + q) / (bw1 * ctas) + last, rel=1e-3)


@pytest.mark.parametrize("kv_bytes", [2.0, 1.0])
@pytest.mark.parametrize("head_dim", [64, 128, 192, 256])
def test_scalar_and_array_decode_agree_around_the_graph_bound(head_dim, kv_bytes):
    rng = np.random.default_rng(3)
    eff = Efficiencies()
    b = np.concatenate([[1, 2, 255, 256, 257, 511, 512, 513, 1024], rng.integers(1, 700, 20)])
    ctx = rng.integers(1, 140000, len(b))
    for q_tokens in (1, 2):
        v = at.decode_attn_time_s_v(b, b * ctx, q_tokens, 16, 2, head_dim, H100, eff, kv_bytes,
                                    l2_warm=True)
        s = [at.decode_attn_time_s(int(x), float(x * c), q_tokens, 16, 2, head_dim, H100, eff,
                                   kv_bytes, l2_warm=True) for x, c in zip(b, ctx, strict=True)]
        np.testing.assert_allclose(v, s, rtol=1e-12)
