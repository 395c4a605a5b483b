"""Prefill attention's side kernels: the KV-cache write's per-token CTAs (hand-computed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

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
