"""GEMM tiles, hand-computed: the W8A8 (fp8) kernel's partly empty last M tile slows its main loop
(`fp8_partial_slow`, on a compute-only H100), and a bf16 GEMM with few CTAs is bounded by each
CTA's whole-tile stream (`gemm_tile_load`, on a memory-only H100); scalar and array forms agree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import roofline as rl
from costmodel.efficiencies import Efficiencies
from costmodel.hardware import load_gpu

H100 = load_gpu("h100")


def _compute_only(partial: float):
    gpu = replace(H100, hbm_bw_bytes_s=1e24)  # memory time ~0: compute alone is left
    eff = replace(Efficiencies(), kernel_overhead_s=0.0, fp8_quant_row_s=0.0, fp8_power_slow=0.0,
                  fp8_partial_slow=partial)
    return gpu, eff


def _fp8(m, gpu, eff, n=4096, k=4096):
    return rl.gemm_time_s(m, n, k, gpu, eff, gpu.fp8_flops, 1.0, 1.0, fp8=True)


@pytest.mark.parametrize(("m", "empty"), [(129, 127 / 128), (192, 0.5), (256, 0.0),
                                          (257, 127 / 128), (65, 63 / 64), (128, 0.0),
                                          (1, 0.0), (17, 0.0)])
def test_partial_last_m_tile_slows_compute_by_its_empty_share(m, empty):
    gpu, eff0 = _compute_only(0.0)
    _, eff = _compute_only(0.5)
    # 129 rows: 2 x 32 tiles of 128 x 128, one wave either way; the second M tile holds 1 row,
    # so the main loop runs x (1 + 0.5 x 127/128). Up to 64 rows (1 x 8 clusters) no change.
    assert _fp8(m, gpu, eff) / _fp8(m, gpu, eff0) == pytest.approx(1.0 + 0.5 * empty, rel=1e-12)


def test_m_129_costs_more_than_m_256_with_the_same_grid():
    gpu, eff = _compute_only(0.2)
    assert _fp8(129, gpu, eff) == pytest.approx(_fp8(256, gpu, eff) * (1 + 0.2 * 127 / 128))


def test_default_leaves_full_tiles_unchanged():
    gpu, eff = _compute_only(Efficiencies().fp8_partial_slow)
    gpu, eff0 = _compute_only(0.0)
    assert _fp8(1024, gpu, eff) == _fp8(1024, gpu, eff0)


def test_scalar_and_array_fp8_gemm_agree():
    eff = replace(Efficiencies(), fp8_partial_slow=0.3, fp8_power_slow=0.4, fp8_power_tau_s=1e-4)
    m = np.array([1, 17, 64, 65, 100, 128, 129, 192, 256, 257, 769, 1024, 1025, 4097])
    n = np.array([4096, 16384, 1024, 8192, 128, 57344, 16384, 2048, 16384, 16384, 16384, 7168, 512,
                  28672])
    k = np.array([4096, 16384, 8192, 1024, 7168, 8192, 16384, 4096, 16384, 16384, 16384, 2048,
                  65536, 8192])
    for fp8 in (True, False):
        peak = H100.fp8_flops if fp8 else H100.bf16_flops
        wb, ab = (1.0, 1.0) if fp8 else (2.0, 2.0)
        v = rl.gemm_time_s_v(m, n, k, H100, eff, peak, wb, ab, fp8)
        s = [rl.gemm_time_s(int(a), int(b), int(c), H100, eff, peak, wb, ab, fp8)
             for a, b, c in zip(m, n, k, strict=True)]
        np.testing.assert_allclose(v, s, rtol=1e-12)


def _memory_only(tile_load: float):
    eff = replace(Efficiencies(), kernel_overhead_s=0.0, gemm_tile_load=tile_load)
    return eff


def _bf16(m, n, k, eff, peak=1e30):
    return rl.gemm_time_s(m, n, k, H100, eff, peak, 2.0, 2.0)


def test_one_cta_gemm_is_bounded_by_its_tile_stream():
    eff = _memory_only(1.0)
    # M = 2, N = 32, K = 512: one 128 x 128 tile, no split-K (K // 512 = 1). M pads to 64 rows.
    # Tile stream: 512 steps x (64 + 32) elements x 2 B = 98,304 B, against 34,944 B of matrices
    # (2x512 + 2x32 + 512x32, 2 B each). One CTA loads at bw x mem_eff / (ctas_per_sm x SMs).
    per_cta_bw = H100.hbm_bw_bytes_s * eff.gemm_mem_eff / (eff.gemm_ctas_per_sm * H100.sm_count)
    assert _bf16(2, 32, 512, eff) == pytest.approx(98_304 / per_cta_bw, rel=1e-12)


def test_tile_stream_scales_with_gemm_tile_load():
    # at 0.25 the tile stream (24,576 B) falls below the matrix bytes (34,944 B): matrices decide
    eff = _memory_only(0.25)
    per_cta_bw = H100.hbm_bw_bytes_s * eff.gemm_mem_eff / (eff.gemm_ctas_per_sm * H100.sm_count)
    assert _bf16(2, 32, 512, eff) == pytest.approx(34_944 / per_cta_bw, rel=1e-12)


def test_many_cta_gemm_unchanged():
    # 4096^3: 1,024 tiles reach full bandwidth; the matrix bytes (100 MB) exceed the tile stream
    # x ctas_per_sm x SMs (4096 x 512 B x 15.6 = 33 MB), so the bound does not bind.
    assert _bf16(4096, 4096, 4096, _memory_only(1.0)) == _bf16(4096, 4096, 4096,
                                                               _memory_only(0.01))


def test_scalar_and_array_bf16_gemm_agree():
    eff = replace(Efficiencies(), gemm_tile_load=1.3)
    m = np.array([1, 2, 17, 64, 65, 128, 129, 1024, 2048, 4097, 8192])
    n = np.array([32, 32, 64, 128, 4096, 57344, 32, 32, 64, 128, 16384])
    k = np.array([512, 2048, 4096, 8192, 1024, 8192, 16384, 4096, 7168, 65536, 8192])
    for wb in (2.0, 0.5 + 2.0 / 128):
        v = rl.gemm_time_s_v(m, n, k, H100, eff, H100.bf16_flops, wb, 2.0)
        s = [rl.gemm_time_s(int(a), int(b), int(c), H100, eff, H100.bf16_flops, wb, 2.0)
             for a, b, c in zip(m, n, k, strict=True)]
        np.testing.assert_allclose(v, s, rtol=1e-12)
