"""Kernel-level structure of the roofline: W8A8 tiles by M, split-K only where faster, flash-
attention KV-tile counts, flash-decoding splits and L2 residency of a looped kernel."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.efficiencies import Efficiencies
from costmodel.hardware import load_gpu

H100 = load_gpu("h100")


def _compute_only():
    gpu = replace(H100, hbm_bw_bytes_s=1e24)  # memory time ~0: compute alone is left
    eff = replace(Efficiencies(), kernel_overhead_s=0.0, fp8_quant_row_s=0.0, fp8_power_slow=0.0,
                  fp8_partial_slow=0.0)
    return gpu, eff


@pytest.mark.parametrize(("m", "tile"), [(1, (64, 64)), (64, (64, 64)), (65, (64, 128)),
                                         (128, (64, 128)), (129, (128, 128))])
def test_fp8_gemm_tile_by_m_and_no_split_k(m, tile):
    gpu, eff = _compute_only()
    n, k = 32, 65536  # one tile in N; a cuBLAS-like kernel would split this K
    t = rl.gemm_time_s(m, n, k, gpu, eff, gpu.fp8_flops, 1.0, 1.0, fp8=True)
    ctas = -(-m // tile[0])  # one wave: each SM runs at most one tile of the whole K
    assert ctas <= gpu.sm_count
    per_sm = 2.0 * tile[0] * tile[1] * k / (gpu.fp8_flops / gpu.sm_count * eff.fp8_compute_eff)
    assert t == pytest.approx(per_sm, rel=1e-9)


def test_fp8_gemm_pays_its_whole_last_wave():
    gpu, eff = _compute_only()
    # 128 x 128 tiles: m = 1024 -> 8 x 32 = 256 CTAs (2 waves), m = 1025 -> 288 CTAs (3 waves)
    t = [rl.gemm_time_s(m, 4096, 4096, gpu, eff, gpu.fp8_flops, 1.0, 1.0, fp8=True)
         for m in (1024, 1025)]
    assert t[1] / t[0] == pytest.approx(1.5, rel=1e-9)


def test_split_k_only_where_it_is_faster():
    eff = Efficiencies()
    ko = eff.kernel_overhead_s * rl.clock_scale(H100)
    # a tiny GEMM: splitting K would only add the reduction kernel's fixed time
    t = rl.gemm_time_s(1, 32, 1024, H100, eff, H100.bf16_flops, 2.0)
    assert ko < t < 2 * ko
    # a long K over one tile: the split (2 kernels) beats one CTA streaming all of K
    t2 = rl.gemm_time_s(1, 32, 65536, H100, eff, H100.bf16_flops, 2.0)
    one = replace(eff, kernel_overhead_s=1.0)  # make the reduction kernel prohibitive
    t_nosplit = rl.gemm_time_s(1, 32, 65536, H100, one, H100.bf16_flops, 2.0) - 1.0 * rl.clock_scale(H100)
    assert t2 < t_nosplit


def test_kv_tiles_hand_counted():
    # 256 causal tokens: query tile 1 sees 1 KV tile, tile 2 sees 2
    tot, last = at._kv_tiles(np.array([256.0]), np.array([0.0]), np.array([0.0]))
    assert (tot[0], last[0]) == (3.0, 2.0)
    # 128 new tokens after 512 cached: one query tile over 4 + 1 KV tiles
    tot, last = at._kv_tiles(np.array([128.0]), np.array([512.0]), np.array([0.0]))
    assert (tot[0], last[0]) == (5.0, 5.0)
    # window 128 over 1024 tokens: query tile m spans keys 128m - 128 .. 128m + 127, KV tiles
    # m - 1 and m (tile ends on tile boundaries: FA3's n_block_min / n_block_max): 2 each
    tot, last = at._kv_tiles(np.array([1024.0]), np.array([0.0]), np.array([128.0]))
    assert (tot[0], last[0]) == (1 + 2 * 7, 2.0)


def test_decode_splits_fill_the_sms():
    assert at._decode_splits(8, 131072, 132) == 17  # ceil(132 / 8)
    assert at._decode_splits(8, 200, 132) == 2  # at most one split per 128-token KV tile
    assert at._decode_splits(128, 131072, 132) == 1  # >= 0.8 x SMs already


def test_looped_decode_kernel_reads_a_small_kv_cache_from_l2():
    eff = Efficiencies()
    small, big = 1000, 200_000  # KV of 1 sequence x 8 heads x 128 x 2 x 2 B: 4 MB, 819 MB
    for ctx, faster in ((small, True), (big, False)):
        cold = at.decode_attn_time_s(1, ctx, 1, 64, 8, 128, H100, eff)
        warm = at.decode_attn_time_s(1, ctx, 1, 64, 8, 128, H100, eff, l2_warm=True)
        assert (warm < cold) == faster
        v = at.decode_attn_time_s_v([1], [ctx], 1, 64, 8, 128, H100, eff, 2.0, l2_warm=True)
        assert v[0] == pytest.approx(warm, rel=1e-12)


@pytest.mark.parametrize("kv_bytes", [2.0, 1.0])
def test_scalar_and_array_attention_agree_with_fp8_cache_and_gqa(kv_bytes):
    rng = np.random.default_rng(7)
    eff = Efficiencies()
    chunk, prefix = rng.integers(1, 4096, 30), rng.integers(0, 4096, 30)
    v = at.prefill_attn_time_s_v(1, chunk, prefix, 40, 8, 64, 0, H100, eff, kv_bytes)
    s = [at.prefill_attn_time_s(int(c), int(p), 40, 8, 64, H100, eff, kv_bytes)
         for c, p in zip(chunk, prefix, strict=True)]
    np.testing.assert_allclose(v, s, rtol=1e-12)
    b, ctx = rng.integers(1, 300, 30), rng.integers(1, 70000, 30)
    v = at.decode_attn_time_s_v(b, b * ctx, 1, 40, 8, 64, H100, eff, kv_bytes, l2_warm=True)
    s = [at.decode_attn_time_s(int(x), float(x * c), 1, 40, 8, 64, H100, eff, kv_bytes, l2_warm=True)
         for x, c in zip(b, ctx, strict=True)]
    np.testing.assert_allclose(v, s, rtol=1e-12)


def test_fa3_tile_table_by_head_dim_and_cache_dtype():
    from costmodel.attention import _fa3_tile_v, fa3_tile

    assert fa3_tile(128, False) == (128, 128)
    assert fa3_tile(128, True) == (128, 160)  # fp8 keys are half the bytes: wider key tile
    assert fa3_tile(64, False) == (192, 128)
    assert fa3_tile(256, False) == (128, 80)  # shared memory limits the key tile
    assert fa3_tile(256, True, local=True) == (128, 64)
    for hd in (64, 96, 128, 192, 256):
        for fp8 in (False, True):
            for local in (False, True):
                bm, bn = _fa3_tile_v(np.array([hd]), np.array([fp8]), np.array([local]))
                assert (bm[0], bn[0]) == fa3_tile(hd, fp8, local)


def test_packed_gqa_kv_tiles_hand_counted():
    # 128 tokens x 4 query heads per KV head = 512 rows: 4 tiles of 32 tokens, each within the
    # first 128-key tile
    tot, last = at._kv_tiles(np.array([128.0]), np.array([0.0]), np.array([0.0]), 4.0, 128.0, 128.0)
    assert (tot[0], last[0]) == (4.0, 1.0)
    # 256 tokens, 160-key tiles: tiles ending at 32..160 see 1 key tile, 192..256 see 2: 11;
    # the closed form counts the diagonal's rounding on average (0.4 tile per query tile)
    tot, last = at._kv_tiles(np.array([256.0]), np.array([0.0]), np.array([0.0]), 4.0, 128.0, 160.0)
    assert tot[0] == pytest.approx(11.0, rel=0.06) and last[0] == 2.0


def test_fp8_cache_decode_reads_at_its_own_bandwidth_efficiency():
    """A bandwidth-bound decode (256 sequences x 8k keys): the fp8 cache moves half the bytes at
    `attn_fp8_mem_eff`, the bf16 cache all of them at `attn_mem_eff`."""
    eff = replace(Efficiencies(), attn_mem_eff=0.9, attn_fp8_mem_eff=0.6, attn_overhead_s=0.0,
                  attn_decode_cta_s=0.0, attn_decode_fp8_s=0.0, attn_compute_eff=1.0)
    args = (256, 256 * 8192.0, 1, 32, 8, 128, H100)
    bf16 = at.decode_attn_time_s(*args, eff, kv_bytes=2.0)
    fp8 = at.decode_attn_time_s(*args, eff, kv_bytes=1.0)
    kv = 256 * 8192 * 2 * 8 * 128
    assert bf16 == pytest.approx(kv * 2 / (H100.hbm_bw_bytes_s * 0.9), rel=0.05)
    assert fp8 == pytest.approx(kv * 1 / (H100.hbm_bw_bytes_s * 0.6), rel=0.05)
    # each dtype answers to its own parameter only
    assert at.decode_attn_time_s(*args, replace(eff, attn_fp8_mem_eff=0.3), kv_bytes=2.0) == bf16
    assert at.decode_attn_time_s(*args, replace(eff, attn_mem_eff=0.3), kv_bytes=1.0) == fp8
    v = at.decode_attn_time_s_v(np.array([256, 256]), np.array([256 * 8192.0] * 2), 1, 32, 8, 128,
                                H100, eff, np.array([2.0, 1.0]))
    np.testing.assert_allclose(v, [bf16, fp8], rtol=1e-12)


def test_windowed_decode_row_reads_one_tile_past_the_window():
    """A measured decode row with a 128-key window over an 8k context costs what 128 + 128 keys
    cost without a window (the window starts mid-tile); a context inside the window is whole."""
    import pandas as pd

    from costmodel.importers import COLUMNS
    from costmodel.measured import predict_rows

    def row(ctx, window):
        d = {c: 0 for c in COLUMNS}
        d.update(source="t", row_id=f"t:{ctx}:{window}", gpu="h100-sxm", model="", kernel="",
                 op="attn_decode", precision="bf16", kv_dtype="bf16", tp=1, pp=1, num_gpus=1,
                 batch_size=64, context_len=ctx, num_heads=32, num_kv_heads=8, head_dim=128,
                 window=window, measured_s=1e-5)
        return d

    rows = pd.DataFrame([row(8192, 128), row(256, 0), row(100, 128), row(100, 0)])[list(COLUMNS)]
    t = predict_rows(rows)
    assert t[0] == pytest.approx(t[1], rel=1e-12)
    assert t[2] == pytest.approx(t[3], rel=1e-12)


def test_bf16_gemm_pads_m_to_64_rows():
    """M = 129 computes 192 rows (64-row padding), not 256: in a compute-bound, one-wave case
    the time is 192/256 of M = 256's, and M = 192 costs the same as M = 129."""
    gpu, eff = _compute_only()
    eff = replace(eff, kernel_overhead_s=0.0, gemm_wave_exp=0.0)
    n, k = 4096, 16384  # 2 x 32 tiles of 128 x 128 for each M: the same waves and split-K
    t = {m: rl.gemm_time_s(m, n, k, gpu, eff, gpu.bf16_flops, 2.0) for m in (129, 192, 256)}
    assert t[129] == pytest.approx(t[192], rel=1e-12)
    assert t[129] / t[256] == pytest.approx(192 / 256, rel=1e-9)
    v = rl.gemm_time_s_v(np.array([129, 192, 256]), n, k, gpu, eff, gpu.bf16_flops, 2.0)
    np.testing.assert_allclose(v, [t[129], t[192], t[256]], rtol=1e-12)


