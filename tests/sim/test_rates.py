"""Throughput and goodput are steady-state rates: a system that keeps up serves the offered load."""

from __future__ import annotations

import numpy as np
import pytest

from sim import simulate
from sim.deployment import Deployment, PoolConfig
from sim.metrics import _tokens_within
from sim.slo import SLO
from sim.workload import parse_workload


def test_light_load_serves_offered_rate():
    rate, osl = 4.0, 200
    dep = Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100"),))
    m = simulate(dep, parse_workload(f"fixed:512,{osl}", rate=rate), num_requests=1500, seed=2,
                 slo=SLO(1.0, 0.1)).metrics
    assert m.slo_attainment == 1.0
    # Poisson arrivals: the measured slice's own rate is within a few % of 4/s
    assert m.goodput_rps == pytest.approx(m.request_rate_rps)
    assert m.goodput_rps == pytest.approx(rate, rel=0.08)
    # every request's tokens, spread over its decode: throughput = rate x output length
    assert m.throughput_tok_s == pytest.approx(m.request_rate_rps * osl, rel=0.05)


def test_tokens_within_spreads_each_request_over_its_decode():
    ft = np.array([0.0, 5.0, 20.0])
    fin = np.array([10.0, 15.0, np.inf])  # the third is still generating at the end
    out = np.array([11, 3, 5])
    rej = np.zeros(3, bool)
    # window [5, 12]: req0's first token (t=0) is outside, its other 10 spread over (0, 10], half
    # of which lies in the window -> 5; req1's first token (t=5) is in, its other 2 spread over
    # (5, 15], 7/10 in the window -> 1.4; req2 starts after the window -> 0.
    assert _tokens_within(ft, fin, out, rej, 5.0, 12.0) == pytest.approx(5.0 + 1.0 + 1.4)
