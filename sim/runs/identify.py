"""Which engine parameters a set of runs can tell apart.

A parameter can move the runs' predictions (`sim.runs.fit._informed`) and still be unfitted,
because other parameters move them the same way. Runs all at one TP size are an example.
There, the collectives' bandwidth efficiency (`comm_bw_eff`) lengthens every prompt in
proportion to its tokens, as the prefill kernel scale does. A joint fit then picks any point
on that ridge: a fit on SGLang's 18 Qwen3-32B TP 2 runs went to comm_bw_eff 0.12 and
prefill_time_scale 0.68. The same fit then over-predicted TP 4 and TP 8 TTFT by 73% and 165%
(uncalibrated: 15%; benchmarks/RESULTS.md, 2026-12-07).

`separable` takes each parameter's effect on the runs' predictions: d log(prediction) / d
log(parameter), one entry per run and metric. It measures the share of that effect the other
parameters cannot reproduce: the residual of its least-squares regression on them, relative
to its norm. While some parameter's share is under `CONFOUNDED`, the one of those with the
smallest effect on the predictions is held at its starting value, and the shares are
recomputed. On the silicon CSV, runs at one TP size give shares of 0.03-0.09 for the prefill
scale and the collectives. Sets spanning TP 1-8 give 0.39-0.80 for every parameter. Only
Llama-3.1-8B's two host times stay entangled there, at 0.04-0.09: the per-iteration and
per-sequence host costs of closed loops at fixed concurrency.
"""

from __future__ import annotations

import numpy as np

CONFOUNDED = 0.2  # own share under which a parameter is tangled; the smallest tangled one is held


def own_share(effects: dict[str, np.ndarray], name: str) -> tuple[float, dict[str, float]]:
    """The share of `name`'s effect the others cannot reproduce (0: all of it, 1: none), and
    the coefficients of the others in the best reproduction."""
    others = [n for n in effects if n != name]
    y = effects[name]
    ny = float(np.linalg.norm(y))
    if not others or ny == 0.0:
        return 1.0, {}
    x = np.column_stack([effects[n] for n in others])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    return float(np.linalg.norm(y - x @ coef)) / ny, dict(zip(others, map(float, coef), strict=True))


def separable(effects: dict[str, np.ndarray], tol: float = CONFOUNDED) -> tuple[list[str], dict[str, str]]:
    """(the parameters to fit, {held parameter: why}) from each parameter's effect on the runs'
    predictions (equal-length vectors)."""
    # a non-finite effect (no prediction made) moves nothing the regression can use
    keep = {n: np.nan_to_num(np.asarray(v, float), nan=0.0, posinf=0.0, neginf=0.0)
            for n, v in effects.items()}
    why: dict[str, str] = {}
    for n in [n for n, v in keep.items() if not np.any(v)]:
        why[n] = "it moves no prediction of these runs"
        del keep[n]
    while len(keep) > 1:
        shares = {n: own_share(keep, n) for n in keep}
        tangled = [n for n in keep if shares[n][0] < tol]
        if not tangled:
            break
        n = min(tangled, key=lambda k: float(np.linalg.norm(keep[k])))
        share, coef = shares[n]
        like = sorted(coef, key=lambda k: -abs(coef[k]) * float(np.linalg.norm(keep[k])))[:2]
        why[n] = (f"{1 - share:.0%} of its effect on these runs is that of {' and '.join(like)}: "
                  "they cannot tell it apart")
        del keep[n]
    return list(keep), why