def test_prefill_and_decode_kernels_answer_to_their_own_parameters():
    """Decode's blend, per-CTA time and fp8 fixed time are its own; prefill's are its own."""
    base = Efficiencies()
    dec = dict(attn_decode_blend=1.5, attn_decode_cta_s=3e-6, attn_decode_fp8_s=9e-6)
    pre = dict(attn_blend=1.5, attn_per_seq_s=3e-6, attn_fp8_kv_s=9e-6)
    for kv in (2.0, 1.0):
        d0 = at.decode_attn_time_s(64, 64 * 4096.0, 1, 32, 8, 128, H100, base, kv_bytes=kv)
        p0 = at.prefill_attn_time_s(1024, 0, 32, 8, 128, H100, base, kv_bytes=kv)
        assert at.decode_attn_time_s(64, 64 * 4096.0, 1, 32, 8, 128, H100, replace(base, **pre),
                                     kv_bytes=kv) == d0
        assert at.prefill_attn_time_s(1024, 0, 32, 8, 128, H100, replace(base, **dec),
                                      kv_bytes=kv) == p0
        assert at.decode_attn_time_s(64, 64 * 4096.0, 1, 32, 8, 128, H100, replace(base, **dec),
                                     kv_bytes=kv) != d0
        assert at.prefill_attn_time_s(1024, 0, 32, 8, 128, H100, replace(base, **pre),
                                      kv_bytes=kv) != p0
    # the decode CTA time by hand: 64 x 8 = 512 CTAs (no split), x (0.5 + 128 / 256), and the
    # scheduler's walk, 1 x attn_decode_cta_s per sequence in a graph batch: 512 + 64
    e = replace(base, attn_decode_cta_s=1e-6)
    extra = at.decode_attn_time_s(64, 64 * 4096.0, 1, 32, 8, 128, H100, e) \
        - at.decode_attn_time_s(64, 64 * 4096.0, 1, 32, 8, 128, H100, replace(e, attn_decode_cta_s=0.0))
    assert extra == pytest.approx((512 + 64) * 1e-6 * rl.clock_scale(H100), rel=1e-9)


