"""Prefill attention, hand-computed: the KV-cache write's per-token CTAs (and an fp8 cache's own
cache-write CTAs and work items), the KV tiles a packed query tile spans under a sliding window
(as FlashAttention-3's n_block_min / n_block_max count them), and the scalar and array forms
agreeing."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.efficiencies import Efficiencies
from costmodel.hardware import load_gpu

H100 = load_gpu("h100")  # 132 SMs, 3.35 TB/s, boost clock 1.98 GHz (clock_scale 1.41 / 1.98)


CS = 1.41 / 1.98


@pytest.mark.parametrize(("kv_heads", "head_dim", "resident_per_sm"), [
    (1, 64, 32),    # 64 threads: the 32-CTA limit of an SM binds
    (1, 128, 16),   # 128 threads: 2048 / 128
    (2, 128, 8),
    (4, 128, 4),    # 512 threads
    (64, 128, 4),   # capped at 512 threads, each thread loops over more elements
])
def test_cache_write_ctas_resident_per_sm(kv_heads, head_dim, resident_per_sm):
    eff = replace(Efficiencies(), attn_cache_cta_s=4e-6)
    bw = 1e30  # bytes cost nothing: the CTA term alone is left
    t = at._cache_write_time(8192, kv_heads, head_dim, 1.0, bw, H100, eff, CS)
    expect = 8192 * 4e-6 * CS / (132 * resident_per_sm)
    assert t == pytest.approx(expect, rel=1e-12)
    tv = at._cache_write_time_v(np.array([8192.0]), np.array([kv_heads]), head_dim,
                                np.array([1.0]), bw, H100, eff, CS)
    assert tv[0] == pytest.approx(expect, rel=1e-12)


def test_prefill_pays_cache_ctas_when_they_exceed_the_bytes():
    """4 KV heads x 128: 8192 tokens write 8192 x 2 x 4 x 128 x (2 + 2) B = 33.6 MB, 12.8 us at
    0.78 x 3.35 TB/s, while 8192 CTAs, 528 at a time, 4 us each (at 1.41 GHz) take 44.2 us:
    the layer costs 44.2 - 12.8 us more than with free CTAs. With 64 KV heads the write moves
    205 us of bytes and the same CTAs hide under them."""
    base = replace(Efficiencies(), attn_mem_eff=0.78, attn_cache_cta_s=0.0)
    slow = replace(base, attn_cache_cta_s=4e-6)
    bw = 3.35e12 * 0.78
    ctas = 8192 * 4e-6 * CS / 528
    byts = 8192 * 2 * 4 * 128 * 4 / bw
    assert ctas == pytest.approx(44.19e-6, rel=1e-3)
    assert byts == pytest.approx(12.84e-6, rel=1e-3)
    d = (at.prefill_attn_time_s(8192, 0, 32, 4, 128, H100, slow)
         - at.prefill_attn_time_s(8192, 0, 32, 4, 128, H100, base))
    assert d == pytest.approx(ctas - byts, rel=1e-9)
    d64 = (at.prefill_attn_time_s(8192, 0, 64, 64, 128, H100, slow)
           - at.prefill_attn_time_s(8192, 0, 64, 64, 128, H100, base))
    assert d64 == pytest.approx(0.0, abs=1e-15)


def test_varlen_batch_writes_every_chunks_tokens():
    """The write is one kernel over all chunks' tokens: 4 chunks of 2048 cost what 8192 do."""
    base = replace(Efficiencies(), attn_cache_cta_s=0.0)
    slow = replace(base, attn_cache_cta_s=4e-6)
    chunks = [(2048, 0)] * 4
    d = (at.prefill_attn_batch_time_s(chunks, 8, 2, 128, H100, slow)
         - at.prefill_attn_batch_time_s(chunks, 8, 2, 128, H100, base))
    bw = H100.hbm_bw_bytes_s * base.attn_mem_eff
    assert d == pytest.approx(8192 * 4e-6 * CS / (132 * 8) - 8192 * 2 * 2 * 128 * 4 / bw,
                              rel=1e-9)


@pytest.mark.parametrize("kv_bytes", [2.0, 1.0])
@pytest.mark.parametrize(("q_heads", "kv_heads", "head_dim"),
                         [(1, 1, 64), (4, 1, 128), (16, 2, 128), (32, 4, 128), (64, 64, 128),
                          (8, 2, 256), (40, 8, 64)])
