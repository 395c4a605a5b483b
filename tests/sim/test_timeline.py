"""Hand-computed timelines: exact event times from the same cost-model calls the engine makes."""

from __future__ import annotations

import numpy as np
import pytest

from sim import parse_workload, simulate


def run(dep, wl, cm, n):
    return simulate(dep, wl, num_requests=n, seed=0, keep_requests=True,
                    cost_models={"colocated": cm}).requests


def test_two_requests_decode_first(toy_deployment, toy_cm, trace_file):
    # r0: 40-token prompt, 3 output tokens at t=0; r1: 20 tokens, 2 outputs halfway through
    # r0's prefill
    cm = toy_cm
    t1 = cm.step_time_s([(40, 0)])  # r0's prefill alone (r1 arrives mid-iteration)
    a1 = t1 / 2
    wl = parse_workload(f"trace:{trace_file([(40, 3, 0.0), (20, 2, a1)])}")
    f = run(toy_deployment(), wl, toy_cm, 2)
    t2 = t1 + cm.step_time_s([(20, 0)], 1, 40)  # r0 decodes at context 40, r1 prefills
    t3 = t2 + cm.step_time_s((), 2, 41 + 20)  # both decode
    assert f.first_scheduled_s.tolist() == pytest.approx([0.0, t1], rel=1e-12)
    assert f.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t3, t3], rel=1e-12)
    assert f.ttft_s.tolist() == pytest.approx([t1, t2 - a1], rel=1e-12)
    assert f.tpot_s.tolist() == pytest.approx([(t3 - t1) / 2, t3 - t2], rel=1e-12)


def test_chunked_prefill_shares_budget(toy_deployment, toy_cm, trace_file):
    # budget 64 tokens, chunks of at most 48: r0 (100 tokens) needs three chunks; r1 (30 tokens)
    # arrives at t=0 too and takes what the budget leaves
    dep = toy_deployment(max_num_batched_tokens=64, chunk_size=48)
    wl = parse_workload(f"trace:{trace_file([(100, 2, 0.0), (30, 1, 1e-9)])}")
    f = run(dep, wl, toy_cm, 2)
    cm = toy_cm
    # it1: r0 chunk 48 (r1 arrives 1 ns later, mid-iteration)
    a = cm.step_time_s([(48, 0)])
    # it2: r0 chunk 48 over 48 cached; r1 gets the 16 tokens left of the budget
    b = a + cm.step_time_s([(48, 48), (16, 0)])
    # it3: r0's last 4 tokens (samples its first token), r1's remaining 14 (its only token)
    c = b + cm.step_time_s([(4, 96), (14, 16)])
    # it4: r0 decodes once at context 100 and finishes
    d = c + cm.step_time_s((), 1, 100)
    assert f.first_token_s.tolist() == pytest.approx([c, c], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([d, c], rel=1e-12)


def test_static_batch_matches_cost_model_sum(toy_deployment, toy_cm):
    # B requests at t=0, one prefill iteration for all, then T-1 decode iterations
    B, P, T = 4, 32, 6
    dep = toy_deployment(max_num_seqs=B, max_num_batched_tokens=B * P)
    f = run(dep, parse_workload(f"fixed:{P},{T}", concurrency=B), toy_cm, B)
    pre = toy_cm.step_time_s([(P, 0)] * B)
    e2e = pre + sum(toy_cm.step_time_s((), B, B * (P + j)) for j in range(T - 1))
    assert np.allclose(f.first_token_s, pre, rtol=1e-12)
    assert np.allclose(f.finish_s, e2e, rtol=1e-12)


def test_prefill_first_policy_runs_prompts_before_decodes(toy_deployment, toy_cm, trace_file):
    # budget 30: under prefill_first r1's whole prompt takes the budget and r0 skips a decode
    # (decode_first would run r0's decode and a 29-token chunk of r1)
    dep = toy_deployment(max_num_batched_tokens=30)
    cm = toy_cm
    # r1 arrives halfway through r0's prefill
    wl = parse_workload(f"trace:{trace_file([(30, 3, 0.0), (30, 2, cm.step_time_s([(30, 0)]) / 2)])}")
    f = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True, policy="prefill_first",
                 cost_models={"colocated": cm}).requests
    t1 = cm.step_time_s([(30, 0)])
    t2 = t1 + cm.step_time_s([(30, 0)])
    t3 = t2 + cm.step_time_s((), 2, 60)
    t4 = t3 + cm.step_time_s((), 1, 31)
    assert f.first_token_s.tolist() == pytest.approx([t1, t2], rel=1e-12)
    assert f.finish_s.tolist() == pytest.approx([t4, t3], rel=1e-12)
    g = simulate(dep, wl, num_requests=2, seed=0, keep_requests=True, policy="decode_first",
                 cost_models={"colocated": cm}).requests
    assert g.first_token_s[1] == pytest.approx(t1 + cm.step_time_s([(29, 0)], 1, 30) +
                                               cm.step_time_s([(1, 29)], 1, 31), rel=1e-12)


def test_kv_budget_caps_decode_context_and_blocks(toy_deployment, toy_cm, trace_file):
    # a 64-token per-request budget: decode attention reads at most 64 cached tokens, and the
    # request holds at most 4 blocks of 16, so 4 blocks of pool are enough for a 100-token prompt
    dep = toy_deployment(kv_budget_tokens=64)
    wl = parse_workload(f"trace:{trace_file([(100, 3, 0.0)])}")
    res = simulate(dep, wl, num_requests=1, seed=0, keep_requests=True, kv_blocks=4,
                   cost_models={"colocated": toy_cm})
    cm = toy_cm
    t = cm.step_time_s([(100, 0)]) + 2 * cm.step_time_s((), 1, 64)
    assert res.requests.finish_s[0] == pytest.approx(t, rel=1e-12)
    assert res.metrics.kv_peak_fraction == 1.0
