"""Calibrate the engine-level parameters from measured benchmark runs, with error bars that come
from runs the fit did not see.

Parameters (`ENGINE_PARAMS`, per GPU): host time per iteration and per sequence, the TP
collectives' latency and bandwidth efficiency inside a node (and across nodes when a run
spans them), one kernel-speed scale each for prefill and decode GPU work, the fixed latency
every request pays outside any queue (`request_latency_s`), the API server's time per
streamed chunk (`frontend_stream_s`), and memory the engine holds beyond the plan. Operator
tables and `serveplan validate` set the kernel parameters; these say how the engine runs them.

The fit minimises the log error of each run's measured means (and percentiles when the file
has them) with a weak pull towards the starting values (moving a parameter by a factor e costs
as much as every metric being off by `PRIOR`). It alternates full replays and a surrogate
(`sim.runs.surrogate`): replay every run at the current estimate recording its iterations,
fit on the re-timed recordings, repeat until the estimate stops moving (at most `OUTER`
rounds). The surrogate holds near the values it was recorded at, so the full replays judge
each round: values that replay the runs worse than the best so far are taken back, and the
next round is solved within half that step; the best replayed values are the estimate. The
API server's chunk time moves when clients see tokens, not the engine's iterations, so the
surrogate cannot re-time it: it is fitted by full replays over a grid
(`STREAM_GRID_S`), once after the surrogate rounds (then one more round when it moved) and
once before them; the chunk time and the kernel scales can trade for each other (both lengthen
TTFT), so of the two orders the one whose full replays fit the runs better is kept (a longer
chunk time only when its loss is lower by what one more parameter must earn, `stream_tol`:
every planned deployment's clients would wait on it). The errors it reports come from full replays, before and after.
A replay at values the fit has already replayed is taken from what it kept (`sim.runs.memo`:
replays are seeded, so it is the same replay). A parameter that
no run's prediction responds to (all runs at TP 1 say nothing of the collectives), or whose
effect the other parameters reproduce (runs all at one TP size: the collectives and the prefill
scale, `sim.runs.identify`), is not fitted: it keeps its starting value, and the result says
so. The loss is robust (soft L1 on the log
errors): a few runs that the engine parameters cannot describe do not drag every parameter.
Last, the full replays at the fitted values are checked against those at the start: when a
metric's MAPE over the runs is worse (not every metric's), the fit traded it for the others, so
it is fitted again from the start with that metric's log errors counting twice (`REFIT_FACTOR`,
compounding, at most `REFIT_ROUNDS` times; `sim.runs.loss.metric_weights`; the result keeps
the weights, `RunsFit.weights`). When no such fit makes every metric at least as good, the surrogate's optimum
was not the simulator's (or the runs' error lies in what these parameters do not describe, such
as a scheduler) and the fit is set aside: the starting values stay, and the result says why
(`RunsFit.rejected`). On the silicon CSV's seed-0 Llama-3.1-8B runs (14 fitted) the unweighted
fit took TTFT 55.8% -> 29.1% and TPOT 10.7% -> 11.6%; with TPOT x2, 29.0% and 10.3%
(benchmarks/RESULTS.md, 2026-12-07, stop 37).

Error bars: each run is predicted by a fit that left it out (leave-one-out up to `LOO_MAX`
runs, k-fold beyond): its full replay at the fitted values, moved by the final round's
surrogate from the values fitted with it to those fitted without it; the 10% and 90% points of
log(measured / predicted) over those held-out predictions, order statistics interpolated to
cover about 80% (`held_out_interval`; below 9 runs a normal prediction interval), give an 80% interval per metric
(`GpuCalibration.latency_interval`), which plans report around their predicted TTFT and TPOT.
A fit set aside fitted nothing: the starting values' errors on every run are the held-out ones.
Only the surrogate's parameters are refitted without the run: the choices made by full replays
(the memory reserve, the API server's chunk time, whether the fit is set aside) are taken from
all the runs, the left-out one included, so the interval can come out a little narrow (on the
silicon CSV's held-out runs it covered 87-92% at seed 0, more than 80%, not less).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
from scipy.optimize import least_squares

from costmodel.arch_defaults import default_efficiencies
from costmodel.calibration import INTERVAL_KEYS, CalibrationProfile, gpu_key
from costmodel.efficiencies import PARAM_BOUNDS, Efficiencies
from costmodel.errors import DoesNotFitError, ServePlanError
from sim.runs import memo
from sim.runs.held_out import held_out_interval, held_out_predictions
from sim.runs.identify import separable
from sim.runs.loss import F_SCALE, LOSS, metric_weights, stream_tol, weights_text
from sim.runs.loss import objective as _objective
from sim.runs.loss import residuals as _residuals
from sim.runs.loss import robust_loss as _robust_loss
from sim.runs.results import RunRow, RunsFit
from sim.runs.surrogate import RunSurrogate
from sim.runs.types import MeasuredRun
from sim.runs.workers import cost_models_of as _cost_models
from sim.runs.workers import profile_at as _profile
from sim.runs.workers import replay_each, replay_workers
from sim.runs.workers import replay_run as _replay

ENGINE_PARAMS = ("host_overhead_s", "host_per_seq_s", "prefill_time_scale", "decode_time_scale",
                 "comm_latency_s", "comm_bw_eff", "request_latency_s", "frontend_stream_s",
                 "mem_reserved_gib")
# parameters the surrogate cannot re-time (they move events outside the engine's iterations,
# or change which requests run at all): fitted by full replays over a grid
REPLAY_PARAMS = ("frontend_stream_s", "mem_reserved_gib")
# memory the engine holds beyond the memory plan, GiB per GPU: the KV pool's size shows only in
# runs whose clients outnumber what it holds (their queue); fitted first, by full replays
MEM_GRID_GIB = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
MEM_TOL = 0.01  # relative loss a larger reserve must gain over a smaller one
STREAM_GRID_S = (0.0, 10e-6, 20e-6, 30e-6, 40e-6, 50e-6, 60e-6, 80e-6, 120e-6, 200e-6)
STREAM_SEARCH_TOP = 80e-6  # replayed first; longer values only while the best sits on the edge
INTERNODE_PARAMS = ("net_latency_s", "net_bw_eff")
# the profile's latency_interval keys and the measured keys behind them: each metric's mean
# (`ttft`, `tpot`) and the percentiles runs measured (`ttft_p50`, ...)
INTERVAL_OF = {k: f"{k}_s" if "_" in k else f"{k}_mean_s" for k in INTERVAL_KEYS}
# a percentile's own interval replaces the mean's ratio in plans, so it must rest on as many
# runs as the interpolated order statistics need (9; below, `held_out_interval` leans on a
# normal shape of the errors); with fewer, the mean's ratio, from every run, is kept
PERCENTILE_MIN_RUNS = 9
PRIOR = 0.01  # log-units of metric error that moving one parameter by a factor e is worth
WORSE_TOL = 0.005  # a metric whose MAPE over the runs grows more than this rejects the fit
# ... unless a fit with that metric's log errors counting REFIT_FACTOR times more (compounding,
# at most REFIT_ROUNDS times) makes no metric worse
REFIT_FACTOR, REFIT_ROUNDS = 2.0, 2
OUTER = 3  # most replay-and-fit rounds
STEP_TOL = 0.02  # log: a round that moves no parameter further ends the rounds
SENSITIVITY = 0.01  # d log(prediction) / d log(parameter) below which a parameter is not informed


def runs_tag(gpu: str) -> str:
    """How a profile message about a run fit of `gpu` starts: a later run fit of that GPU
    replaces such messages; an operator-table fit keeps them (costmodel.fit.fit_profile)."""
    return f"{gpu} (engine runs)"


def search_floor(name: str) -> float:
    """The smallest value the log-space search gives `name` (a parameter that starts at 0, as
    the request latency does, starts there)."""
    return max(PARAM_BOUNDS[name][0], PARAM_BOUNDS[name][1] * 1e-4)


def _solve(surr: list[RunSurrogate], start: Efficiencies, names: list[str], centre: Efficiencies,
           radius: float = np.inf):
    """Least squares on the surrogates over `names` (log space, bounded, weak prior), each
    parameter within `radius` (log) of `start`."""
    if not names:
        return start
    lo = np.array([np.log(search_floor(n)) for n in names])
    hi = np.array([np.log(PARAM_BOUNDS[n][1]) for n in names])
    x0 = np.clip([np.log(max(getattr(start, n), 1e-12)) for n in names], lo + 1e-9, hi - 1e-9)
    if np.isfinite(radius):
        lo, hi = np.maximum(lo, x0 - radius), np.minimum(hi, x0 + radius)
        x0 = np.clip(x0, lo + 1e-12, hi - 1e-12)
    xc = np.clip([np.log(max(getattr(centre, n), 1e-12)) for n in names], lo, hi)
    runs = [s.run for s in surr]

    def eff(x):
        return replace(start, **{n: float(np.exp(v)) for n, v in zip(names, x, strict=True)})

    def f(x):
        r = _residuals([s.predict(eff(x)) for s in surr], runs, weighted=True)
        return np.concatenate([r, PRIOR * (x - xc)])

    sol = least_squares(f, x0, bounds=(lo, hi), diff_step=1e-3, max_nfev=200, loss=LOSS,
                        f_scale=F_SCALE)
    return eff(sol.x)


def _informed(surr: list[RunSurrogate], at: Efficiencies, names: list[str], say=None,
              held: dict | None = None) -> list[str]:
    """The parameters whose change of 0.1 in log moves some prediction by SENSITIVITY x that:
    up from where they are, or down from an upper bound (a fit that ended there asks to be
    probed the way it can still move); from 0, to a thousandth of the upper bound. Of those,
    the ones the runs can tell apart (`sim.runs.identify`)."""
    base = [s.predict(at) for s in surr]
    keep, effects = [], {}
    for n in names:
        v, hi = getattr(at, n), PARAM_BOUNDS[n][1]
        probe = hi * 1e-3 if v <= 0 else v * np.e ** 0.1 if v * np.e ** 0.1 <= hi else v * np.e ** -0.1
        bumped = replace(at, **{n: float(probe)})
        # one entry per prediction for every parameter (0 where the bump left none)
        moved = np.array([np.log(p2[k] / p1[k]) / 0.1 if p2.get(k, 0.0) > 0 else 0.0 for p1, p2 in
                          zip(base, (s.predict(bumped) for s in surr), strict=True) for k in p1
                          if p1[k] > 0])
        if moved.size and np.abs(moved).max() >= SENSITIVITY:
            keep.append(n)
            effects[n] = moved
    keep, why = separable({n: effects[n] for n in keep})
    for n, text in why.items():
        (say or (lambda m: None))(f"{n} not fitted: {text}")
    if held is not None:
        held.update(why)
    return keep


def fit_runs(runs: list[MeasuredRun], *, calibration: CalibrationProfile | None = None,
             params: list[str] | None = None, rounds: int = OUTER, held_out: bool = True,
             log=None, workers: int | None = 1) -> list[RunsFit]:
    """Fit the engine parameters of every GPU in `runs` (one fit per GPU). `calibration` gives
    the kernel parameters and the starting point (default: each GPU's architecture defaults).
    `workers`: processes for the full replays (`sim.runs.workers`; the same result in any)."""
    if not runs:
        raise ServePlanError("no runs to calibrate from")
    by_gpu: dict[str, list[MeasuredRun]] = {}
    for r in runs:
        gpus = {gpu_key(p.gpu) for p in r.deployment.pools}  # `h100` and `h100-sxm` are one GPU
        if len(gpus) != 1:
            raise ServePlanError(f"{r.source} run {r.run_id}: pools on {sorted(gpus)}; a run to "
                                 "calibrate from runs on one GPU type")
        for p in r.deployment.pools:
            if p.pp > 1 or p.spec.enabled:
                what = f"pp={p.pp}: pipeline parallelism" if p.pp > 1 else \
                    f"spec {p.spec.method}: speculative decoding"
                raise ServePlanError(f"{r.source} run {r.run_id}: {what} is not calibrated from runs "
                                     "yet; expected pp=1 and no speculative decoding")
        by_gpu.setdefault(gpus.pop(), []).append(r)
    out = []
    with replay_workers(workers):  # the replays in `workers` processes: the same numbers
        for g, rs in by_gpu.items():
            with memo.replay_memo():  # a replay at values this GPU's fit has replayed is not run again
                out.append(_fit_gpu(g, rs, calibration, params, rounds, held_out, log))
    return out


def _fit_gpu(gpu, runs, calibration, params, rounds, held_out, log) -> RunsFit:
    t0 = time.perf_counter()
    say = log or (lambda msg: None)
    start = calibration.efficiencies_for(gpu) if calibration is not None else default_efficiencies(gpu)
    names = list(params) if params is not None else list(ENGINE_PARAMS)
    if params is None and any(p.tp * p.pp > 8 for r in runs for p in r.deployment.pools):
        names += list(INTERNODE_PARAMS)
    unknown = [n for n in names if n not in PARAM_BOUNDS]
    if unknown:
        raise ServePlanError(f"parameters {unknown}; known: {', '.join(PARAM_BOUNDS)}")
    stream = "frontend_stream_s" in names
    mem = "mem_reserved_gib" in names
    names = [n for n in names if n not in REPLAY_PARAMS]
    held: dict[str, str] = {}
    est, informed, surr, done, before, after = _fit_stages(gpu, runs, calibration, start, names, rounds,
                                                           stream, mem, None, say, held)
    j0, j1 = _objective(before, runs), _objective(after, runs)
    worse, weights = _worse(j0, j1), {}
    for _ in range(REFIT_ROUNDS):
        if not (informed and worse) or set(worse) >= set(j0):
            break  # kept, or every metric worse: weighting them all alike changes nothing
        # the fit traded the metrics in `worse` for the others: fit again from the start with
        # their log errors counting REFIT_FACTOR times more, the same procedure otherwise
        weights = {**weights, **{m: weights.get(m, 1.0) * REFIT_FACTOR for m in worse}}
        say(f"{gpu}: the fitted values replay the runs worse in {_change_text(j0, j1, worse)}"
            f"; fitting again with {weights_text(weights)} in the loss")
        held = {}
        with metric_weights(weights):
            est, informed, surr, done, _, after = _fit_stages(gpu, runs, calibration, start, names,
                                                              rounds, stream, mem, before, say, held)
        j1 = _objective(after, runs)
        worse = _worse(j0, j1)
    rejected = ""
    if informed and worse:
        # a metric the fit made worse in full replays, weighted up or not: the surrogate's optimum
        # is not one of the simulator (a schedule the new values change, as decodes riding in
        # prefill batches do), or the runs' errors come from what these parameters do not
        # describe; trading one metric's error for another's would be a fudge, so the starting
        # values stay
        rejected = (f"{runs_tag(gpu)}: the fitted values replay the runs worse in "
                    + _change_text(j0, j1, worse)
                    + (f" (also with {weights_text(weights)} in the loss)" if weights else "")
                    + "; kept the starting values")
        say(rejected)
        est, after, informed, weights = start, before, [], {}
    elif weights:
        say(f"{gpu}: kept the fit with {weights_text(weights)} in the loss "
            f"(MAPE {_change_text(j0, j1, list(j0))})")
    rows = [RunRow(r, b, a) for r, b, a in zip(runs, before, after, strict=True)]
    interval = {}
    if held_out and len(runs) >= 3:
        if rejected:  # nothing fitted: every run's prediction is already out of sample
            for row in rows:
                row.held_out = dict(row.before)
        else:
            surr_names = [n for n in informed if n not in REPLAY_PARAMS]
            with metric_weights(weights):  # each left-out refit minimises the loss the fit did
                held_out_predictions(rows, surr, lambda keep: _solve(keep, est, surr_names, start))
        for key, k in INTERVAL_OF.items():  # means, and the percentiles the runs measured
            e = [np.log(r.run.measured[k] / r.held_out[k]) for r in rows
                 if 0 < r.held_out.get(k, 0.0) < np.inf and k in r.run.measured]
            metric, _, stat = key.partition("_")
            if len(e) >= (PERCENTILE_MIN_RUNS if stat else 1) and (not stat or metric in interval):
                interval[key] = held_out_interval(e)
    every = names + [n for n in REPLAY_PARAMS if n in (params or ENGINE_PARAMS)]
    return RunsFit(gpu, est, start, tuple(informed), tuple(n for n in every if n not in informed),
                   rows, interval, done, time.perf_counter() - t0, rejected,
                   {} if rejected else {n: w for n, w in held.items() if n not in informed}, weights)


def _worse(j0: dict[str, float], j1: dict[str, float]) -> list[str]:
    """The metrics whose MAPE over the runs is worse in `j1` than in `j0` (by more than
    WORSE_TOL)."""
    return [m for m in j0 if j1.get(m, 0.0) > j0[m] + WORSE_TOL]


def _change_text(j0: dict[str, float], j1: dict[str, float], metrics) -> str:
    return ", ".join(f"{m.upper()} {j0[m]:.1%} -> {j1.get(m, float('nan')):.1%}" for m in metrics)


def _fit_stages(gpu, runs, calibration, start: Efficiencies, names: list[str], rounds: int,
                stream: bool, mem: bool, before, say, held: dict):
    """One fit from `start`: the memory reserve by full replays, the replay-and-fit rounds (both
    orders of the API server's chunk time when it is informed), the reserve again at the fitted
    values. Returns (estimate, informed names, surrogates, rounds, the replays at `start`, the
    replays at the estimate)."""
    head, est0 = [], start
    if mem:  # first: which requests run at all (the surrogate re-times the iterations it saw)
        # recorded: the rounds start here when the reserve stays (sim.runs.memo)
        before = [p for _, p in _recorded(gpu, runs, start, calibration)] if before is None else before
        est0, inf = _fit_memory(gpu, runs, start, calibration, before, say)
        head = ["mem_reserved_gib"] if inf else []
    est, informed, surr, done, before, after = _search(gpu, runs, calibration, est0, names, rounds,
                                                       stream, False, before, say, held)
    informed = head + informed
    if "frontend_stream_s" in informed:
        # the chunk time and the kernel scales can trade for each other (both lengthen TTFT):
        # the order in which they are fitted picks the optimum, so try both and keep the one
        # whose full replays fit the runs better (the fitted runs only)
        alt = _search(gpu, runs, calibration, est0, names, rounds, True, True, before, say, held)
        alt_after = alt[5]
        la, lb = _robust_loss(after, runs), _robust_loss(alt_after, runs)
        longer = alt[0].frontend_stream_s > est.frontend_stream_s
        tol = stream_tol(len(_residuals(after, runs)))
        take = lb < la * (1 - tol) if longer else lb < la  # a longer chunk time must earn it
        say(f"{gpu}: chunk time fitted after the scales ({est.frontend_stream_s * 1e6:.0f} us): loss "
            f"{la:.3g}; before them ({alt[0].frontend_stream_s * 1e6:.0f} us): {lb:.3g}; kept the "
            + ("second" if take else "first")
            + (f" (a longer chunk time must cut the loss by {tol:.1%})" if longer else ""))
        if take:
            (est, informed, surr, done, _, _), after = alt, alt_after
            informed = head + informed
    if "mem_reserved_gib" in informed:
        # again at the fitted values: the kernel scales move a queue's TTFT too, and the reserve
        # that fitted the starting values can overshoot once they are in
        base = after
        est2, _ = _fit_memory(gpu, runs, est, calibration, base, say)
        if est2.mem_reserved_gib != est.mem_reserved_gib:
            est, after = est2, _replays(gpu, runs, est2, calibration)
    return est, informed, surr, done, before, after


def _plain(gpu, runs, est: Efficiencies, calibration) -> list[tuple[int, dict]]:
    """(requests rejected, predictions) of each run replayed at `est` (sim.runs.memo)."""
    prof = _profile(gpu, est, calibration)
    return memo.plain(runs, est, lambda rs: replay_each(_replay, rs, prof, False))


def _replays(gpu, runs, est: Efficiencies, calibration) -> list[dict]:
    return [p for _, p in _plain(gpu, runs, est, calibration)]


def _recorded(gpu, runs, est: Efficiencies, calibration) -> list[tuple[RunSurrogate, dict]]:
    """(surrogate, predictions) of each run replayed at `est`, its iterations recorded."""
    prof = _profile(gpu, est, calibration)
    return memo.recorded(runs, est, lambda rs: replay_each(_replay, rs, prof, True),
                         lambda r, res: RunSurrogate(r, res, _cost_models(r, prof), est))


def _search(gpu, runs, calibration, start: Efficiencies, names: list[str], rounds: int,
            stream: bool, stream_first: bool, before, say, held=None):
    """Replay-and-fit rounds from `start` over `names` on the surrogates; with `stream`, the
    API server's chunk time by full replays too, before the rounds or after them (then one
    more round when it moved). A surrogate is faithful near the values it was recorded at: a
    round whose values replay the runs worse (robust loss of full replays) than the best so far
    goes back to the best and solves again within half that step's length (a trust region).
    Returns (estimate, informed names, its surrogates, rounds, the replays at `start`, the
    replays at the estimate)."""
    est, informed, surr, done = start, [], [], 0
    head: list[str] = []
    if stream and stream_first:
        stream = False
        est, inf = _fit_stream(gpu, runs, est, calibration, say)
        head = ["frontend_stream_s"] if inf else []
    fit_names: list[str] = []
    best = None  # (loss, estimate, surrogates, replays) of the best replayed values
    radius, last_step, settled = np.inf, 0.0, False
    while True:
        done_runs = _recorded(gpu, runs, est, calibration)
        surr, preds = [s for s, _ in done_runs], [p for _, p in done_runs]
        loss = _robust_loss(preds, runs)
        if done == 0:
            before = preds if before is None else before
            informed = head + _informed(surr, est, names, lambda m: say(f"{gpu}: {m}"), held)
            fit_names = [n for n in informed if n not in REPLAY_PARAMS]
            say(f"{gpu}: {len(runs)} runs replayed; fitting {', '.join(informed) or 'nothing'}")
        if best is not None and loss > best[0]:
            radius = 0.5 * last_step
            say(f"{gpu}: round {done}'s values replay the runs worse (loss {loss:.3g} against "
                f"{best[0]:.3g}): back to the best, steps of at most {radius:.3f} (log)")
            _, est, surr, preds = best
            settled = radius < STEP_TOL
        else:
            best = (loss, est, surr, preds)
        if settled or done >= max(1, rounds):
            if stream:  # then the API server's chunk time at those values, and one more round
                stream = False
                was = est.frontend_stream_s
                est, inf = _fit_stream(gpu, runs, est, calibration, say)
                informed = (["frontend_stream_s"] if inf else []) + informed
                if est.frontend_stream_s != was:
                    # a new starting point, fitted by full replays: the rounds go on from it
                    best, radius, settled = None, np.inf, False
                    rounds = max(rounds, done + 1)
                    continue
            break
        new = _solve(surr, est, fit_names, start, radius)
        last_step = max((abs(np.log(max(getattr(new, n), search_floor(n)) / max(getattr(est, n), search_floor(n))))
                         for n in fit_names), default=0.0)
        done += 1
        say(f"{gpu}: round {done}, largest parameter change {last_step:.3f} (log)")
        settled = last_step < STEP_TOL
        est = new
    return est, informed, surr, done, before, preds


def _fit_stream(gpu, runs, est: Efficiencies, calibration, say) -> tuple[Efficiencies, bool]:
    """`frontend_stream_s` by full replays over STREAM_GRID_S, the other parameters held at
    `est` (the API server's queue of streamed chunks moves when clients see tokens, which
    re-timing recorded iterations cannot follow). The grid is replayed upwards to
    STREAM_SEARCH_TOP, and beyond it one value at a time only while the lowest loss sits on the
    largest value replayed: past an API-server bottleneck a longer chunk time backs every
    client up further, and those replays are the slowest (10x the time of one at 0 us on the
    silicon CSV's Llama runs). Informed when some value moves some run's prediction by 1% or
    more (the flag returned); until one does, the grid is replayed to its top."""
    def preds_at(v):
        return _replays(gpu, runs, replace(est, frontend_stream_s=v), calibration)

    base = preds_at(est.frontend_stream_s)
    losses, moved = {est.frontend_stream_s: _robust_loss(base, runs)}, 0.0
    for v in STREAM_GRID_S:
        if v > STREAM_SEARCH_TOP and moved >= 0.01 and min(losses, key=losses.get) < max(losses):
            break  # the best value lies inside what was replayed
        if v in losses:
            continue
        preds = preds_at(v)
        losses[v] = _robust_loss(preds, runs)
        moved = max(moved, max((abs(np.log(b[k] / p[k])) for b, p in zip(base, preds, strict=True)
                                for k in b if b[k] > 0 and p.get(k, 0) > 0), default=0.0))
    if moved < 0.01:
        say(f"{gpu}: frontend_stream_s not informed (the runs' API servers never back up)")
        return est, False
    # the shortest chunk time within stream_tol of the best loss: a value the runs barely
    # prefer would still slow every planned deployment's clients
    low, tol = min(losses.values()), stream_tol(len(_residuals(base, runs)))
    best = min(v for v, loss in losses.items() if loss <= low * (1 + tol) + 1e-12)
    say(f"{gpu}: frontend_stream_s {best * 1e6:.0f} us per streamed chunk (grid of {len(losses)} replays)")
    return replace(est, frontend_stream_s=float(best)), True


def _fit_memory(gpu, runs, est: Efficiencies, calibration, base: list[dict],
                say) -> tuple[Efficiencies, bool]:
    """`mem_reserved_gib` by full replays over MEM_GRID_GIB, the other parameters at `est`
    (`base`: the replays at `est`). A run's prediction moves with it only where the KV pool
    binds (its clients queue for cache); it is informed when the grid's largest value moves
    some run's prediction by 1% or more (the flag returned). Runs the largest value left within
    1% are not replayed at the points between. The smallest reserve within MEM_TOL of the best
    loss: memory the runs barely ask for would still shrink every planned replica's cache."""
    def preds_at(v, which):
        out = _plain(gpu, [runs[i] for i in which], replace(est, mem_reserved_gib=v), calibration)
        for i, (rejected, _) in zip(which, out, strict=True):
            if rejected:  # its requests no longer fit: it could not have run
                raise DoesNotFitError(f"{runs[i].run_id}: requests longer than the KV cache", 0, 0)
        return [p for _, p in out]

    every = list(range(len(runs)))
    grid = sorted(set(MEM_GRID_GIB) | {est.mem_reserved_gib})
    top = None
    while grid:  # the largest reserve that leaves every run room for its requests (they ran)
        try:
            top = preds_at(grid[-1], every)
            break
        except DoesNotFitError:
            grid.pop()
    if top is None or len(grid) < 2:
        say(f"{gpu}: mem_reserved_gib not informed (no room for more)")
        return est, False
    moved = [i for i in every if any(abs(np.log(base[i][k] / top[i][k])) >= 0.01 for k in base[i]
                                     if base[i][k] > 0 and top[i].get(k, 0) > 0)]
    if not moved:
        say(f"{gpu}: mem_reserved_gib not informed (no run's KV cache binds)")
        return est, False
    losses = {est.mem_reserved_gib: _robust_loss(base, runs), grid[-1]: _robust_loss(top, runs)}
    for v in grid[:-1]:
        if v not in losses:
            preds = list(base)
            for i, p in zip(moved, preds_at(v, moved), strict=True):
                preds[i] = p
            losses[v] = _robust_loss(preds, runs)
    low = min(losses.values())
    best = min(v for v, loss in losses.items() if loss <= low * (1 + MEM_TOL) + 1e-12)
    say(f"{gpu}: mem_reserved_gib {best:g} GiB per GPU ({len(moved)} of {len(runs)} runs bound "
        f"by their KV cache; grid of {len(losses)})")
    return replace(est, mem_reserved_gib=float(best)), True