@pytest.mark.parametrize(("m", "n", "ctas"), [
    (16, 512, 8),      # 1 x 8 tiles of 64 x 64: already one 1 x 8 cluster
    (16, 320, 8),      # 5 N-tiles rounded up to a cluster of 8
    (100, 1024, 16),   # 2 x 8 tiles of 64 x 128
    (256, 1024, 16),   # 2 x 8 tiles of 128 x 128
    (257, 1024, 32),   # 3 M-tiles rounded up to 4 (2 x 1 clusters)
])
def test_fp8_gemm_grid_is_whole_clusters(m, n, ctas):
    tm, tn = rl._fp8_tile(m)
    assert int(rl._fp8_ctas(m, n, tm, tn)) == ctas
    np.testing.assert_array_equal(rl._fp8_ctas(np.array([m]), np.array([n]), tm, tn), [ctas])


def test_fp8_gemm_one_row_past_256_costs_a_cluster_not_a_tile():
    """Compute-bound, N = 16384 (128 N-tiles): M = 256 runs 256 CTAs (2 waves on 132 SMs),
    M = 257 runs 4 x 128 = 512 like M = 512 (4 waves; 3 x 128 = 384 tiles would be 3)."""
    gpu, eff = _compute_only()
    t = {m: rl.gemm_time_s(m, 16384, 8192, gpu, eff, gpu.fp8_flops, 1.0, 1.0, fp8=True)
         for m in (256, 257, 512)}
    assert t[257] == pytest.approx(t[512], rel=1e-12)
    assert t[257] / t[256] == pytest.approx(2.0, rel=1e-9)
    v = rl.gemm_time_s_v(np.array([256, 257, 512]), 16384, 8192, gpu, eff, gpu.fp8_flops, 1.0,
                         1.0, True)
    np.testing.assert_allclose(v, [t[256], t[257], t[512]], rtol=1e-12)


