"""A plan does not depend on how many processes ran its simulations (the service plans with 1
worker, the CLI with up to 2): verification rounds ask for a fixed number of probes."""

from __future__ import annotations

from planner import plan

SMALL = dict(model="llama-3.2-1b", gpus="l40s:1", workload="fixed:256,64", rate=2.0,
             ttft_slo_s=1.0, tpot_slo_s=0.05, num_requests=100)


def _strip(d):
    d = dict(d)
    d["search"] = {k: v for k, v in d["search"].items() if "wall" not in k and "time" not in k}
    return d


def test_one_and_two_workers_give_the_same_plan():
    one = plan(**SMALL, workers=1).to_dict()
    two = plan(**SMALL, workers=2).to_dict()
    for key in ("deployment", "predicted", "alternatives", "why", "launch", "simulation"):
        assert one[key] == two[key], key
    assert _strip(one)["search"] == _strip(two)["search"]
