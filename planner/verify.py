"""Simulator verification: goodput by bisection on the load, as DistServe does.

A deployment's goodput is the highest load (requests/s, or clients for a closed loop) at which
the simulator says the SLO holds (`RunMetrics.slo_met`: each metric's percentile within its
target and the attainment reached). Several bisections advance in rounds: each round asks every
unfinished bisection for its next load and runs those simulations together through the
simulator's executor (in-process, a local process pool, or Ray), so results do not depend on the
backend. When a round has fewer live bisections than `ROUND_WIDTH` (2, a constant rather than
the worker count, so that the plan is the same on any number of workers), the spare probes go to
further points of the same bisections (`Bisection.next_loads`): fewer rounds on two workers,
the same stopping rule. Every simulation uses the same request stream (same seed and count) at every load:
common random numbers keep the attainment curve close to monotone.

The first probe is the screen's estimate; brackets grow geometrically from it (x1.2, then x1.6),
then shrink by geometric midpoints until hi / lo <= 1 + tol: with a screen within 10%, about five
simulations per deployment.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from sim.deployment import Deployment
from sim.slo import SLO
from sim.sweep import (
    SharedInputs,
    SimTask,
    TaskResult,
    check_workers,
    default_workers,
    make_executor,
    run_task,
)

_WORKER: dict = {}


def _worker_init(shared) -> None:
    _WORKER["shared"] = shared


def _worker_run(task: SimTask) -> TaskResult:
    try:
        return TaskResult(task, run_task(task, _WORKER["shared"]))
    except Exception as e:  # noqa: BLE001 - reported with the task, never dropped
        return TaskResult(task, None, f"{type(e).__name__}: {e}")


class PersistentPool:
    """A local process pool kept across rounds (the sweep executor starts one per batch, which
    costs more than a verification round's simulations on a small machine)."""

    name = "local"

    def __init__(self, workers: int, shared):
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init,
                                         initargs=(shared,))

    def map(self, tasks, shared, progress=None) -> list[TaskResult]:
        if len(tasks) == 1:
            t = tasks[0]
            try:
                return [TaskResult(t, run_task(t, shared))]
            except Exception as e:  # noqa: BLE001
                return [TaskResult(t, None, f"{type(e).__name__}: {e}")]
        return list(self._pool.map(_worker_run, tasks))

    def map_fn(self, fn, items) -> list:
        """`fn` over `items` in the workers, results in order (the planner's screen)."""
        return list(self._pool.map(fn, items))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


# simulations a verification round asks for when fewer bisections are live (the default local
# worker count); fixed so that the plan is the same on 1 worker, 2 workers or Ray
ROUND_WIDTH = 2

@dataclass
class Probe:
    load: float
    met: bool
    margin: float  # >= 0 met (how much slack), < 0 missed (how far)
    metrics: dict


def slo_margin(m: dict, slo: SLO) -> float:
    """Signed distance to the SLO boundary, relative: min over attainment and the p90 targets."""
    terms = [m["slo_attainment"] - slo.attainment]
    if abs(slo.percentile - 90.0) < 1e-9:
        for key, target in (("ttft_p90_s", slo.ttft_s), ("tpot_p90_s", slo.tpot_s)):
            v = m.get(key)
            if v is not None and math.isfinite(v):
                terms.append((target - v) / target)
    val = min(terms)
    if m.get("slo_met") and val < 0:
        val = 0.0
    if not m.get("slo_met") and val >= 0:
        val = -1e-3
    return val


def failure_reason(p: Probe, slo) -> str:
    """What a failed probe ran out of: memory (preemptions, a full KV cache, rejections), else
    the target it missed by more, ttft or tpot."""
    m = p.metrics
    if m.get("preemptions", 0) > 0 or m.get("kv_peak_fraction", 0.0) >= 0.99:
        return "memory"
    if m.get("num_rejected", 0) > 0:
        return "memory"
    ttft_over = m["ttft_p90_s"] / slo.ttft_s if slo.ttft_s else 0.0
    tpot_over = (m["tpot_p90_s"] / slo.tpot_s) if (slo.tpot_s and m.get("tpot_p90_s") == m.get("tpot_p90_s")) else 0.0
    return "ttft" if ttft_over >= tpot_over else "tpot"


