"""What a run fit returns (`sim.runs.fit`): each run's predictions before and after the fit
and by a fit without it, and per GPU the fitted values, which parameters were fitted or held,
and the held-out interval."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from costmodel.efficiencies import Efficiencies
from sim.runs.types import MeasuredRun


@dataclass
class RunRow:
    run: MeasuredRun
    before: dict[str, float]
    after: dict[str, float]
    held_out: dict[str, float] = field(default_factory=dict)  # predicted by a fit without it


@dataclass
class RunsFit:
    gpu: str
    params: Efficiencies
    start: Efficiencies
    fitted: tuple[str, ...]
    not_informed: tuple[str, ...]
    rows: list[RunRow]
    interval: dict[str, list[float]]  # metric -> [q10, q90] of log(measured / predicted), held out
    rounds: int
    wall_s: float
    # why the fitted values were set aside (empty: kept): the full replays of the runs at them
    # were further from what was measured than at the starting values
    rejected: str = ""
    held: dict[str, str] = field(default_factory=dict)  # informed, but not told apart: why
    # metric -> how many times its log errors counted in the loss of the fit kept (empty: once;
    # sim.runs.fit refits with a metric weighted up when the plain fit made it worse)
    weights: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        def mape(which):
            out = {}
            for m in ("ttft", "tpot"):
                k = f"{m}_mean_s"
                e = [abs(getattr(r, which)[k] / r.run.measured[k] - 1) for r in self.rows
                     if k in r.run.measured and k in getattr(r, which)]
                out[m] = float(np.mean(e)) if e else None
            return out
        return {"gpu": self.gpu, "runs": len(self.rows), "before": mape("before"),
                "after": mape("after"), "held_out": mape("held_out"), "held": dict(self.held),
                "fitted": {k: getattr(self.params, k) for k in self.fitted},
                "not_informed": list(self.not_informed), "interval_log": self.interval,
                "rounds": self.rounds, "wall_s": self.wall_s, "rejected": self.rejected,
                "metric_weights": dict(self.weights)}
