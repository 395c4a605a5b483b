"""A data-parallel MoE replica: each attention rank batches its own requests, every MoE layer
waits for the slowest rank, and the router spreads requests over the ranks."""

from __future__ import annotations

from dataclasses import replace

import pytest

from costmodel.errors import ServePlanError
from costmodel.model import CostModel
from sim import parse_workload, simulate
from sim.deployment import Deployment, PoolConfig


@pytest.fixture
def moe_cm(tiny_model, toy_gpu):
    cm = CostModel(replace(tiny_model, num_experts=4, experts_per_token=2), toy_gpu, tp=1, ep=2, dp=2)
    cm.eff = replace(cm.eff, frontend_s=0.0, frontend_per_token_s=0.0)
    return cm


def _deployment(cm, **kw):
    pool = PoolConfig(role="colocated", gpu=cm.gpu, tp=1, ep=2, dp=2, max_num_seqs=8,
                      max_num_batched_tokens=256, block_size=16, **kw)
    return Deployment(model=cm.model, pools=(pool,), router="round_robin")


def test_two_ranks_hand_computed_timeline(moe_cm, trace_file):
    cm, idle = moe_cm, ((), 0, 0.0, 1)
    # it1: rank 0 prefills r0 (40 tokens, 3 outputs); rank 1 has nothing and joins the MoE
    # layers with a dummy batch. r1 (20 tokens, 2 outputs) arrives halfway, on rank 1.
    t1 = cm.dp_step_time_s([([(40, 0)], 0, 0.0, 1), idle])
    wl = parse_workload(f"trace:{trace_file([(40, 3, 0.0), (20, 2, t1 / 2)])}")
    f = simulate(_deployment(cm), wl, num_requests=2, seed=0, keep_requests=True,
                 cost_models={"colocated": cm}).requests
    # it2: rank 0 decodes r0 at context 40 while rank 1 prefills r1: one iteration for both
    d2 = cm.dp_step_time_s([((), 1, 40.0, 1), ([(20, 0)], 0, 0.0, 1)])
    t2 = t1 + d2
    # it3: both decode, r0 at context 41, r1 at 20; both finish
    t3 = t2 + cm.dp_step_time_s([((), 1, 41.0, 1), ((), 1, 20.0, 1)])
    assert f.replica.tolist() == [0, 1]
    assert f.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t3, t3], rel=1e-12)
    # r0's decode waited for r1's prefill on the other rank
    assert d2 > cm.dp_step_time_s([((), 1, 40.0, 1), idle])


def test_sglang_ranks_decide_a_batch_as_the_one_before_starts(moe_cm, trace_file):
    # the timeline above under SGLang's overlap scheduler: r1 reaches rank 1 during it1, after
    # it2 was decided (as it1 started), so rank 1 idles through it2 and prefills r1 in it3
    cm, idle = moe_cm, ((), 0, 0.0, 1)
    t1 = cm.dp_step_time_s([([(40, 0)], 0, 0.0, 1), idle])
    wl = parse_workload(f"trace:{trace_file([(40, 3, 0.0), (20, 2, t1 / 2)])}")
    dep = replace(_deployment(cm), engine="sglang")
    f = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True,
                 cost_models={"colocated": cm}).requests
    t2 = t1 + cm.dp_step_time_s([((), 1, 40.0, 1), idle])
    t3 = t2 + cm.dp_step_time_s([((), 1, 41.0, 1), ([(20, 0)], 0, 0.0, 1)])
    t4 = t3 + cm.dp_step_time_s([idle, ((), 1, 20.0, 1)])
    assert f.first_token_s.tolist() == pytest.approx([t1, t3], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t3, t4], rel=1e-12)
    # with nothing left to run after it1, the group's next pass sees r1 at once
    wl = parse_workload(f"trace:{trace_file([(40, 1, 0.0), (20, 1, t1 / 2)])}")
    g = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True,
                 cost_models={"colocated": cm}).requests
    assert g.first_token_s[1] == pytest.approx(t1 + cm.dp_step_time_s([idle, ([(20, 0)], 0, 0.0, 1)]),
                                               rel=1e-12)


def test_ranks_each_hold_their_own_kv_and_share_the_load(moe_cm):
    wl = parse_workload("fixed:64,8", concurrency=8)
    r = simulate(_deployment(moe_cm), wl, num_requests=32, seed=0, keep_requests=True,
                 cost_models={"colocated": moe_cm})
    assert sorted(r.requests.replica.value_counts().tolist()) == [16, 16]
    assert r.metrics.throughput_tok_s > 0


def test_dp_needs_pp_1_and_no_speculation(moe_cm):
    wl = parse_workload("fixed:64,8", concurrency=2)
    pool = PoolConfig(role="colocated", gpu=moe_cm.gpu, tp=1, pp=2, ep=2, dp=2)
    with pytest.raises(ServePlanError, match="dp=2"):
        simulate(Deployment(model=moe_cm.model, pools=(pool,)), wl, num_requests=4, seed=0)


def test_dp_pool_counts_its_gpus_and_reads_old_plans():
    p = PoolConfig(role="colocated", gpu="h200", tp=8, dp=2, ep=16, replicas=2)
    assert p.num_gpus == 32
    old = PoolConfig.from_dict({"role": "colocated", "gpu": "h100", "tp": 8, "expert_parallel": True})
    assert (old.ep, old.dp) == (8, 1)
