"""Sweeps: many simulations through one executor interface, locally or on Ray.

`sweep(deployments, workload, ...)` and the planner's verification step hand `SimTask`s to an
`Executor`:
- `LocalExecutor` (the default): a process pool sized to the machine; `workers=1` runs in-process.
- `RayExecutor` (`backend="ray"`): tasks on a Ray cluster at `RAY_ADDRESS` (or `address=`), or a
  local Ray started for you.

Results are identical whichever backend ran them: each task carries its own seed, and results come
back in task order. A task that raises is retried (`retries`) and, if it still fails, reported with
its config in `TaskResult.error`, never dropped. Large inputs (the workload with its trace arrays,
the calibration profile) are shipped once per worker: the process pool passes them to each
worker's initializer, Ray puts them in its object store once and tasks take references.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from costmodel.errors import ServePlanError

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class SimTask:
    """One simulation: a deployment (as its JSON dict) at a rate or concurrency, with its seed."""

    deployment: dict
    num_requests: int
    seed: int
    rate: float | None = None  # overrides the shared workload's rate when set
    concurrency: int | None = None
    tag: Any = None  # the caller's key (returned untouched)


@dataclass
class TaskResult:
    task: SimTask
    metrics: dict | None = None
    error: str | None = None
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class SharedInputs:
    """What every task of one batch shares, shipped to each worker once: the workload (with its
    trace arrays), the SLO and the calibration profile."""

    workload: Any
    slo: Any = None
    calibration: Any = None
    extra: dict = field(default_factory=dict)


def run_task(task: SimTask, shared: SharedInputs) -> dict:
    """Run one simulation and return its flat metrics dict (pure given task + shared)."""
    from sim import simulate
    from sim.deployment import Deployment
    from sim.workload import with_load

    dep = Deployment.from_dict(task.deployment)
    wl = with_load(shared.workload, task.rate, task.concurrency)
    res = simulate(dep, wl, num_requests=task.num_requests, seed=task.seed,
                   calibration=shared.calibration, slo=shared.slo)
    return res.metrics.to_dict()


def _attempt(task: SimTask, shared: SharedInputs, retries: int) -> TaskResult:
    err = None
    for attempt in range(1, retries + 2):
        try:
            return TaskResult(task, run_task(task, shared), None, attempt)
        except ServePlanError as e:  # bad input does not get better by retrying
            return TaskResult(task, None, f"{type(e).__name__}: {e}", attempt)
        except Exception as e:  # noqa: BLE001 - reported with its config, never dropped
            err = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=3)}"
    return TaskResult(task, None, err, retries + 1)


# --- local process pool -----------------------------------------------------------------------
_WORKER_SHARED: SharedInputs | None = None


def _init_worker(shared: SharedInputs) -> None:
    global _WORKER_SHARED
    _WORKER_SHARED = shared


def _pool_run(task: SimTask, retries: int) -> TaskResult:
    assert _WORKER_SHARED is not None, "worker initializer did not run"
    return _attempt(task, _WORKER_SHARED, retries)


class LocalExecutor:
    """A process pool (the embedded default); `workers=1` runs in this process."""

    name = "local"

    def __init__(self, workers: int | None = None, retries: int = 1):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.retries = retries

    def map(self, tasks: Sequence[SimTask], shared: SharedInputs,
            progress: Callable[[int, int], None] | None = None) -> list[TaskResult]:
        out: list[TaskResult] = []
        if self.workers == 1 or len(tasks) <= 1:
            for i, t in enumerate(tasks):
                out.append(_attempt(t, shared, self.retries))
                if progress:
                    progress(i + 1, len(tasks))
            return out
        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)),
                                 initializer=_init_worker, initargs=(shared,)) as pool:
            futures = [pool.submit(_pool_run, t, self.retries) for t in tasks]
            for i, f in enumerate(futures):
                try:
                    out.append(f.result())
                except Exception as e:  # noqa: BLE001 - a worker died: report, don't drop
                    out.append(TaskResult(tasks[i], None, f"worker failed: {type(e).__name__}: {e}"))
                if progress:
                    progress(i + 1, len(tasks))
        return out


# --- Ray ----------------------------------------------------------------------------------------
class RayExecutor:
    """Tasks on Ray: `address` (or $RAY_ADDRESS) names a cluster; otherwise a local Ray starts."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, retries: int = 1):
        try:
            import ray
        except ImportError:
            raise ServePlanError(
                "backend 'ray' needs Ray: pip install 'serveplan[ray]' (or choose --backend local)"
            ) from None
        self._ray = ray
        self.retries = retries
        if not ray.is_initialized():
            addr = address or os.environ.get("RAY_ADDRESS")
            kw: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False,
                                  "include_dashboard": False}
            if addr:
                ray.init(address=addr, **kw)
            else:
                ray.init(num_cpus=workers or os.cpu_count() or 1, **kw)
        self._remote = ray.remote(max_retries=retries)(_ray_run)

    def map(self, tasks: Sequence[SimTask], shared: SharedInputs,
            progress: Callable[[int, int], None] | None = None) -> list[TaskResult]:
        ray = self._ray
        shared_ref = ray.put(shared)  # shipped once; workers read it from the object store
        refs = [self._remote.remote(t, shared_ref, self.retries) for t in tasks]
        index = {r: i for i, r in enumerate(refs)}
        out: list[TaskResult | None] = [None] * len(tasks)
        pending, done_n = list(refs), 0
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for r in ready:
                i = index[r]
                try:
                    out[i] = ray.get(r)
                except Exception as e:  # noqa: BLE001 - worker lost after retries
                    out[i] = TaskResult(tasks[i], None, f"ray task failed: {type(e).__name__}: {e}")
                done_n += 1
                if progress:
                    progress(done_n, len(tasks))
        return [r for r in out if r is not None]