@dataclass
class Bisection:
    """Highest SLO-meeting load, from a first guess."""

    guess: float
    integer: bool = False
    rel_tol: float = 0.025
    max_probes: int = 9
    floor: float = 1e-3
    grow: float | None = None  # bracket step factor; None: 1.2 then 1.6 (a good first guess)
    requests_for: Callable[[float], int] | None = None  # requests per simulation at a load
    probes: list[Probe] = field(default_factory=list)
    extra: int = 0  # probes run beside a round's first one (spare workers); not held to max_probes

    def _round(self, x: float) -> float:
        return float(max(1, round(x))) if self.integer else float(x)

    @property
    def best(self) -> Probe | None:
        met = [p for p in self.probes if p.met]
        return max(met, key=lambda p: p.load) if met else None

    @property
    def lowest_fail(self) -> Probe | None:
        bad = [p for p in self.probes if not p.met and (self.best is None or p.load > self.best.load)]
        return min(bad, key=lambda p: p.load) if bad else None

    @property
    def goodput(self) -> float:
        b = self.best
        return b.load if b is not None else 0.0

    def done(self) -> bool:
        if len(self.probes) - self.extra >= self.max_probes:
            return True
        lo, hi = self.best, self.lowest_fail
        if lo is None:
            return bool(self.probes) and min(p.load for p in self.probes) <= self.floor * 1.0001
        if hi is None:
            return False
        if self.integer and hi.load - lo.load <= 1:
            return True
        return hi.load <= lo.load * (1 + self.rel_tol)

    def next_load(self) -> float | None:
        if self.done():
            return None
        if not self.probes:
            return self._round(max(self.guess, self.floor))
        lo, hi = self.best, self.lowest_fail
        tried = {p.load for p in self.probes}
        first = len(self.probes) < 3
        if lo is None:  # everything failed so far: step down
            f = 1.0 / self.grow if self.grow else (0.8 if first else 0.5)
            x = self._round(max(min(p.load for p in self.probes) * f, self.floor))
            if self.integer and x in tried and x > 1:
                x -= 1
        elif hi is None:  # everything met: step up
            f = self.grow or (1.2 if first else 1.6)
            x = self._round(lo.load * f)
            if self.integer and x in tried:
                x += 1
        else:
            # geometric bisection: the attainment curve is a cliff, so regula falsi on the
            # margin crawls along one side; halving the log-bracket takes a known 3 steps
            x = self._round(math.sqrt(lo.load * hi.load))
            if x <= lo.load or x >= hi.load:
                x = self._round(0.5 * (lo.load + hi.load))
        if x in tried:
            return None
        return x

    def next_loads(self, k: int = 1) -> list[float]:
        """Up to `k` loads for one round (k > 1 when workers would otherwise idle): inside a
        bracket, the points that cut its log-width into k + 1 equal parts (two probes shrink it
        x3 in one round, where one probe per round takes two rounds to shrink it x4); while
        stepping up or down, the next k steps (the first one is `next_load()`)."""
        x = self.next_load()
        if x is None or k <= 1:
            return [] if x is None else [x]
        lo, hi = self.best, self.lowest_fail
        if lo is not None and hi is not None:
            r = hi.load / lo.load
            xs = [self._round(lo.load * r ** (i / (k + 1))) for i in range(1, k + 1)]
            xs = [v for v in xs if lo.load < v < hi.load] or [x]
        else:
            f = x / (lo.load if lo is not None else (min(p.load for p in self.probes)
                                                      if self.probes else x))
            if not self.probes:  # first probe: the screen tends to be optimistic, so step down
                f = 1.0 / self.grow if self.grow else 0.8
            xs = [x]
            for _ in range(k - 1):
                xs.append(self._round(max(xs[-1] * f, self.floor)))
        tried = {p.load for p in self.probes}
        out = [v for v in dict.fromkeys(xs) if v not in tried]
        self.extra += max(0, len(out) - 1)
        return out

    def record(self, load: float, metrics: dict, slo: SLO) -> None:
        self.probes.append(Probe(load, bool(metrics.get("slo_met")), slo_margin(metrics, slo), metrics))


