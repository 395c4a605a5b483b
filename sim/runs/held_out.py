"""Error bars from runs a fit left out (`sim.runs.fit`'s module doc): each run's prediction
by a fit without it, and the 80% interval of log(measured / predicted) over those."""

from __future__ import annotations

import numpy as np

LOO_MAX = 40  # leave-one-out up to this many runs; 10-fold beyond
INTERVAL = (0.10, 0.90)  # the reported interval: 80%
SMALL_N = 9  # from here (n + 1) x 0.1 >= 1: the interpolated order statistics exist


def held_out_interval(errors, q=INTERVAL) -> list[float]:
    """The interval of the next run's log(measured / predicted) from `errors` of held-out runs:
    order statistics interpolated at positions (n + 1) q_lo and (n + 1) q_hi. The k-th smallest
    of n exchangeable errors sits at F = k / (n + 1) on average, so the interval covers the next
    run's error about q_hi - q_lo (80%) of the time (81-83% at 14-60 runs, normal or t3 errors:
    tests/sim/test_runs_fit.py). Split-conformal ranks (floor and ceil of those positions)
    guarantee at least 80% and give 85-87% at 14-25 runs, above the "near 80%" asked for; plain
    sample quantiles give less (74% at 25).
    With fewer than SMALL_N errors those positions fall outside the sample, and the smallest and
    largest error cover the next one only (n - 1) / (n + 1) of the time (50% at 3 runs, 67% at
    5): there the interval is the normal prediction interval, mean +- t(q_hi, n - 1) x sd x
    sqrt(1 + 1 / n), which covers 80% of normal errors at any n (about 80% of t3 errors too)."""
    e = np.asarray(errors, float)
    if e.size >= SMALL_N or e.size < 2:
        return [float(v) for v in np.quantile(e, q, method="weibull")]
    from scipy.stats import t

    half = float(t.ppf(q[1], e.size - 1)) * float(e.std(ddof=1)) * float(np.sqrt(1 + 1 / e.size))
    mid = float(e.mean())
    return [mid - half, mid + half]


def held_out_predictions(rows: list, surr: list, solve) -> None:
    """Each run's prediction by a fit that left it out: its full replay at the fitted values
    (`after`, what the profile predicts), moved by the surrogate's ratio between the values
    fitted without the run and those fitted, the same way, with it. The surrogate is exact
    only where it was recorded, so its own level at the fitted values is not a held-out error;
    what leaving a run out does to its prediction is. `solve(surrogates)`: the fitted values
    from those runs' surrogates (`sim.runs.fit._solve` as the fit ran it); sets each row's
    `held_out`."""
    n = len(rows)
    folds = [[i] for i in range(n)] if n <= LOO_MAX else \
        [list(range(i, n, 10)) for i in range(10)]
    e_all = solve(surr)
    for fold in folds:
        e = solve([s for i, s in enumerate(surr) if i not in fold])
        for i in fold:
            without, with_ = surr[i].predict(e), surr[i].predict(e_all)
            rows[i].held_out = {k: v * without[k] / with_[k] for k, v in rows[i].after.items()
                                if k in without and with_.get(k, 0.0) > 0.0}
