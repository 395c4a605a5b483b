"""W8A8 GEMM: a partly empty last M tile slows the main loop (`fp8_partial_slow`), hand-computed
on a compute-only H100, and the scalar and array forms agree."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel import roofline as rl
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies

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
