"""The analytic screen: closed forms at a trickle of load, and its capacity against a simulation."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.specs import load_model
from planner.screen import ReplicaScreen, SLOTarget, ttft_fraction
from planner.shape import WorkloadShape
from planner.timing import ReplicaTiming
from planner.verify import Bisection, Verifier
from sim import Deployment, PoolConfig, SpecConfig, parse_workload
from sim.engine import cost_model_for
from sim.slo import SLO
from sim.spec import expected_tokens_per_step


def screen_for(pool: PoolConfig, shape: WorkloadShape, slo: SLOTarget, model="llama-3.1-8b"):
    pool = pool.resolved()
    cm = cost_model_for(pool, load_model(model))
    return ReplicaScreen(ReplicaTiming(pool, cm), shape, slo, horizon_requests=800)


def test_trickle_of_load_runs_one_sequence_at_a_time():
    # at a near-zero rate a request decodes alone: TPOT = one decode step of batch 1 at its
    # mean context (prompt + half the output); TTFT = the prefill of its prompt
    shape = WorkloadShape.from_lengths([512] * 8, [129] * 8)
    scr = screen_for(PoolConfig("colocated", "h100", tp=1), shape, SLOTarget(1.0, 0.05))
    e = scr.estimate(1e-6)
    t = scr.t
    assert e.ok and e.batch < 1e-3
    assert e.tpot_mean_s == pytest.approx(t.decode_s(1.0, 512 + 129 / 2), rel=1e-6)
    assert e.ttft_mean_s == pytest.approx(t.iter_with_chunk_s(0.0, scr.ctx_mean, 512, "colocated")
                                          + 0.5 * t.decode_s(1.0, scr.ctx_mean), rel=1e-3)


def test_speculation_divides_the_step_by_the_mean_tokens_per_step():
    shape = WorkloadShape.from_lengths([256] * 8, [257] * 8)
    spec = SpecConfig("ngram", None, 3, 0.6)
    scr = screen_for(PoolConfig("colocated", "h100", tp=1, spec=spec), shape, SLOTarget(1.0, 0.05))
    g = expected_tokens_per_step(0.6, 3)
    assert g == pytest.approx((1 - 0.6**4) / 0.4)
    e = scr.estimate(1e-6)
    assert e.tpot_mean_s == pytest.approx(scr.t.decode_s(1.0, scr.ctx_mean) / g, rel=1e-6)


def test_ttft_fraction_of_an_mm1_like_wait():
    # W = 0 w.p. 1 - rho, else Exp(mean W/rho): P(W + S <= t) = 1 - rho exp(-(t - S) rho / W)
    s = np.array([0.1, 0.1])
    assert ttft_fraction(s, 0.5, 0.2, 0.5) == pytest.approx(1 - 0.5 * np.exp(-0.4 / 0.4))
    assert ttft_fraction(s, 0.5, 0.2, 0.05) == 0.0
    assert ttft_fraction(s, 0.0, 0.0, 0.5) == 1.0


def test_the_batch_grows_with_the_rate_and_the_slo_breaks_at_the_capacity():
    shape = WorkloadShape.from_lengths([512] * 64, [128] * 64)
    scr = screen_for(PoolConfig("colocated", "h100", tp=1), shape, SLOTarget(0.5, 0.02))
    cap = scr.capacity()
    assert cap.rate_rps > 0 and cap.binding in ("ttft", "tpot")
    lo, hi = scr.estimate(0.5 * cap.rate_rps), scr.estimate(1.2 * cap.rate_rps)
    assert lo.ok and not hi.ok and lo.batch < cap.at.batch < hi.batch


def test_capacity_matches_the_simulator_within_15_percent():
    # Llama-3.1-8B on one H100, 512-token prompts, 128-token answers, Poisson arrivals: the
    # screen's SLO-constrained capacity against the simulator's goodput by bisection (800
    # requests, seed 0). Measured: screen / simulation = 1.0-1.1 on this case.
    wl = parse_workload("fixed:512,128", rate=1.0)
    slo = SLO(0.5, 0.02)
    from planner.request import PlanInputs

    req = PlanInputs.build(model="llama-3.1-8b", gpus="h100:1", workload="fixed:512,128",
                            rate=1.0, ttft_slo_s=0.5, tpot_slo_s=0.02)
    scr = screen_for(PoolConfig("colocated", "h100", tp=1), req.workload_shape(), SLOTarget(0.5, 0.02))
    cap = scr.capacity().rate_rps
    v = Verifier(wl, slo, 800, 0, workers=1)
    b = Bisection(cap, rel_tol=0.02)
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", tp=1),))
    v.bisect([(dep, b)])
    assert b.goodput > 0
    assert cap / b.goodput == pytest.approx(1.0, abs=0.15)
