"""The allocation MILP on instances small enough to solve by hand."""

from __future__ import annotations

import pytest

from planner.allocate import solve, top_allocations
from planner.candidates import Candidate
from planner.fleet import parse_fleet
from sim.deployment import PoolConfig


def cand(role, gpu, tp, cap, price_per_gpu=1.0, kv="auto"):
    pool = PoolConfig(role, gpu, tp=tp, kv_dtype=kv).resolved()
    return Candidate(pool, cap, cap, "tpot", 10_000, price_per_gpu * tp)


def test_one_type_needs_ceil_of_load_over_capacity():
    # 10 req/s at 3 req/s per 2-GPU replica: ceil(10 / 3) = 4 replicas, 8 GPUs
    a = solve([cand("colocated", "h100", 2, 3.0)], parse_fleet("h100:16"), 10.0, "gpus")
    assert a is not None and a.mode == "colocated"
    assert a.pools[0][1] == 4 and a.gpus == 8
    assert a.served == pytest.approx(12.0)


def test_fewest_gpus_then_most_served():
    # 12 req/s: A (6 per 4 GPUs) x2 = 8 GPUs; B (9 per 8 GPUs) x2 = 16 GPUs; C (2 per 2) x6 = 12
    cs = [cand("colocated", "h100", 4, 6.0), cand("colocated", "h100", 8, 9.0),
          cand("colocated", "h100", 2, 2.0)]
    a = solve(cs, parse_fleet("h100:16"), 12.0, "gpus")
    assert a.pools[0][0].pool.tp == 4 and a.pools[0][1] == 2 and a.gpus == 8


def test_ties_in_gpus_go_to_more_served():
    # 8 req/s: A x2 (8 GPUs, serves 12) and B x1 (8 GPUs, serves 9) tie on GPUs: A serves more
    cs = [cand("colocated", "h100", 4, 6.0), cand("colocated", "h100", 8, 9.0)]
    a = solve(cs, parse_fleet("h100:16"), 8.0, "gpus")
    assert a.pools[0][0].pool.tp == 4 and a.served == pytest.approx(12.0)


def test_disaggregated_wins_when_its_pools_are_cheaper():
    # 8 req/s: prefill 10 per 2 GPUs (1 replica) + decode 4 per 2 GPUs (2 replicas) = 6 GPUs;
    # colocated 2 per 2 GPUs needs 4 replicas = 8 GPUs
    cs = [cand("colocated", "h100", 2, 2.0), cand("prefill", "h100", 2, 10.0),
          cand("decode", "h100", 2, 4.0)]
    a = solve(cs, parse_fleet("h100:16"), 8.0, "gpus")
    assert a.mode == "disaggregated"
    assert [(c.role, n) for c, n in a.pools] == [("prefill", 1), ("decode", 2)]
    assert a.gpus == 6 and a.served == pytest.approx(8.0)


def test_prefill_and_decode_must_share_the_kv_dtype():
    cs = [cand("prefill", "h100", 2, 10.0, kv="fp8"), cand("decode", "h100", 2, 4.0, kv="bf16")]
    assert solve(cs, parse_fleet("h100:16"), 4.0, "gpus") is None


def test_cost_objective_picks_the_cheaper_gpu_type():
    # 6 req/s: one H100 TP4 replica ($5/GPU-h: $20/h) or two A100 TP4 replicas ($2.2: $17.6/h)
    cs = [cand("colocated", "h100", 4, 6.0, 5.0), cand("colocated", "a100", 4, 3.0, 2.2)]
    a = solve(cs, parse_fleet("h100:8,a100:8"), 6.0, "price")
    assert a.pools[0][0].pool.gpu == "a100-80g" and a.pools[0][1] == 2
    assert a.cost_per_hour_usd == pytest.approx(17.6)


def test_fleet_limits_counts_and_mixes_types_across_pools():
    # prefill on the 4 H100 (one TP4 replica, 10 req/s), decode on A100 (2 per GPU): 9 req/s
    cs = [cand("prefill", "h100", 4, 10.0), cand("decode", "a100", 1, 2.0)]
    a = solve(cs, parse_fleet("h100:4,a100:8"), 9.0, "gpus")
    assert [(c.pool.gpu, n) for c, n in a.pools] == [("h100-sxm", 1), ("a100-80g", 5)]


def test_target_beyond_the_fleet_serves_the_most_and_says_so():
    cs = [cand("colocated", "h100", 4, 6.0)]
    allocs, feasible = top_allocations(cs, parse_fleet("h100:8"), 100.0, "gpus", {"colocated": 1})
    assert not feasible
    assert allocs[0].formulation == "max" and allocs[0].pools[0][1] == 2
    assert allocs[0].served == pytest.approx(12.0)


def test_runners_up_differ_in_hardware():
    cs = [cand("colocated", "h100", 4, 6.0), cand("colocated", "h100", 8, 9.0),
          cand("colocated", "h100", 2, 2.0)]
    allocs, feasible = top_allocations(cs, parse_fleet("h100:16"), 8.0, "gpus", {"colocated": 3})
    assert feasible
    assert [a.pools[0][0].pool.tp for a in allocs] == [4, 8, 2]
    assert [a.gpus for a in allocs] == [8, 8, 8]