def _ray_run(task: SimTask, shared: SharedInputs, retries: int) -> TaskResult:
    return _attempt(task, shared, retries)


MAX_WORKERS = 256  # simulation processes (or Ray CPUs) one call may ask for


def default_workers() -> int:
    """Local simulation processes when a command is not told: up to two (`plan`, `calibrate`)."""
    return min(2, os.cpu_count() or 1)


def check_workers(workers) -> int | None:
    """`workers` as given (None = the machine's default), or a ServePlanError naming the range:
    a million worker processes would fork until the machine stops answering."""
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ServePlanError(f"workers {workers!r}; expected an integer in [1, {MAX_WORKERS}] (or unset)")
    return workers


def make_executor(backend: str = "local", workers: int | None = None, address: str | None = None,
                  retries: int = 1):
    check_workers(workers)
    if backend == "local":
        return LocalExecutor(workers, retries)
    if backend == "ray":
        return RayExecutor(address, workers, retries)
    raise ServePlanError(f"backend {backend!r}; expected one of {', '.join(BACKENDS)}")


def run_tasks(tasks: Sequence[SimTask], workload, *, slo=None, calibration=None,
              backend: str = "local", workers: int | None = None, executor=None,
              progress: Callable[[int, int], None] | None = None) -> list[TaskResult]:
    """Run tasks sharing one workload (and SLO, calibration) on the chosen backend."""
    ex = executor or make_executor(backend, workers)
    return ex.map(list(tasks), SharedInputs(workload, slo, calibration), progress)


def sweep(deployments: Sequence, workload, *, num_requests: int, seed: int = 0,
          rates: Sequence[float] | None = None, slo=None, calibration=None,
          backend: str = "local", workers: int | None = None, executor=None,
          progress: Callable[[int, int], None] | None = None):
    """Simulate every deployment (x every rate, when given); one row per run, in order.

    Returns a pandas DataFrame with the task's index, rate, the deployment's summary, each metric,
    and `error` (None for a run that succeeded).
    """
    import pandas as pd

    tasks: list[SimTask] = []
    for i, dep in enumerate(deployments):
        d = dep if isinstance(dep, dict) else dep.to_dict()
        for rate in (rates or [None]):
            tasks.append(SimTask(d, num_requests, seed, rate=rate, tag=i))
    results = run_tasks(tasks, workload, slo=slo, calibration=calibration, backend=backend,
                        workers=workers, executor=executor, progress=progress)
    rows = []
    for r in results:
        pools = r.task.deployment["pools"]
        row = {"config": r.task.tag, "rate": r.task.rate, "seed": r.task.seed,
               "mode": r.task.deployment.get("mode"),
               "pools": ";".join(f"{p['role']}:{p['gpu']}:tp{p['tp']}pp{p.get('pp', 1)}x{p.get('replicas', 1)}" for p in pools),
               "error": r.error}
        row.update(r.metrics or {})
        rows.append(row)
    return pd.DataFrame(rows)