def test_scalar_and_array_prefill_agree(q_heads, kv_heads, head_dim, kv_bytes):
    rng = np.random.default_rng(7)
    eff = replace(Efficiencies(), attn_cache_cta_s=4e-6)
    chunk, prefix = rng.integers(1, 8192, 30), rng.integers(0, 4096, 30)
    v = at.prefill_attn_time_s_v(1, chunk, prefix, q_heads, kv_heads, head_dim, 0, H100, eff,
                                 kv_bytes)
    s = [at.prefill_attn_time_s(int(c), int(p), q_heads, kv_heads, head_dim, H100, eff, kv_bytes)
         for c, p in zip(chunk, prefix, strict=True)]
    np.testing.assert_allclose(v, s, rtol=1e-12)


def test_fp8_above_head_dim_192_adds_softmax_to_tensor_time():
    """FA3 turns its intra-warpgroup overlap off for an fp8 paged cache above head dim 192:
    per (query, key) pair, 4 x 256 / 0.5 = 2048 tensor FLOPs plus 256 of softmax = 2304, where
    bf16 at head dim 256 (and fp8 at 192) blend them: sqrt(2048^2 + 256^2) = 2063.9 at p = 2."""
    eff = replace(Efficiencies(), attn_compute_eff=0.5, attn_fp8_compute_eff=0.5,
                  attn_softmax_flops=256.0, attn_blend=2.0)
    unit = 128 * 128 * 132 / H100.bf16_flops  # seconds per FLOP-per-pair of a 128 x 128 tile
    assert at._tile_time(256, H100, eff, True) == pytest.approx(2304.0 * unit, rel=1e-12)
    assert at._tile_time(256, H100, eff, False) == pytest.approx(np.hypot(2048.0, 256.0) * unit,
                                                                 rel=1e-12)
    assert at._tile_time(192, H100, eff, True) == pytest.approx(np.hypot(1536.0, 256.0) * unit,
                                                                rel=1e-12)
    assert list(at.fa3_overlaps(np.array([64, 192, 256, 256]),
                                np.array([True, True, True, False]))) == [True, True, False, True]


def test_fp8_cache_write_ctas_take_their_own_time():
    """4 KV heads x 128: 512 threads per CTA, 4 resident per SM, 528 at once. 8192 tokens at
    6 us per fp8 CTA (at 1.41 GHz): 8192 x 6 us x 0.712 / 528 = 66.3 us; the bf16 CTA time
    (4 us: 44.2 us) no longer applies to an fp8 cache."""
    eff = replace(Efficiencies(), attn_cache_cta_s=4e-6, attn_fp8_cache_cta_s=6e-6)
    bw = 1e30  # bytes cost nothing: the CTA term alone is left
    fp8 = at._cache_write_time(8192, 4, 128, 1.0, bw, H100, eff, CS, True)
    bf16 = at._cache_write_time(8192, 4, 128, 1.0, bw, H100, eff, CS, False)
    assert fp8 == pytest.approx(66.29e-6, rel=1e-3)
    assert bf16 == pytest.approx(44.19e-6, rel=1e-3)
    tv = at._cache_write_time_v(np.array([8192.0, 8192.0]), 4, 128, np.array([1.0, 1.0]), bw,
                                H100, eff, CS, np.array([True, False]))
    np.testing.assert_allclose(tv, [fp8, bf16], rtol=1e-12)


@pytest.mark.parametrize("kv_bytes", [1.0, 2.0])
def test_prefill_pays_fp8_cache_ctas_only_with_an_fp8_cache(kv_bytes):
    """One 8192-token prompt, 32 query heads over 4 KV heads x 128. The fp8 write moves
    8192 x 2 x 4 x 128 x 3 B = 25.2 MB (9.6 us at 0.78 x 3.35 TB/s), less than its CTAs take
    at 2 us (22.1 us) or 6 us (66.3 us): raising `attn_fp8_cache_cta_s` from 2 to 6 us adds
    8192 x 4 us x 0.712 / 528 = 44.2 us to an fp8 layer and nothing to a bf16 one."""
    lo = replace(Efficiencies(), attn_mem_eff=0.78, attn_fp8_cache_cta_s=2e-6)
    hi = replace(lo, attn_fp8_cache_cta_s=6e-6)
    args = (((8192, 0),), 32, 4, 128, H100)
    d = (at.prefill_attn_batch_time_s(*args, hi, kv_bytes)
         - at.prefill_attn_batch_time_s(*args, lo, kv_bytes))
    assert d == pytest.approx(44.19e-6 if kv_bytes < 2 else 0.0, rel=1e-3, abs=1e-15)
    for eff in (lo, hi):
        s = at.prefill_attn_batch_time_s(*args, eff, kv_bytes)
        v = at.prefill_attn_time_s_v(1.0, 8192.0, 0.0, 32, 4, 128, 0.0, H100, eff, kv_bytes)
        assert float(v) == pytest.approx(s, rel=1e-12)


