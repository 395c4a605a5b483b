"""Pure decode iterations run several at a time (`Replica._fast_window`) give what running them
one at a time gives, to the bit: the same requests' times, metrics and recorded iterations."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from sim import Deployment, parse_workload, simulate
from sim.replica import Replica

CASES = {
    # closed loop, long outputs: long windows; an API server with a streamed-chunk time
    "closed_sglang": (lambda: Deployment.colocated("llama-3.1-8b", "h100", engine="sglang"),
                      "fixed:512,300", {"concurrency": 48}, 240, {}),
    # open loop, Poisson arrivals: windows end at the next arrival
    "open_vllm": (lambda: Deployment.colocated("llama-3.1-8b", "h100"),
                  "uniform:64-1024,20-400", {"rate": 30.0}, 300, {}),
    # a KV cache too small for every sequence: windows stop where the free blocks end, and
    # preemptions happen between them
    "tight_kv": (lambda: Deployment.colocated("llama-3.1-8b", "h100"),
                 "uniform:32-96,50-400", {"concurrency": 16}, 120, {"kv_blocks": 60}),
    # SGLang admitting on its estimate of the outputs to come, which every decode-only
    # iteration lowers: a cache where that estimate decides when prompts start
    "tight_kv_sglang": (lambda: Deployment.colocated("llama-3.1-8b", "h100", engine="sglang"),
                        "uniform:32-96,50-400", {"concurrency": 32}, 150, {"kv_blocks": 500}),
}


def _run(case: str, window: bool, monkeypatch, record: bool = True):
    make, spec, load, n, kw = CASES[case]
    calls = {"window": 0}
    real = Replica._fast_window

    def counted(self):
        out = real(self) if window else (None, None)
        calls["window"] += out[0] is not None
        return out

    monkeypatch.setattr(Replica, "_fast_window", counted)
    # record_steps keeps the requests too; keep_requests would add a timeline, which runs every
    # iteration on its own
    res = simulate(make(), parse_workload(spec, **load), num_requests=n, seed=3, record_steps=record, **kw)
    return res, calls["window"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_windows_change_nothing_to_the_bit(case, monkeypatch):
    fast, taken = _run(case, True, monkeypatch)
    slow, none = _run(case, False, monkeypatch)
    assert taken > 0 and none == 0  # the cases do take windows
    for col in ("arrival_s", "first_token_s", "finish_s", "preemptions"):
        a, b = getattr(fast.requests, col).to_numpy(), getattr(slow.requests, col).to_numpy()
        assert np.array_equal(a, b, equal_nan=True), col
    fm, sm = fast.metrics.to_dict(), slow.metrics.to_dict()
    fm.pop("sim_wall_s", None)
    sm.pop("sim_wall_s", None)
    assert fm == sm
    assert fast.steps == slow.steps  # every iteration: start, time, batch, context


def test_the_tight_cache_case_preempts():
    make, spec, load, n, kw = CASES["tight_kv"]
    res = simulate(make(), parse_workload(spec, **load), num_requests=n, seed=3, **kw)
    assert res.metrics.preemptions > 0


def test_a_stream_time_is_applied_per_iteration(monkeypatch):
    """The API server's streamed chunks queue per iteration: a window replays that queue."""
    make, spec, load, n, kw = CASES["closed_sglang"]
    dep = make()

    def run(window):
        real = Replica._fast_window
        monkeypatch.setattr(Replica, "_fast_window", (lambda self: real(self)) if window else (lambda self: (None, None)))
        from costmodel.arch_defaults import default_efficiencies
        from costmodel.calibration import CalibrationProfile, GpuCalibration
        gpu = dep.pools[0].gpu
        eff = replace(default_efficiencies(gpu), frontend_stream_s=200e-6)
        prof = CalibrationProfile(gpus={gpu: GpuCalibration(eff)})
        out = simulate(dep, parse_workload(spec, **load), num_requests=n, seed=1, record_steps=True,
                       calibration=prof)
        monkeypatch.undo()
        return out

    a, b = run(True), run(False)
    assert np.array_equal(a.requests.finish_s.to_numpy(), b.requests.finish_s.to_numpy())
    assert a.metrics.tpot_mean_s == b.metrics.tpot_mean_s
