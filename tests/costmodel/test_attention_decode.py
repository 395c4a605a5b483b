"""Decode attention (flash-decoding on FA3), hand-computed: the tile work and the fp8 tile's own
efficiency, FA3's own KV splits inside vLLM's CUDA graphs, the varlen scheduler's walk over the
batch in every CTA, the last KV tile, and the scalar and array forms agreeing."""

from __future__ import annotations

import dataclasses
from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.efficiencies import Efficiencies, clock_scale
from costmodel.hardware import load_gpu

H100 = load_gpu("h100")  # 132 SMs, 989.4 TFLOP/s BF16, 1978.9 TFLOP/s FP8


def _max_blend(**kw) -> Efficiencies:
    """Memory and compute times combined by their maximum (p = 60), everything else default."""
    return replace(Efficiencies(), attn_decode_blend=60.0, **kw)


def test_fp8_decode_above_head_dim_192_pays_the_padded_tile_mma_after_the_loads():
    """64 sequences x 4096 keys, 16 query heads over 4 KV heads, head dim 256, fp8 cache: 256
    CTAs (no split), every SM busy. Each KV head's 4 query rows fill a 128-row tile; QK^T and PV
    cost 4 x 128 x 256 FLOPs per key and KV head: 4 x 128 x 256 x 262144 x 4 = 1.374e11 FLOPs,
    69.4 us at the full FP8 peak, 138.9 us at half of it: halving `attn_fp8_decode_eff` adds
    69.4 us to the kernel, which streams its KV cache after (not beside) that work."""
    args = (64, 64 * 4096.0, 1, 16, 4, 256, H100)
    full = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=1.0), kv_bytes=1.0)
    half = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=0.5), kv_bytes=1.0)
    flops = 4 * 128 * 256 * 262144 * 4
    assert flops / 1978.9e12 == pytest.approx(69.44e-6, rel=1e-3)
    assert half - full == pytest.approx(flops / 1978.9e12, rel=1e-9)


def test_fp8_decode_tile_work_runs_on_the_sms_that_have_a_cta():
    """One sequence, one KV head, 8 query heads, 65536 keys: a one-token batch runs in vLLM's
    CUDA graph, where FA3 splits it at most 32 ways: 32 CTAs on 132 SMs; the padded 128-row tile
    work, 4 x 128 x 256 x 65536 FLOPs, runs on 32 SMs."""
    args = (1, 65536.0, 1, 8, 1, 256, H100)
    full = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=1.0), kv_bytes=1.0)
    half = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=0.5), kv_bytes=1.0)
    assert half - full == pytest.approx(4 * 128 * 256 * 65536 / (1978.9e12 * 32 / 132),
                                        rel=1e-9)


@pytest.mark.parametrize(("head_dim", "kv_bytes"), [(256, 2.0), (192, 1.0), (128, 1.0),
                                                    (64, 1.0)])
def test_overlapping_decode_kernels_ignore_the_fp8_tile_efficiency(head_dim, kv_bytes):
    """Where FA3 overlaps the tile work with the loads (bf16, or fp8 up to head dim 192) the
    parameter does not enter."""
    args = (64, 64 * 4096.0, 1, 16, 4, head_dim, H100)
    a = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=1.0), kv_bytes=kv_bytes)
    b = at.decode_attn_time_s(*args, _max_blend(attn_fp8_decode_eff=0.1), kv_bytes=kv_bytes)
    assert a == b


@pytest.mark.parametrize("kv_bytes", [2.0, 1.0])
@pytest.mark.parametrize(("q_heads", "kv_heads", "head_dim"),
                         [(1, 1, 64), (8, 1, 128), (32, 8, 128), (16, 2, 192), (8, 2, 256),
                          (64, 4, 256), (40, 8, 64)])
def test_scalar_and_array_decode_agree(q_heads, kv_heads, head_dim, kv_bytes):
    rng = np.random.default_rng(11)
    eff = replace(Efficiencies(), attn_fp8_decode_eff=0.45, attn_decode_blend=1.7)
    b, ctx = rng.integers(1, 600, 40), rng.integers(1, 140000, 40)
    for q_tokens in (1, 3):
        v = at.decode_attn_time_s_v(b, b * ctx, q_tokens, q_heads, kv_heads, head_dim, H100, eff,
                                    kv_bytes, l2_warm=True)
        s = [at.decode_attn_time_s(int(x), float(x * c), q_tokens, q_heads, kv_heads, head_dim,
                                   H100, eff, kv_bytes, l2_warm=True)
             for x, c in zip(b, ctx, strict=True)]
        np.testing.assert_allclose(v, s, rtol=1e-12)


