"""Loose ends of `planner.plan()`: the winner's reason describes the deployment shown, distinct
pruning examples, a time limit, and requests longer than any replica can hold."""

from __future__ import annotations

import pytest

from costmodel.errors import DoesNotFitError, ServePlanError
from planner import plan
from planner.space import SearchSpace
from planner.verify import Verifier

SMALL = dict(model="llama-3.1-8b", gpus="h100:2", workload="fixed:512,128", ttft_slo_s=0.5,
             tpot_slo_s=0.03, kv_dtype="bf16")
COLOCATED = SearchSpace(modes=("colocated",), tps=(1,), max_num_seqs=(None,),
                        max_num_batched_tokens=(8192,))


@pytest.fixture(scope="module")
def fleet_plan():
    # no target: the plan fills both GPUs with one-GPU replicas (a unit of 1 GPU, 2 deployed)
    return plan(**SMALL, space=COLOCATED, workers=1)


def test_the_winners_reason_describes_the_deployment_shown(fleet_plan):
    p = fleet_plan
    assert p.predicted.gpus == 2 and p.capacity["unit_gpus"] == 1
    why = p.why["winner"]["summary"]
    rate = p.simulation["rate_rps"]
    assert "2 colocated on 2 GPU(s) meets the SLO" in why
    assert f"at {rate:.3g} requests/s" in why and f"({rate / 2:.3g} per GPU)" in why
    assert "unit of 1" not in why


def test_pruned_examples_are_distinct():
    from planner.candidates import ScreenContext, screen_space
    from planner.request import PlanInputs
    from planner.space import Pruned

    # 70B on 4 H100 with 120k-token requests: TP 2 and TP 4 replicas (each at several knob
    # settings) hold the weights but not the KV
    req = PlanInputs.build(model="llama-3.1-70b", gpus="h100:4", workload="fixed:120000,16",
                            rate=0.1, ttft_slo_s=60.0, tpot_slo_s=0.2)
    ctx = ScreenContext(req.model, req.workload_shape(), req.slo_target, None, req.num_requests,
                        req.closed_loop, {"h100-sxm": 1.0})
    pruned = Pruned()
    screen_space(ctx, req.fleet, req.space, req.constraints, pruned)
    ex = pruned.memory_examples
    assert pruned.counts["memory"] > len(ex) >= 2 and len(set(ex)) == len(ex)
    assert pruned.largest_kv_tokens > 0


def test_a_time_limit_plans_with_what_was_verified(monkeypatch):
    # the clock is replaced by a count: the limit "passes" once two simulations have run
    monkeypatch.setattr(Verifier, "expired", property(lambda self: self.deadline is not None
                                                      and self.sims >= 2))
    p = plan(**SMALL, space=COLOCATED, workers=1, time_limit_s=30.0)
    s = p.search
    assert s["time_limit_s"] == 30.0 and "time limit" in s["stopped_early"]
    assert p.capacity["unit_goodput"] > 0 and len(p.capacity["verify_probes"]) == 2
    assert p.alternatives == () and p.predicted.gpus == 2
    # two probes, then one round at the operating point (the fleet-sized run and, beside it, the
    # backed-off load); no repair rounds, no runners-up
    assert s["simulated"] == 4


def test_a_time_limit_with_nothing_verified_is_an_error():
    with pytest.raises(ServePlanError, match="time limit 1e-06 s reached before any"):
        plan(**SMALL, space=COLOCATED, workers=1, time_limit_s=1e-6)
    with pytest.raises(ServePlanError, match="time limit -1"):
        plan(**SMALL, space=COLOCATED, workers=1, time_limit_s=-1)


def test_a_request_longer_than_the_context_is_a_clear_error():
    with pytest.raises(DoesNotFitError, match=r"100% of the workload's requests are longer than "
                       r"llama-3.1-8b's context of 131072 tokens \(the longest needs 100000010 "
                       r"tokens of KV.*largest KV capacity of one replica on the GPUs given is \d+"):
        plan(**{**SMALL, "workload": "fixed:100000000,10"}, workers=1)


def test_a_request_no_replica_can_hold_names_the_largest_kv_capacity():
    with pytest.raises(DoesNotFitError, match=r"longest request \(120010 tokens; the largest KV "
                       r"capacity of a replica the GPUs given allow is \d+ tokens"):
        plan(model="llama-3.1-70b", gpus="h100:2", workload="fixed:120000,10", ttft_slo_s=60.0,
             tpot_slo_s=0.2, workers=1)