@pytest.mark.parametrize("kv_bytes", [1.0, 2.0])
def test_fp8_work_items_take_their_own_time(kv_bytes):
    """One 8192-token prompt, 32 query heads over 4 KV heads x 128: 8 query heads packed per
    128-row tile, 8192 x 8 / 128 = 512 items per KV head, 2048 on 132 SMs. Raising
    `attn_fp8_tile_s` from 1 to 3 us (at 1.41 GHz) adds 2048 x 2 us x 0.712 / 132 = 22.1 us to
    an fp8 layer (compute-bound, times combined by their maximum) and nothing to a bf16 one."""
    lo = replace(Efficiencies(), attn_blend=60.0, attn_fp8_tile_s=1e-6)
    hi = replace(lo, attn_fp8_tile_s=3e-6)
    args = (((8192, 0),), 32, 4, 128, H100)
    d = (at.prefill_attn_batch_time_s(*args, hi, kv_bytes)
         - at.prefill_attn_batch_time_s(*args, lo, kv_bytes))
    assert d == pytest.approx(22.10e-6 if kv_bytes < 2 else 0.0, rel=1e-3, abs=1e-15)


def test_scalar_and_array_prefill_agree_with_fp8_parameters_apart():
    rng = np.random.default_rng(5)
    eff = replace(Efficiencies(), attn_fp8_tile_s=3e-6, attn_tile_s=5e-6,
                  attn_fp8_cache_cta_s=5e-6, attn_cache_cta_s=4e-6)
    for head_dim in (64, 128, 256):
        for kv_bytes in (1.0, 2.0):
            for q_heads, kv_heads in ((8, 8), (32, 4), (64, 1)):
                chunk = rng.integers(1, 20000, 12).astype(float)
                prefix = rng.integers(0, 20000, 12).astype(float)
                v = at.prefill_attn_time_s_v(1.0, chunk, prefix, q_heads, kv_heads, head_dim,
                                             0.0, H100, eff, kv_bytes)
                s = [at.prefill_attn_time_s(int(c), int(p), q_heads, kv_heads, head_dim, H100,
                                            eff, kv_bytes) for c, p in zip(chunk, prefix, strict=True)]
                np.testing.assert_allclose(v, s, rtol=1e-12)


def _fa3_tiles(chunk, prefix, window, g, bm, bn):
    """Reference: per packed query tile, its first and last query token (rows / g), the keys
    from `window` before the first to the last, rounded out to whole `bn`-key tiles."""
    total = 0
    for m in range(math.ceil(chunk * g / bm)):
        first = m * bm // g
        last = (min((m + 1) * bm, chunk * g) - 1) // g + 1
        hi = min(math.ceil((chunk + prefix) / bn), math.ceil((last + prefix) / bn))
        total += hi - max(0, (first + prefix - window) // bn)
    return total


def test_window_tiles_at_four_heads_per_kv_head():
    """fp8 head dim 128 tile (128 rows, 160 keys), 4 query heads per KV head: each query tile
    holds 32 tokens. 160 tokens after 1,600 cached: tiles end at keys 1632, 1664, 1696, 1728,
    1760 and start 128 keys before their first token (1472 ... 1600): KV tiles 9-10 (x4) and
    10 alone for the last, whose end falls on a tile boundary: 9 tiles, not 5 x 2 = 10."""
    total, _ = at._kv_tiles(160.0, 1600.0, 128.0, 4.0, 128.0, 160.0)
    assert float(total) == pytest.approx(9.0)
    assert _fa3_tiles(160, 1600, 128, 4, 128, 160) == 9


def test_window_tiles_when_tiles_align():
    """bf16 tile 128 x 128, no packing, window 128, prefix a multiple of 128: every query tile
    spans exactly its own KV tile and the one before it, 2 each (never 3)."""
    total, _ = at._kv_tiles(1024.0, 1280.0, 128.0, 1.0, 128.0, 128.0)
    assert float(total) == pytest.approx(16.0)


@pytest.mark.parametrize("g", [1, 2, 3, 4, 5, 6, 8, 12, 16])
def test_window_tiles_match_fa3_over_long_chunks(g):
    """Over a long chunk the mean tiles per query tile agree with FA3's block bounds within 1%
    (the closed form uses the mean rounding of the tiles' ends)."""
    ref = _fa3_tiles(8192, 0, 128, g, 128, 160)
    total, _ = at._kv_tiles(np.array([8192.0]), 0.0, np.array([128.0]), float(g), 128.0, 160.0)
    assert float(total[0]) == pytest.approx(ref, rel=0.01)
