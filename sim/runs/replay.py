"""Simulate a measured run as it ran: its deployment, workload, concurrency or rate, and the
requests its client measured.

A benchmark client at a fixed concurrency (vllm bench serve, SGLang bench_serving, aiperf,
GenAI-Perf) starts its measured phase with every client sending at once (aiperf after a warm-up
that drains first) and averages every request of that phase, the first burst and the last
stragglers included. The replay does the same: the run's own request count (or WAVES x its
concurrency when the file does not say), all of them counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.engine import simulate
from sim.runs.types import MeasuredRun

# a closed loop replays this many waves of its clients (at least MIN_REQUESTS requests); the
# first and last 10% of requests by arrival are left out of the means, as `simulate` does
WAVES = 10
MIN_REQUESTS = 200


@dataclass(frozen=True)
class Replayed:
    run: MeasuredRun
    predicted: dict[str, float]  # the measured keys the run has, predicted
    num_requests: int
    sim_wall_s: float


def replay_requests(run: MeasuredRun) -> int:
    if run.num_requests:
        return run.num_requests
    if run.concurrency:
        return max(WAVES * run.concurrency, MIN_REQUESTS)
    return MIN_REQUESTS * 5


def replay(run: MeasuredRun, *, calibration=None, seed: int = 0,
           num_requests: int | None = None, warmup_fraction: float = 0.0,
           cooldown_fraction: float = 0.0) -> Replayed:
    """Predicted means (and percentiles the run measured) of one run; every request counted
    unless warm-up / cool-down fractions say otherwise."""
    n = num_requests or replay_requests(run)
    res = simulate(run.deployment, run.to_workload(), num_requests=n, seed=seed, calibration=calibration,
                   policy=run.policy,
                   warmup_fraction=warmup_fraction, cooldown_fraction=cooldown_fraction)
    m = res.metrics.to_dict()
    pred = {k: float(m[k]) for k in run.measured if k in m}
    return Replayed(run, pred, n, float(m.get("sim_wall_s", 0.0)))