def test_fp8_gemm_slows_to_its_sustained_rate_as_the_kernel_lengthens():
    """t_c x (1 + slow x (1 - exp(-t_c / tau))): a short kernel runs at `fp8_compute_eff`, a long
    one `1 + slow` times slower; bf16 GEMMs are untouched."""
    gpu, eff = _compute_only()
    hot = replace(eff, fp8_power_slow=0.5, fp8_power_tau_s=1e-3)
    for m, n, k in ((4096, 8192, 8192), (16384, 16384, 16384)):
        cool = rl.gemm_time_s(m, n, k, gpu, eff, gpu.fp8_flops, 1.0, 1.0, fp8=True)
        got = rl.gemm_time_s(m, n, k, gpu, hot, gpu.fp8_flops, 1.0, 1.0, fp8=True)
        assert got == pytest.approx(cool * (1 + 0.5 * (1 - np.exp(-cool / 1e-3))), rel=1e-9)
        v = rl.gemm_time_s_v(np.array([m]), n, k, gpu, hot, gpu.fp8_flops, 1.0, 1.0, True)
        assert v[0] == pytest.approx(got, rel=1e-12)
    assert rl.gemm_time_s(4096, 8192, 8192, gpu, hot, gpu.bf16_flops, 2.0) == \
        rl.gemm_time_s(4096, 8192, 8192, gpu, eff, gpu.bf16_flops, 2.0)


@pytest.mark.parametrize("k", [256, 4096, 16384])
def test_bf16_gemm_overlap_grows_with_the_k_loop(k):
    """p = gemm_blend x (1 + K / gemm_overlap_k): hand-computed p-norm of compute and memory
    time for a 4096 x 4096 GEMM (1,024 tiles, no split-K, waves not felt at wave_exp 0)."""
    eff = replace(Efficiencies(), kernel_overhead_s=0.0, gemm_wave_exp=0.0, gemm_blend=2.0,
                  gemm_overlap_k=1000.0, gemm_compute_eff=0.8, gemm_mem_eff=0.9)
    m = n = 4096
    t_c = 2.0 * m * n * k / (H100.bf16_flops * 0.8)
    t_m = (m * k * 2.0 + m * n * 2.0 + k * n * 2.0) / (H100.hbm_bw_bytes_s * 0.9)
    p = 2.0 * (1.0 + k / 1000.0)
    want = (t_c ** p + t_m ** p) ** (1.0 / p)
    assert rl.gemm_time_s(m, n, k, H100, eff, H100.bf16_flops, 2.0) == pytest.approx(want, rel=1e-9)
    v = rl.gemm_time_s_v(np.array([m]), n, k, H100, eff, H100.bf16_flops, 2.0)
    assert v[0] == pytest.approx(want, rel=1e-9)