@pytest.mark.parametrize(("head_dim", "fp8", "keys"), [
    (64, False, 160),   # one query token: no causal mask, the paged tile widens to 160 keys
    (64, True, 160),
    (128, False, 128),  # vLLM keeps the causal mask at head dim 128: 128 keys
    (128, True, 160),   # fp8 keys are half the bytes: a wider tile
    (192, False, 96),
    (256, False, 80),   # shared memory limits the key tile
    (256, True, 128),
])
def test_decode_tile_keys_by_head_dim_and_cache_dtype(head_dim, fp8, keys):
    assert at.decode_tile_keys(head_dim, fp8) == keys
    v = at.decode_tile_keys(np.array([head_dim, head_dim]), np.array([fp8, fp8]))
    np.testing.assert_array_equal(v, [keys, keys])


def test_decode_kernel_ends_with_one_sm_loading_its_last_kv_tile():
    """A 1-key decode with no fixed times left is the last tile's load: 128 keys x (K + V) x 128
    x 2 B = 64 KiB for a bf16 cache at head dim 128, at 1/132 of 0.8 x 3.35 TB/s (20.3 GB/s):
    3.23 us; an fp8 cache at head dim 64: 160 x 2 x 64 x 1 B = 20 KiB, 1.01 us at 0.8 x."""
    eff = replace(Efficiencies(), attn_mem_eff=0.8, attn_fp8_mem_eff=0.8, attn_overhead_s=0.0,
                  attn_decode_cta_s=0.0, attn_decode_fp8_s=0.0, attn_decode_blend=60.0)
    share = 3.35e12 * 0.8 / 132
    one_cta = 3.35e12 * 0.8 / (eff.attn_ctas_per_sm * 132)  # the stream itself, 1 CTA
    bf16 = at.decode_attn_time_s(1, 1.0, 1, 1, 1, 128, H100, eff)
    assert 65536 / share == pytest.approx(3.229e-6, rel=1e-3)
    # + the stream: 1 key's K and V (512 B) and the query read and output written (512 B)
    assert bf16 == pytest.approx(65536 / share + 1024 / one_cta, rel=1e-9)
    fp8 = at.decode_attn_time_s(1, 1.0, 1, 1, 1, 64, H100, eff, kv_bytes=1.0)
    assert fp8 == pytest.approx(20480 / share + (128 + 256) / one_cta, rel=1e-9)


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


def _cta_part(n_seqs, kv_heads, head_dim, cta_s):
    """Seconds attn_decode_cta_s contributes: decode_attn_time_s with it at `cta_s` minus at 0."""
    gpu = load_gpu("h100-sxm")
    on = dataclasses.replace(Efficiencies(), attn_decode_cta_s=cta_s)
    off = dataclasses.replace(Efficiencies(), attn_decode_cta_s=0.0)
    args = (n_seqs, n_seqs * 4.0, 1, kv_heads * 8, kv_heads, head_dim, gpu)
    scalar = at.decode_attn_time_s(*args, on) - at.decode_attn_time_s(*args, off)
    array = (at.decode_attn_time_s_v(*args, on, 2.0) - at.decode_attn_time_s_v(*args, off, 2.0))
    return scalar, float(np.asarray(array).reshape(-1)[0]), clock_scale(gpu)


@pytest.mark.parametrize("n_seqs,scan", [(512, 1.0), (1024, 0.5)])
def test_scheduler_walk_is_charged_per_sequence(n_seqs, scan):
    """4 keys each: one KV tile, no split (graph: 512 x 1 x 4 x 1.1 / 132 tiles per SM >= 1),
    so CTAs = sequences x KV heads; at head dim 64 each costs 0.75 x attn_decode_cta_s, and
    each sequence `scan` x attn_decode_cta_s more (1 with the split scheduler inside vLLM's
    graph, 0.5 outside): 1 us x (512 x 2 x 0.75 + 512) = 1,280 us; 1024: 2,048 us."""
    scalar, array, cs = _cta_part(n_seqs, 2, 64, 1e-6)
    want = 1e-6 * (n_seqs * 2 * 0.75 + n_seqs * scan) * cs
    assert scalar == pytest.approx(want, rel=1e-9)
    assert array == pytest.approx(scalar, rel=1e-12)


def test_walk_does_not_scale_with_kv_heads():
    """Doubling the KV heads doubles the CTAs' share but not the walk's: 8 vs 4 KV heads at
    256 sequences differ by 256 x 4 x 0.75 x cta_s exactly."""
    a, _, cs = _cta_part(256, 8, 64, 1e-6)
    b, _, _ = _cta_part(256, 4, 64, 1e-6)
    assert a - b == pytest.approx(1e-6 * 256 * 4 * 0.75 * cs, rel=1e-9)
    assert b == pytest.approx(1e-6 * (256 * 4 * 0.75 + 256) * cs, rel=1e-9)
