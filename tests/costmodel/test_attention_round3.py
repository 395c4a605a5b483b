"""Prefill attention over an fp8 KV cache: its own cache-write CTAs and work items
(hand-computed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

H100 = load_gpu("h100")  # 132 SMs, 3.35 TB/s, boost clock 1.98 GHz (clock_scale 1.41 / 1.98)
CS = 1.41 / 1.98


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
