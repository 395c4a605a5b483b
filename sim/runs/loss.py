"""What a run fit (`sim.runs.fit`) minimises and what it reports: the log errors of each run's
measured keys, their robust sum, and each metric's MAPE over the runs.

The loss can weigh a metric's log errors up (`weighted`): a fit whose full replays trade one
metric's error for another's is refitted with the metric it made worse counting more, before
it is set aside (`sim.runs.fit.REFIT_FACTOR`, `REFIT_ROUNDS`). The weights live in a context variable, so the
surrogate solves, the full-replay comparisons and the leave-one-out refits of one fit all see the
same loss; the reported errors (`objective`) are never weighted.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

from sim.runs.types import MeasuredRun

# robust loss: log errors past ~10% weigh less than squared, so a few runs whose error comes from
# something the engine parameters do not describe (a scheduler, a KV admission rule) do not drag
# every parameter towards them
LOSS, F_SCALE = "soft_l1", 0.1
NO_PREDICTION_S = 1e-9  # what a missing prediction counts as in the residuals
STREAM_TOL = 0.01  # the least relative loss a longer chunk time must gain over a shorter one

_WEIGHTS: ContextVar[dict[str, float] | None] = ContextVar("run_fit_metric_weights", default=None)


@contextmanager
def metric_weights(weights: dict[str, float]) -> Iterator[None]:
    """Within the block, the loss counts metric m's log errors `weights[m]` times (1 if absent)."""
    bad = {m: w for m, w in weights.items() if not (np.isfinite(w) and w > 0)}
    if bad:
        raise ValueError(f"metric weights {bad}; expected positive numbers")
    token = _WEIGHTS.set(dict(weights))
    try:
        yield
    finally:
        _WEIGHTS.reset(token)


def current_weights() -> dict[str, float]:
    return dict(_WEIGHTS.get() or {})


def weights_text(weights: dict[str, float]) -> str:
    """How reports name the weights: `TPOT x2, TTFT x4`."""
    return ", ".join(f"{m.upper()} x{w:g}" for m, w in weights.items())


def residuals(preds: list[dict], runs: list[MeasuredRun], metrics=None, weighted: bool = False) -> np.ndarray:
    """log(predicted / measured) of every measured key a prediction holds (times its metric's
    weight when `weighted`). A prediction that is not a positive number (no sample left to
    average) counts as NO_PREDICTION_S, so the vector keeps its length from one evaluation to the
    next, as least squares needs."""
    w = (_WEIGHTS.get() or {}) if weighted else {}
    out = []
    for p, r in zip(preds, runs, strict=True):
        for k, v in r.measured.items():
            m = k.split("_")[0]
            if k in p and (metrics is None or m in metrics):
                x = p[k]
                out.append(w.get(m, 1.0) * np.log((x if x > 0 and np.isfinite(x) else NO_PREDICTION_S) / v))
    return np.asarray(out)


def robust_loss(preds: list[dict], runs: list[MeasuredRun]) -> float:
    """The surrogate fit's loss (soft L1 on the weighted log errors, scale F_SCALE) over full
    replays."""
    r = residuals(preds, runs, weighted=True) / F_SCALE
    return float(np.sum(2.0 * (np.sqrt(1.0 + r * r) - 1.0)))


def objective(preds: list[dict], runs: list[MeasuredRun]) -> dict[str, float]:
    """Metric (ttft, tpot, ...) -> mean |predicted / measured - 1| over its measured keys: the
    error the report gives (never weighted)."""
    out = {}
    for m in sorted({k.split("_")[0] for r in runs for k in r.measured}):
        r = residuals(preds, runs, (m,))
        if len(r):
            out[m] = float(np.mean(np.abs(np.expm1(r))))
    return out


def stream_tol(n_residuals: int) -> float:
    """The relative loss drop a longer chunk time must bring (at least STREAM_TOL): Akaike's
    price of one more parameter, exp(-2 / n) for a loss that sums n squared log errors. The
    grid's ten values can always find some drop; at 18 runs (36 residuals) a longer chunk time
    must cut the loss by 5.4%. Where the API server is a bottleneck the drop is far larger: the
    silicon CSV's Llama-3.1-8B fits (14 runs, up to 512 clients) gain 11-73% (benchmarks/RESULTS.md,
    2026-12-07)."""
    return max(STREAM_TOL, 1.0 - float(np.exp(-2.0 / max(n_residuals, 1))))
