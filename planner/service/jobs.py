"""What the service's worker processes run: plan, simulate, cost step, under a deadline.

Each job takes plain keyword arguments (already checked by the schemas and the data folder)
and returns the same JSON as the CLI command (`serveplan plan|simulate|cost step --json`),
through the CLI's own JSON cleaning (NaN and infinity become null).

`run_job(kind, kwargs, deadline)` is the function the process pool calls. The deadline is an
absolute `time.monotonic()` instant (CLOCK_MONOTONIC is system-wide on Linux, so the parent's
clock and the worker's agree). A job still running at the deadline is interrupted by SIGALRM in
the worker itself, so a timed-out request frees its worker instead of computing on unseen; the
interrupt is a BaseException, so library code that retries on `Exception` cannot swallow it.
Outcomes come back as data, ("ok", result) | ("error", message) | ("timeout", message), never
as pickled library exceptions (some carry extra constructor arguments that do not unpickle).
"""

from __future__ import annotations

import json
import signal
import time

from costmodel.errors import ServePlanError
from costmodel.jsonio import dump_json


class DeadlineExceeded(BaseException):
    """The request's time limit passed while its job ran (raised by SIGALRM)."""


def _calibration(value):
    """None, a path (already checked against the data folder) or an inline profile dict."""
    if value is None:
        return None
    from costmodel.calibration import CalibrationProfile

    if isinstance(value, dict):
        return CalibrationProfile.from_dict(value, "calibration")
    return CalibrationProfile.load(value)


def _json(obj) -> dict:
    return json.loads(dump_json(obj))


def plan_job(**kw) -> dict:
    """`planner.plan(**kw)` in this process (backend local, one worker: no nested pools)."""
    from planner.planning import plan

    kw["calibration"] = _calibration(kw.get("calibration"))
    return _json(plan(**kw, backend="local", workers=1).to_dict())


def simulate_job(*, deployment: dict, workload: str, rate=None, concurrency=None,
                 burstiness_cv=1.0, num_requests: int, seed: int, ttft_slo_s=None,
                 tpot_slo_s=None, slo_percentile=90.0, attainment=0.9, policy=None,
                 host_cache_gib=0.0, calibration=None) -> dict:
    """`serveplan simulate`: RunMetrics of one simulation."""
    from planner.uncertainty import simulated_metrics
    from sim import Deployment, parse_workload, simulate
    from sim.slo import requested_slo

    dep = Deployment.from_dict(deployment)
    slo = requested_slo(ttft_slo_s, tpot_slo_s, slo_percentile, attainment)
    wl = parse_workload(workload, rate=rate, concurrency=concurrency, burstiness_cv=burstiness_cv)
    cal = _calibration(calibration)
    res = simulate(dep, wl, num_requests=num_requests, seed=seed, calibration=cal, slo=slo,
                   policy=policy, host_cache_gib=host_cache_gib)
    return _json(simulated_metrics(cal, dep, res)[0])


def cost_step_job(**kw) -> dict:
    """`serveplan cost step`: one iteration's time per operator and the memory plan."""
    from costmodel.step import cost_step

    kw["calibration"] = _calibration(kw.get("calibration"))
    return _json(cost_step(**kw))


def warm_job() -> str:
    """Import what the jobs need, so a worker's first real request does not pay for it."""
    import planner.planning  # noqa: F401
    import sim.engine  # noqa: F401

    return "ok"


JOBS = {"plan": plan_job, "simulate": simulate_job, "cost_step": cost_step_job, "warm": warm_job}


def _on_alarm(signum, frame):
    raise DeadlineExceeded()


def run_job(kind: str, kwargs: dict, deadline: float) -> tuple[str, object]:
    """Run one job before `deadline` (time.monotonic() seconds); outcomes as data."""
    limit = deadline - time.monotonic()
    if limit <= 0:
        return "timeout", "the request waited in the queue past its time limit"
    use_alarm = hasattr(signal, "setitimer")
    if use_alarm:
        old = signal.signal(signal.SIGALRM, _on_alarm)
        # fires at the deadline, then every second in case something catches the first one
        signal.setitimer(signal.ITIMER_REAL, limit, 1.0)
    try:
        return "ok", JOBS[kind](**kwargs)
    except DeadlineExceeded:
        return "timeout", "the computation passed the request's time limit"
    except ServePlanError as e:
        return "error", str(e)
    except FileNotFoundError as e:
        return "error", f"file not found: {e.filename or e}"
    finally:
        if use_alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
