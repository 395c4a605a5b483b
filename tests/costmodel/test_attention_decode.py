"""Decode attention (flash-decoding on FA3): hand-computed tile work, scalar = array forms."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

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
