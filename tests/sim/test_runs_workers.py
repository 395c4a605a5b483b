"""Run fits with their replays in worker processes (sim.runs.workers): the same numbers as in one
process, the pool really used, bad worker counts named."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.errors import ServePlanError
from sim.deployment import Deployment
from sim.runs.fit import _replay, fit_runs
from sim.runs.types import MeasuredRun
from sim.runs.workers import replay_each, replay_workers

GPU = "h100-sxm"


def test_a_fit_in_two_processes_is_the_fit_in_one(chunk_time_runs):
    runs = chunk_time_runs()
    kw = dict(params=["frontend_stream_s", "decode_time_scale"], rounds=2)
    (one,) = fit_runs(runs, workers=1, **kw)
    (two,) = fit_runs(runs, workers=2, **kw)
    assert two.params == one.params and two.fitted == one.fitted and two.rounds == one.rounds
    assert two.interval == one.interval
    for a, b in zip(one.rows, two.rows, strict=True):
        assert (a.before, a.after, a.held_out) == (b.before, b.after, b.held_out)
    assert one.params.frontend_stream_s == pytest.approx(120e-6)  # a real fit, not a no-op


def _whose(run, prof, record):
    return run.run_id, os.getpid()


def test_replays_run_in_the_pool_and_come_back_in_order(chunk_time_runs):
    runs = chunk_time_runs()
    assert replay_each(_whose, runs, None, False) == [(r.run_id, os.getpid()) for r in runs]
    with replay_workers(2):
        got = replay_each(_whose, runs, None, False)
    assert [g[0] for g in got] == [r.run_id for r in runs]
    assert all(pid != os.getpid() for _, pid in got)
    assert replay_each(_whose, runs, None, False)[0][1] == os.getpid()  # the pool is closed after


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, 10**6])
def test_a_bad_worker_count_is_named(bad):
    with pytest.raises(ServePlanError, match=r"workers .*expected an integer in \[1, "):
        with replay_workers(bad):
            pass


def test_a_replay_that_does_not_fit_comes_back_from_a_worker_as_in_one_process():
    # the memory reserve's grid replays until the runs no longer fit (DoesNotFitError, caught by
    # the fit): raised in a worker, it must come back as itself, not break the pool
    import pickle

    from costmodel.errors import DoesNotFitError

    e = pickle.loads(pickle.dumps(DoesNotFitError("run x: requests longer than the KV cache", 3.0, 2.0)))
    assert (str(e), e.need_bytes, e.have_bytes) == ("run x: requests longer than the KV cache", 3.0, 2.0)
    truth = CalibrationProfile(gpus={GPU: GpuCalibration(replace(default_efficiencies(GPU), mem_reserved_gib=4.0))})
    runs = []
    for isl, osl, c in [(4096, 64, 32), (512, 32, 4)]:  # Qwen3-32B on one H100: ~9 GiB of KV cache
        dep = Deployment.colocated("qwen3-32b", GPU, tp=1)
        r = MeasuredRun("synthetic.csv", f"{isl}x{osl}_c{c}", "vllm", "0.12", dep, f"fixed:{isl},{osl}",
                        concurrency=c, num_requests=3 * c, measured={"ttft_mean_s": 0.1, "tpot_mean_s": 0.01})
        runs.append(replace(r, measured=_replay(r, truth, record=False)[1]))
    kw = dict(params=["mem_reserved_gib", "decode_time_scale"], held_out=False, rounds=2)
    (one,) = fit_runs(runs, workers=1, **kw)
    (two,) = fit_runs(runs, workers=2, **kw)
    assert two.params == one.params and one.params.mem_reserved_gib == 4.0
