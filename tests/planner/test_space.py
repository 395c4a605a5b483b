"""The search space's structural rules and memory pruning."""

from __future__ import annotations

import numpy as np

from costmodel.hardware import load_gpu
from costmodel.specs import load_model
from planner.candidates import ScreenContext, screen_pool
from planner.fleet import parse_fleet
from planner.screen import SLOTarget
from planner.shape import WorkloadShape
from planner.space import (
    Constraints,
    Pruned,
    SearchSpace,
    enumerate_shapes,
    make_pool,
    smallest_fit,
)


def ctx_for(model: str, in_len: int = 1000, out_len: int = 200) -> ScreenContext:
    shape = WorkloadShape.from_lengths(np.full(64, in_len), np.full(64, out_len))
    return ScreenContext(load_model(model), shape, SLOTarget(1.0, 0.05), None, 800, False,
                         {"h100-sxm": 4.9, "a100-80g": 2.2})


def test_weights_that_do_not_fit_are_pruned_for_memory():
    # Llama-3.1-70B in bf16 is ~141 GB of weights: not on one 80 GB H100, fine on two
    ctx = ctx_for("llama-3.1-70b")
    pruned = Pruned()
    shape1 = next(s for s in enumerate_shapes(ctx.model, parse_fleet("h100:8"), SearchSpace(),
                                              Constraints(kv_dtypes=("bf16",)), Pruned())
                  if s.tp == 1 and s.role == "colocated")
    assert screen_pool(make_pool(shape1, 8192, None, shape1_spec(), None, 0.9), ctx, pruned) is None
    assert pruned.counts == {"memory": 1} and "KV for 0 tokens" in pruned.memory_examples[0]
    shape2 = type(shape1)("colocated", "h100-sxm", 2, 1, "bf16", "bf16")
    assert screen_pool(make_pool(shape2, 8192, None, shape1_spec(), None, 0.9), ctx, pruned) is not None


def test_a_request_longer_than_the_kv_cache_prunes_the_replica():
    # one replica of 70B on 2 H100 holds ~80k tokens of bf16 KV: a 100k-token request cannot run
    ctx = ctx_for("llama-3.1-70b", in_len=100_000, out_len=10)
    pruned = Pruned()
    shape2 = next(s for s in enumerate_shapes(ctx.model, parse_fleet("h100:8"), SearchSpace(),
                                              Constraints(kv_dtypes=("bf16",)), Pruned())
                  if s.tp == 2 and s.role == "colocated")
    assert screen_pool(make_pool(shape2, 8192, None, shape1_spec(), None, 0.9), ctx, pruned) is None
    assert pruned.counts["memory"] == 1


def shape1_spec():
    from sim.deployment import SpecConfig

    return SpecConfig()


def test_tp_stays_in_a_node_and_pp_only_when_a_node_cannot_hold_the_model():
    pruned = Pruned()
    shapes = enumerate_shapes(load_model("llama-3.1-70b"), parse_fleet("h100:32"),
                              SearchSpace(tps=(1, 2, 4, 8, 16)), Constraints(), pruned)
    assert {s.tp for s in shapes} == {1, 2, 4, 8} and {s.pp for s in shapes} == {1}
    assert pruned.counts["parallelism"] == 1  # tp=16 > 8 GPUs per node
    big = enumerate_shapes(load_model("llama-3.1-405b"), parse_fleet("h100:16"), SearchSpace(),
                           Constraints(), Pruned())
    deep = {(s.tp, s.pp) for s in big if s.pp > 1}
    assert {(8, 2), (4, 4)} <= deep and max(t * p for t, p in deep) == 16  # two nodes at most


def test_smallest_fit_counts_gpus():
    # 405B bf16 (~810 GB) needs more than a node of H100 (8 x 72 GB usable); fp8 halves it
    m = load_model("llama-3.1-405b")
    n, gpu, tp, pp, prec = smallest_fit(m, [load_gpu("h100")], ("bf16",), ("bf16",), 4096)
    assert gpu == "h100-sxm" and n == tp * pp and 12 <= n <= 16 and prec == "bf16"
    n8, *_ = smallest_fit(m, [load_gpu("h100")], ("bf16", "fp8"), ("bf16",), 4096)
    assert n8 == 8
    assert smallest_fit(load_model("llama-3.1-8b"), [load_gpu("h100")], ("bf16",), ("bf16",), 4096)[0] == 1


def test_screening_side_by_side_merges_like_one_after_another():
    from planner.candidates import _hardware_groups, screen_space

    ctx_a, ctx_b = ctx_for("llama-3.1-70b"), ctx_for("llama-3.1-70b")
    fleet, space = parse_fleet("h100:8"), SearchSpace(max_num_seqs=(None,), tps=(1, 2, 4))
    cons = Constraints(kv_dtypes=("bf16", "fp8"))
    seq, par = Pruned(), Pruned()
    one = screen_space(ctx_a, fleet, space, cons, seq)
    calls = []

    def mapper(fn, items):
        calls.append(len(items))
        return [fn(x) for x in reversed(items)][::-1]  # run out of order, returned in order

    two = screen_space(ctx_b, fleet, space, cons, par, mapper=mapper)
    assert [c.key for c in one] == [c.key for c in two] and one
    assert [c.capacity for c in one] == [c.capacity for c in two]
    assert seq.counts == par.counts and seq.counts.get("memory", 0) > 0
    assert seq.memory_examples == par.memory_examples
    assert seq.largest_kv_tokens == par.largest_kv_tokens and ctx_a.evaluated == ctx_b.evaluated
    # one task per hardware layout: tp 1, 2, 4 (each with 2 KV dtypes x 3 roles)
    shapes = enumerate_shapes(ctx_a.model, fleet, space, cons, Pruned())
    assert calls == [3] and [len(g) for g in _hardware_groups(shapes)] == [6, 6, 6]
