"""Sweeps give identical results on every backend, in task order, and report failures."""

from __future__ import annotations

from sim.deployment import Deployment, PoolConfig
from sim.sweep import LocalExecutor, SimTask, run_tasks, sweep
from sim.workload import parse_workload


def _deps():
    return [
        Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", tp=tp, replicas=r),))
        for tp, r in [(1, 1), (1, 2), (2, 1)]
    ]


def test_local_pool_matches_serial_in_order():
    wl = parse_workload("fixed:512,64", rate=4.0)
    serial = sweep(_deps(), wl, num_requests=120, seed=3, rates=[2.0, 6.0], workers=1)
    pooled = sweep(_deps(), wl, num_requests=120, seed=3, rates=[2.0, 6.0], workers=2)
    assert list(serial["config"]) == [0, 0, 1, 1, 2, 2]
    assert serial["error"].isna().all()
    cols = ["ttft_p90_s", "tpot_p90_s", "throughput_tok_s", "goodput_rps"]
    assert serial[cols].equals(pooled[cols])
    # more load on the same deployment never lowers TTFT p90 here
    assert serial.loc[1, "ttft_p90_s"] >= serial.loc[0, "ttft_p90_s"]


def test_failed_task_is_reported_with_its_config():
    wl = parse_workload("fixed:512,64", rate=4.0)
    good = _deps()[0].to_dict()
    bad = dict(good, model="llama-3.1-405b")  # weights do not fit on one H100
    res = run_tasks([SimTask(good, 50, 1), SimTask(bad, 50, 1, tag="bad")], wl,
                    executor=LocalExecutor(workers=1))
    assert res[0].ok and not res[1].ok
    assert res[1].task.tag == "bad" and "fit" in res[1].error
