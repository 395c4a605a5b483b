"""Carrying a fit to another GPU: fixed per-kernel times scale with the SM clock, and the fit's
weak prior keeps parameters the rows do not inform at their starting (physical) values."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from costmodel import attention as at
from costmodel import roofline as rl
from costmodel.efficiencies import SM_CLOCK_HZ, Efficiencies, clock_scale
from costmodel.fit import _robust, fit_params
from costmodel.hardware import load_gpu
from costmodel.importers import tidy
from costmodel.measured import predict_rows


def test_clock_scale_from_datasheet_boost_clocks():
    assert clock_scale(load_gpu("a100")) == 1.0  # the reference GPU
    assert clock_scale(load_gpu("h100")) == pytest.approx(1.41 / 1.98)
    assert clock_scale(load_gpu("l40s")) == pytest.approx(1.41 / 2.52)


@pytest.mark.parametrize("gpu", ["a100-80g", "h100-sxm", "l4"])
def test_gemm_fixed_time_is_counted_in_cycles(gpu):
    g = load_gpu(gpu)
    e0 = replace(Efficiencies(), kernel_overhead_s=0.0)
    e1 = replace(Efficiencies(), kernel_overhead_s=4e-6)
    # 4096 output tiles: no split-K, one kernel; the fixed time is the only difference
    d = rl.gemm_time_s(8192, 8192, 4096, g, e1, g.bf16_flops, 2.0) - rl.gemm_time_s(
        8192, 8192, 4096, g, e0, g.bf16_flops, 2.0)
    assert d == pytest.approx(4e-6 * 1.41e9 / SM_CLOCK_HZ[g.name], rel=1e-9)


def test_decode_attention_fixed_time_scales_with_clock():
    h = load_gpu("h100")
    e = replace(Efficiencies(), attn_overhead_s=10e-6, attn_decode_cta_s=0.0)
    zero = replace(e, attn_overhead_s=0.0)
    d = at.decode_attn_time_s(4, 4000, 1, 8, 1, 128, h, e) - at.decode_attn_time_s(
        4, 4000, 1, 8, 1, 128, h, zero)
    assert d == pytest.approx(10e-6 * 1.41 / 1.98)


def test_robust_residuals_square_to_the_loss():
    r = np.array([0.1, -0.3, 0.0])
    out = _robust(r, "cauchy", 0.1)
    # cauchy: rho(z) = log(1 + z), z = (r / f)^2; residual = sign(r) f sqrt(rho)
    assert out == pytest.approx([0.1 * math.sqrt(math.log(2)), -0.1 * math.sqrt(math.log(10)), 0.0])
    assert _robust(r, "linear", 0.1) == pytest.approx(r)


def test_prior_keeps_an_uninformed_parameter_at_its_start():
    # every GEMM has >= 4096 CTAs, so the CTAs needed to saturate HBM never bind
    rng = np.random.default_rng(0)
    n = 200
    rows = tidy(pd.DataFrame({"op": "gemm", "gpu": "h100-sxm", "m": rng.integers(8192, 16384, n),
                              "n": 8192, "k": rng.choice([1024, 4096], n), "measured_s": 1.0}))
    truth = replace(Efficiencies(), gemm_compute_eff=0.7)
    rows["measured_s"] = predict_rows(rows, params={"h100-sxm": truth})
    start = replace(Efficiencies(), gemm_ctas_per_sm=0.3)
    res = fit_params(rows, start=start, params=["gemm_compute_eff", "gemm_ctas_per_sm"])
    assert res.params.gemm_ctas_per_sm == pytest.approx(0.3, rel=1e-3)
    assert res.params.gemm_compute_eff == pytest.approx(0.7, rel=0.01)