class Verifier:
    """Runs simulations of deployments at loads; memoised; counts simulations and their time."""

    def __init__(self, workload, slo: SLO, num_requests: int, seed: int, calibration=None,
                 backend: str = "local", workers: int | None = 1, closed_loop: bool = False):
        self.workload = workload
        self.slo = slo
        self.num_requests = num_requests
        self.seed = seed
        self.calibration = calibration
        self.closed_loop = closed_loop
        self.shared = SharedInputs(workload, slo, calibration)
        n = check_workers(workers) or default_workers()
        # probes a round asks for: a constant, not the worker count, so that a plan does not
        # depend on how many processes ran it (the service plans with 1 worker, the CLI with 2,
        # Ray with what it has); the executor runs them side by side or in turn
        self.parallel = ROUND_WIDTH
        if backend == "local" and n > 1:
            self.executor = PersistentPool(n, self.shared)
        else:
            self.executor = make_executor(backend, 1 if backend == "local" else workers)
        self.sims = 0
        self.sim_s = 0.0
        self.deadline: float | None = None  # time.perf_counter() at which bisecting stops
        self.time_limit_s: float | None = None
        self.stopped_early: str | None = None  # what the deadline cut short, when it did
        self._memo: dict[tuple[str, float], dict] = {}

    def _key(self, dep: Deployment, load: float, n: int) -> tuple[str, float, int]:
        """Memo key: what the simulation depends on (GPU prices do not change a run, so a
        priced deployment reuses the unpriced unit's result)."""
        d = dep.to_dict()
        d["pools"] = [{k: v for k, v in p.items() if k != "gpu_price_per_hour_usd"} for p in d["pools"]]
        return json.dumps(d, sort_keys=True), float(load), int(n)

    def run(self, items: Sequence[tuple], ) -> list[dict]:
        """Metrics (RunMetrics.to_dict()) of each (deployment, load[, num_requests]); raises on
        a failed run."""
        items = [(it[0], it[1], it[2] if len(it) > 2 and it[2] else self.num_requests) for it in items]
        keys = [self._key(d, x, n) for d, x, n in items]
        todo, seen = [], set()
        for (dep, load, n), k in zip(items, keys, strict=True):
            if k not in self._memo and k not in seen:
                seen.add(k)
                if self.closed_loop:
                    todo.append(SimTask(dep.to_dict(), n, self.seed, concurrency=int(load), tag=k))
                else:
                    todo.append(SimTask(dep.to_dict(), n, self.seed, rate=load, tag=k))
        if todo:
            t0 = time.perf_counter()
            results = self.executor.map(todo, self.shared)
            self.sim_s += time.perf_counter() - t0
            self.sims += len(todo)
            for r in results:
                if not r.ok:
                    raise RuntimeError(f"simulation failed: {r.error}")
                self._memo[r.task.tag] = r.metrics
        return [self._memo[k] for k in keys]

    @property
    def expired(self) -> bool:
        return self.deadline is not None and time.perf_counter() >= self.deadline

    def close(self) -> None:
        close = getattr(self.executor, "close", None)
        if close is not None:
            close()

    def bisect(self, jobs: Sequence[tuple[Deployment, Bisection]],
               progress: Callable[[str], None] | None = None,
               settled: Callable[[], set[int]] | None = None) -> None:
        """Advance every bisection to completion, one batch of simulations per round.

        settled: returns the bisections (their ids) whose refinement can stop (they cannot win)."""
        rnd = 0
        while True:
            stop = settled() if settled is not None and rnd > 0 else set()
            live = [(dep, b) for dep, b in jobs if id(b) not in stop and b.next_load() is not None]
            if not live:
                return
            if self.expired:
                self.stopped_early = (f"time limit {self.time_limit_s:g} s reached with {len(live)} "
                                      f"bisection(s) unfinished after {rnd} round(s)")
                return
            # workers a round would leave idle probe further points of the same bisections
            spare = max(0, self.parallel - len(live))
            batch = []
            for i, (dep, b) in enumerate(live):
                k = 1 + spare // len(live) + (1 if i < spare % len(live) else 0)
                batch += [(dep, b, x) for x in b.next_loads(k)]
            rnd += 1
            if progress:
                progress(f"verify round {rnd}: {len(batch)} simulation(s)")
            metrics = self.run([(d, x, b.requests_for(x) if b.requests_for else None)
                                for d, b, x in batch])
            for (_, b, x), m in zip(batch, metrics, strict=True):
                b.record(x, m, self.slo)
