"""bf16 GEMM with few CTAs: each CTA streams whole tiles (min(M, 128) rows of A and min(N, 128)
columns of W per K step) at its per-CTA load rate (`gemm_tile_load`), hand-computed on a
memory-only H100, and the scalar and array forms agree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import roofline as rl
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

H100 = load_gpu("h100")


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
