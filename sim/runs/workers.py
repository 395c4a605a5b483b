"""Full replays of a run fit in worker processes.

A run fit (`sim.runs.fit`) replays every run at each estimate it tries: the runs are
independent simulations, each seeded, so they can run side by side and give the same numbers in
any number of processes. `replay_workers(n)` opens a process pool for the fits inside it;
`replay_each` runs one replay function over the runs in that pool, or here when there is none.
The longest replays (most output tokens) are handed out first so that one long run
does not start last. `replay_run` is the replay they run (one run as it ran, at the profile
`profile_at` builds from the fit's estimate); `cost_models_of` gives the cost models a recorded
replay is re-timed with (`sim.runs.surrogate`).
"""

from __future__ import annotations

import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

from costmodel.calibration import CalibrationProfile, GpuCalibration
from costmodel.efficiencies import Efficiencies
from costmodel.specs import load_model
from sim.engine import cost_model_for, simulate
from sim.runs.replay import replay_requests
from sim.runs.types import MeasuredRun
from sim.sweep import check_workers

_POOL: ContextVar[ProcessPoolExecutor | None] = ContextVar("replay_pool", default=None)


@contextmanager
def replay_workers(workers: int | None):
    """Replays of the run fits inside run in `workers` processes (1 or None: in this one)."""
    n = check_workers(workers) or 1
    if n == 1:
        yield
        return
    # fork where it is safe (Linux: the workers start at once with the runs already loaded);
    # elsewhere the platform's default (spawn: macOS's system libraries are not fork-safe)
    ctx = mp.get_context("fork") if sys.platform.startswith("linux") else None
    pool = ProcessPoolExecutor(max_workers=n, mp_context=ctx)
    token = _POOL.set(pool)
    try:
        yield
    finally:
        _POOL.reset(token)
        pool.shutdown(cancel_futures=True)


def _cost(run) -> float:
    """How long a replay of `run` takes, roughly: the output tokens of the requests it replays."""
    return replay_requests(run) * max(run.mean_lengths[1], 1.0)


def replay_each(fn, runs: list, prof, record: bool) -> list:
    """[fn(run, prof, record) for run in runs], in the pool of `replay_workers` when one is open
    (`fn` a module-level function, so that it pickles), in order."""
    pool = _POOL.get()
    if pool is None or len(runs) <= 1:
        return [fn(r, prof, record) for r in runs]
    order = sorted(range(len(runs)), key=lambda i: -_cost(runs[i]))
    futures = {i: pool.submit(fn, runs[i], prof, record) for i in order}
    try:
        return [futures[i].result() for i in range(len(runs))]
    except BaseException:  # a replay that raised (one that does not fit): the rest are not needed
        for f in futures.values():
            f.cancel()
        raise


def cost_models_of(run: MeasuredRun, calibration) -> dict:
    """{replica index: CostModel} of `run`'s deployment under `calibration`."""
    model = load_model(run.deployment.model)
    out, idx = {}, 0
    for pool in run.deployment.pools:
        cm = cost_model_for(pool, model, calibration, run.deployment.engine)
        for _ in range(pool.replicas):
            out[idx] = cm
            idx += 1
    return out


def profile_at(gpu: str, eff: Efficiencies, base: CalibrationProfile | None) -> CalibrationProfile:
    """`base` (or nothing) with `gpu`'s parameters replaced by `eff`: what a fit replays at."""
    prof = CalibrationProfile(source="engine runs")
    if base is not None:
        prof.gpus.update(base.gpus)
        prof.tables.update(base.tables)
        prof.hardware.update(base.hardware)
    old = prof.calibration_for(gpu)
    prof.gpus[gpu] = GpuCalibration(eff, {}, old.uncertainty_rel if old else 0.0,
                                    dict(old.sources) if old else {})
    return prof


def replay_run(run: MeasuredRun, calibration, record: bool):
    """(SimResult, the measured keys predicted) of `run` as it ran, every request counted;
    `record`: its iterations too (sim.runs.surrogate)."""
    res = simulate(run.deployment, run.to_workload(), num_requests=replay_requests(run),
                   seed=0, calibration=calibration, policy=run.policy,
                   warmup_fraction=0.0, cooldown_fraction=0.0, record_steps=record)
    m = res.metrics.to_dict()
    return res, {k: float(m[k]) for k in run.measured if k in m}
