"""`MeasuredRun`: one measured engine run (read by the format modules, see sim/runs/load.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from costmodel.errors import ServePlanError
from sim.deployment import Deployment

ENGINES = ("vllm", "sglang")
# measured keys a run may carry, in seconds (means and percentiles over the measured requests)
MEASURED_KEYS = tuple(f"{m}_{s}_s" for m in ("ttft", "tpot", "itl", "e2e")
                      for s in ("mean", "p50", "p90", "p99"))


@dataclass(frozen=True)
class MeasuredRun:
    """One benchmark run: a deployment under a workload, and what the client measured."""

    source: str  # the file it came from
    run_id: str  # a stable id inside that file
    engine: str  # vllm | sglang
    engine_version: str
    deployment: Deployment
    workload: str  # a workload string: fixed:ISL,OSL (or trace:PATH for per-request lengths)
    concurrency: int | None = None  # closed loop: clients
    rate_rps: float | None = None  # open loop: requests/s
    num_requests: int | None = None  # as run, when the file says
    measured: dict[str, float] = field(default_factory=dict)  # MEASURED_KEYS -> seconds

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ServePlanError(f"{self.source} run {self.run_id}: engine {self.engine!r}; "
                                 f"expected one of {', '.join(ENGINES)}")
        if (self.concurrency is None) == (self.rate_rps is None):
            raise ServePlanError(f"{self.source} run {self.run_id}: give a concurrency or a rate")
        unknown = set(self.measured) - set(MEASURED_KEYS)
        if unknown:
            raise ServePlanError(f"{self.source} run {self.run_id}: measured {sorted(unknown)}; "
                                 f"known: {', '.join(MEASURED_KEYS)}")
        for k, v in self.measured.items():
            if not (isinstance(v, float) and math.isfinite(v) and v > 0):
                raise ServePlanError(f"{self.source} run {self.run_id}: {k}={v!r}; expected seconds > 0")

    @property
    def lengths(self) -> tuple[int, int]:
        """(input, output) tokens of a fixed-length workload."""
        kind, _, body = self.workload.partition(":")
        if kind != "fixed":
            raise ServePlanError(f"run {self.run_id}: workload {self.workload!r} has no fixed lengths")
        isl, osl = (int(x) for x in body.split(","))
        return isl, osl
