"""Parameters the runs cannot tell apart are held, not fitted along a ridge (sim.runs.identify)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from sim.deployment import Deployment
from sim.runs import MeasuredRun
from sim.runs.fit import _replay, fit_runs
from sim.runs.identify import own_share, separable
from sim.runs.profile import profile_of

GPU = "h100-sxm"


def test_a_parameter_the_others_reproduce_is_held_the_smaller_one_of_a_pair():
    rng = np.random.default_rng(0)
    prefill = rng.uniform(0.2, 1.0, 40)
    latency = np.where(np.arange(40) % 2 == 0, 1.0, 0.0) * rng.uniform(0.1, 0.5, 40)
    comm = 0.15 * prefill + 0.002 * rng.standard_normal(40)  # what a TP-2-only set looks like
    keep, why = separable({"prefill_time_scale": prefill, "request_latency_s": latency, "comm_bw_eff": comm})
    assert keep == ["prefill_time_scale", "request_latency_s"]
    assert list(why) == ["comm_bw_eff"] and "prefill_time_scale" in why["comm_bw_eff"]
    share, coef = own_share({"a": prefill, "b": comm}, "b")
    assert share < 0.02 and coef["a"] == pytest.approx(0.15, rel=0.02)
    # effects that differ keep every parameter
    other = rng.uniform(0.0, 1.0, 40)
    assert separable({"prefill_time_scale": prefill, "comm_bw_eff": other, "request_latency_s": latency}) == \
        (["prefill_time_scale", "comm_bw_eff", "request_latency_s"], {})
    assert separable({"x": prefill}) == (["x"], {})
    # an effect that is not a number moves nothing a regression can use
    assert separable({"a": prefill, "b": np.full(40, np.nan), "c": latency})[0] == ["a", "c"]


def _runs(tps, truth):
    prof = CalibrationProfile(gpus={GPU: GpuCalibration(truth)})
    out = []
    for i, (tp, isl, osl, c) in enumerate((t, isl, osl, c) for t in tps for isl, osl, c in
                                          ((512, 32, 4), (2048, 16, 16), (1024, 64, 8))):
        r = MeasuredRun("synthetic.csv", f"r{i}", "vllm", "0.12", Deployment.colocated("llama-3.2-1b", GPU, tp=tp),
                        f"fixed:{isl},{osl}", concurrency=c, num_requests=4 * c,
                        measured={"ttft_mean_s": 0.1, "tpot_mean_s": 0.01})
        out.append(replace(r, measured=_replay(r, prof, record=False)[1]))
    return out


def test_runs_at_one_tp_size_leave_the_collectives_unfitted():
    truth = replace(default_efficiencies(GPU), prefill_time_scale=1.3)
    said = []
    params = ["prefill_time_scale", "comm_bw_eff"]
    (f,) = fit_runs(_runs([2], truth), params=params, held_out=False, rounds=2, log=said.append)
    assert f.fitted == ("prefill_time_scale",) and "comm_bw_eff" in f.not_informed
    assert f.params.comm_bw_eff == default_efficiencies(GPU).comm_bw_eff
    assert f.params.prefill_time_scale == pytest.approx(1.3, rel=0.05)
    assert any("comm_bw_eff not fitted" in m and "prefill_time_scale" in m for m in said)
    assert set(f.held) == {"comm_bw_eff"} and "cannot tell it apart" in f.held["comm_bw_eff"]
    cal = profile_of([f]).gpus[GPU]  # the profile says why it kept the starting value
    assert cal.sources["comm_bw_eff"].startswith("not fitted: ") and "prefill_time_scale" in cal.sources["comm_bw_eff"]
    assert cal.sources["prefill_time_scale"].startswith("fit: 3 vllm runs")
    assert any("comm_bw_eff not fitted" in m for m in profile_of([f]).messages)
    # TP 1 and 4 together tell them apart
    (g,) = fit_runs(_runs([1, 4], truth), params=params, held_out=False, rounds=2)
    assert set(g.fitted) == set(params)
