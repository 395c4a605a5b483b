"""`MeasuredRun`: one measured engine run, whatever file it was read from (sim/runs/load.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from costmodel.errors import ServePlanError
from costmodel.specs import load_model
from sim.deployment import Deployment
from sim.traces import Trace
from sim.workload import Workload, parse_workload

ENGINES = ("vllm", "sglang")
# measured keys a run may carry, in seconds (means and percentiles over the measured requests)
MEASURED_KEYS = tuple(f"{m}_{s}_s" for m in ("ttft", "tpot", "itl", "e2e")
                      for s in ("mean", "p50", "p90", "p99"))
# the workload string of a run that carries its requests' own lengths (input_lens, output_lens)
PER_REQUEST = "per-request"

# what a run can hold at all: beyond these a value is a wrong field or unit, not a run
MAX_TOKENS = 10_000_000  # tokens of one request
MAX_CONCURRENCY = 1_000_000  # clients
RATE_RANGE = (1e-6, 1e6)  # requests/s
MAX_REQUESTS = 10_000_000  # requests in one run
LATENCY_RANGE_S = (1e-6, 86_400.0)  # any latency statistic: a microsecond to a day


def check_context(model: str, tokens: int, where: str, what: str) -> None:
    """A request of `tokens` (prompt + output) must fit the model's context: the simulator
    cannot serve a longer one."""
    spec = load_model(model)
    if tokens > spec.max_position:
        raise ServePlanError(f"{where}: {what} {tokens:,} tokens, more than {spec.name}'s context of "
                             f"{spec.max_position:,} in ServePlan (a rope-scaled model: give its "
                             "config.json as the model)")


def check_measured(measured: dict[str, float], where: str, num_requests: int | None) -> None:
    """Values no run can have: a latency outside LATENCY_RANGE_S (a wrong unit or field),
    percentiles of one metric out of order (p50 <= p90 <= p99), more requests than
    MAX_REQUESTS."""
    lo, hi = LATENCY_RANGE_S
    for k, v in measured.items():
        if not lo <= v <= hi:
            raise ServePlanError(f"{where}: {k} = {v:.3g} s; a latency lies between {lo:g} s and "
                                 f"{hi:g} s (a field in the wrong unit?)")
    for m in {k.split("_")[0] for k in measured}:
        qs = [(q, measured[f"{m}_{q}_s"]) for q in ("p50", "p90", "p99") if f"{m}_{q}_s" in measured]
        for (q1, v1), (q2, v2) in zip(qs, qs[1:], strict=False):
            if v2 < v1 * (1 - 1e-6):
                raise ServePlanError(f"{where}: {m} {q2} {v2:.4g} s is below its {q1} {v1:.4g} s; "
                                     "percentiles of one metric rise")
    if num_requests is not None and not 1 <= num_requests <= MAX_REQUESTS:
        raise ServePlanError(f"{where}: {num_requests} requests; expected 1 to {MAX_REQUESTS:,}")


@dataclass(frozen=True)
class MeasuredRun:
    """One benchmark run: a deployment under a workload, and what the client measured."""

    source: str  # the file it came from
    run_id: str  # a stable id inside that file
    engine: str  # vllm | sglang
    engine_version: str
    deployment: Deployment
    # a workload string: fixed:ISL,OSL or uniform:LO-HI,LO-HI; per-request:ISL_MEAN,OSL_MEAN when
    # input_lens / output_lens hold each measured request's own lengths
    workload: str
    concurrency: int | None = None  # closed loop: clients
    rate_rps: float | None = None  # open loop: requests/s
    num_requests: int | None = None  # as run, when the file says
    measured: dict[str, float] = field(default_factory=dict)  # MEASURED_KEYS -> seconds
    burstiness_cv: float = 1.0  # open loop: CV of the inter-arrival gaps (1 = Poisson)
    input_lens: tuple[int, ...] | None = None  # tokens, one per measured request, in file order
    output_lens: tuple[int, ...] | None = None
    note: str = ""  # what the reader assumed where the file is silent (how lengths were taken, ...)
    policy: str | None = None  # the engine's scheduler as run (sim.scheduler); None: its default

    def __post_init__(self):
        where = f"{self.source} run {self.run_id}"
        if self.engine not in ENGINES:
            raise ServePlanError(f"{where}: engine {self.engine!r}; expected one of {', '.join(ENGINES)}")
        if (self.concurrency is None) == (self.rate_rps is None):
            raise ServePlanError(f"{where}: give a concurrency or a rate")
        unknown = set(self.measured) - set(MEASURED_KEYS)
        if unknown:
            raise ServePlanError(f"{where}: measured {sorted(unknown)}; known: {', '.join(MEASURED_KEYS)}")
        for k, v in self.measured.items():
            if not (isinstance(v, float) and math.isfinite(v) and v > 0):
                raise ServePlanError(f"{where}: {k}={v!r}; expected seconds > 0")
        if (self.input_lens is None) != (self.output_lens is None):
            raise ServePlanError(f"{where}: give both input_lens and output_lens, or neither")
        if self.input_lens is not None:
            if len(self.input_lens) != len(self.output_lens) or not self.input_lens:
                raise ServePlanError(f"{where}: input_lens has {len(self.input_lens)} requests, "
                                     f"output_lens {len(self.output_lens)}; expected the same number >= 1")
            if min(self.input_lens) < 1 or min(self.output_lens) < 1:
                raise ServePlanError(f"{where}: request lengths must be whole numbers >= 1")
            if not self.workload.startswith(f"{PER_REQUEST}:"):
                raise ServePlanError(f"{where}: a run with per-request lengths has workload "
                                     f"{PER_REQUEST}:ISL_MEAN,OSL_MEAN, not {self.workload!r}")

    @property
    def lengths(self) -> tuple[int, int]:
        """(input, output) tokens of a fixed-length workload."""
        kind, _, body = self.workload.partition(":")
        if kind != "fixed":
            raise ServePlanError(f"run {self.run_id}: workload {self.workload!r} has no fixed lengths")
        isl, osl = (int(x) for x in body.split(","))
        return isl, osl

    @property
    def mean_lengths(self) -> tuple[float, float]:
        """Mean (input, output) tokens per request, whatever the workload."""
        if self.input_lens is not None:
            return float(np.mean(self.input_lens)), float(np.mean(self.output_lens))
        w = self.to_workload()
        p = w.length_params
        if w.lengths == "fixed":
            return p[0], p[1]
        if w.lengths == "uniform":
            return (p[0] + p[1]) / 2, (p[2] + p[3]) / 2
        return p[0], p[1]  # lognormal: its means

    def to_workload(self) -> Workload:
        """The simulator's workload of this run: its lengths, and its concurrency or rate (with
        its burstiness). Per-request lengths become an in-memory trace, replayed in file order
        by a closed loop and resampled under random arrivals (as `trace:PATH` would be)."""
        per_request = self.input_lens is not None
        w = parse_workload("fixed:1,1" if per_request else self.workload, rate=self.rate_rps,
                           concurrency=self.concurrency, burstiness_cv=self.burstiness_cv)
        if not per_request:
            return w
        trace = Trace(f"{self.source}#{self.run_id}", "native",
                      np.asarray(self.input_lens, np.int64), np.asarray(self.output_lens, np.int64),
                      None)
        return replace(w, name=self.workload, lengths="trace", length_params=(), trace=trace)
