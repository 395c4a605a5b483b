"""`planner.plan(...)`: the deployment to launch, verified in the simulator, as a Plan.

Pipeline: check the request -> screen the space analytically -> the MILP picks the best few
allocations per mode -> verify each in the simulator (goodput by bisection) -> rank -> size the
winner and the runners-up for the target load and simulate each at that load (planner.sizing;
the `predicted` block comes from that run, so `serveplan simulate --plan` with the recorded
workload, rate, request count and seed reproduces it) -> launch lines, reasons, alternatives.
`exhaustive=True` replaces the screen and the MILP by simulating every configuration.
`time_limit_s` bounds the search: at the limit the verification stops, and the plan is built
from what was verified so far (one more round of simulations sizes it and predicts its metrics;
runners-up are left out), with `search.stopped_early` saying so.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from costmodel.arch_defaults import defaults_note
from costmodel.errors import DoesNotFitError, ServePlanError
from costmodel.hardware import load_gpu
from planner.candidates import ScreenContext
from planner.launch import launch_lines
from planner.options import Option, dominated, rank
from planner.plan_types import Alternative, Plan, Predicted
from planner.request import PlanInputs
from planner.search import exhaustive_options, fast_options, space_size
from planner.sizing import (
    capacity,
    cheapest,
    deployment_cost,
    deployment_of,
    failure_reason_from,
    max_units,
    operate,
)
from planner.space import Pruned, kv_tokens_needed, largest_kv_capacity, smallest_fit
from planner.uncertainty import plan_uncertainty
from planner.verify import Bisection, Verifier, failure_reason


def _calibration(cal):
    if cal is None or not isinstance(cal, (str, bytes)) and not hasattr(cal, "__fspath__"):
        return cal
    from costmodel.calibration import CalibrationProfile

    return CalibrationProfile.load(cal)


def plan(*, model, gpus, workload, rate=None, concurrency=None, ttft_slo_s=None, tpot_slo_s=None,
         slo_percentile=90.0, attainment=0.9, objective="goodput", spec_method="none",
         draft_model=None, spec_acceptance=None, kv_dtype="auto", min_kv_budget=None,
         precision=None, calibration=None, backend="local", exhaustive=False,
         max_gpus_per_replica=None, space=None, num_requests=None, seed=0, burstiness_cv=1.0,
         top_k=None, workers=None, progress: Callable[[str], None] | None = None,
         time_limit_s: float | None = None) -> Plan:
    """Plan a deployment of `model` on the GPU inventory `gpus` for `workload` at `rate`
    requests/s (or `concurrency` clients) within TTFT / TPOT SLOs (seconds). Returns a Plan.
    `time_limit_s`: wall seconds after which the search stops and plans with what it verified
    (a ServePlanError when nothing was verified by then)."""
    t0 = time.perf_counter()
    _check_time_limit(time_limit_s)
    # first: a profile may define a GPU that is not a preset (gpus.<name>.hardware), which the
    # inventory then names
    cal = _calibration(calibration)
    req = PlanInputs.build(
        model=model, gpus=gpus, workload=workload, rate=rate, concurrency=concurrency,
        ttft_slo_s=ttft_slo_s, tpot_slo_s=tpot_slo_s, slo_percentile=slo_percentile,
        attainment=attainment, objective=objective, spec_method=spec_method,
        draft_model=draft_model, spec_acceptance=spec_acceptance, kv_dtype=kv_dtype,
        min_kv_budget=min_kv_budget, precision=precision, max_gpus_per_replica=max_gpus_per_replica,
        space=space, num_requests=num_requests, seed=seed, burstiness_cv=burstiness_cv)
    shape = req.workload_shape()
    _check_context(req, shape)
    verifier = Verifier(req.workload, req.slo, req.num_requests, req.seed, cal, backend, workers,
                        req.closed_loop)
    if time_limit_s is not None:
        verifier.deadline, verifier.time_limit_s = t0 + time_limit_s, float(time_limit_s)
    prices = {g.name: g.price_per_hour_usd for g in req.fleet.gpus}
    ctx = ScreenContext(req.model, shape, req.slo_target, cal, req.num_requests, req.closed_loop, prices)
    pruned = Pruned()
    try:
        if exhaustive:
            options, counters, cands = exhaustive_options(req, ctx, verifier, pruned, progress)
        else:
            options, counters, cands = fast_options(req, ctx, verifier, pruned, top_k, progress)
            if not options and cands:
                options = _closest_candidates(req, cands, verifier, progress)
        if not options:
            _raise_no_fit(req, shape, pruned)
        if (verifier.stopped_early and not any(o.goodput > 0 for o in options)
                and not all(o.bisection.done() for o in options)):
            raise ServePlanError(f"time limit {time_limit_s:g} s reached before any configuration "
                                 f"was verified to meet the SLO ({verifier.stopped_early}); give "
                                 f"--time-limit more seconds")
        plan = _finish(req, options, counters, verifier, pruned, prices, cal, t0, exhaustive,
                       backend, progress)
        if req.model.is_moe:  # why expert / attention-data parallelism won or lost
            from planner.moe_explain import moe_why
            from sim.deployment import plan_deployment

            unit = tuple((p, p.replicas) for p in plan_deployment(plan.to_dict()).pools)
            ctx = int(shape.input_mean + shape.output_mean / 2)  # a decode's mean context
            plan.why["moe"] = moe_why(req.model, cands, options, unit, cal, max(16, ctx))
        return plan
    finally:
        verifier.close()


def _check_time_limit(t) -> None:
    if t is None:
        return
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
        raise ServePlanError(f"time limit {t!r} s; expected a number of seconds > 0")


def _largest_kv(req: PlanInputs) -> int:
    c = req.constraints
    return largest_kv_capacity(req.model, [(g.spec, g.count) for g in req.fleet.gpus], c.precisions,
                               c.kv_dtypes, req.space.tps, tuple(req.space.pps) + (8, 16))


def _check_context(req: PlanInputs, shape) -> None:
    """Requests longer than the model's context are rejected by the engine (and the simulator):
    when more of them than the SLO's attainment allows, no deployment can meet it."""
    total = shape.input_tokens + shape.output_tokens
    over = float(np.mean(total > req.model.max_position)) if len(total) else 0.0
    if over <= 1.0 - req.slo.attainment + 1e-12:
        return
    raise DoesNotFitError(
        f"{over:.0%} of the workload's requests are longer than {req.model.name}'s context of "
        f"{req.model.max_position} tokens (the longest needs {shape.max_total_tokens} tokens of "
        f"KV, prompt + answer; the largest KV capacity of one replica on the GPUs given is "
        f"{_largest_kv(req)} tokens): the engine rejects them, so attainment "
        f"{req.slo.attainment:g} cannot be met; shorten the workload's requests", 0.0, 0.0)


def _raise_no_fit(req: PlanInputs, shape, pruned: Pruned) -> None:
    need = kv_tokens_needed(shape.max_total_tokens, req.constraints.min_kv_budget_tokens, req.model)
    fit = smallest_fit(req.model, [g.spec for g in req.fleet.gpus], req.constraints.precisions,
                       req.constraints.kv_dtypes, need, req.space.tps, tuple(req.space.pps) + (8, 16))
    have = req.fleet.describe()
    if fit is None:
        raise DoesNotFitError(f"{req.model.name} fits on none of {have}, even with 16 pipeline "
                              f"stages, with KV for the longest request ({need} tokens; the largest "
                              f"KV capacity of one replica on the GPUs given is {_largest_kv(req)} "
                              f"tokens)",
                              0.0, 0.0)
    n, gpu, tp, pp, prec = fit
    raise DoesNotFitError(
        f"{req.model.name} does not fit the GPUs given ({have}): one replica needs at least "
        f"{n} x {gpu} (tp={tp}, pp={pp}, {prec} weights) to hold the weights and KV for the "
        f"longest request ({need} tokens; the largest KV capacity of a replica the GPUs given "
        f"allow is {pruned.largest_kv_tokens} tokens); pruned: {dict(pruned.counts)}", 0.0, 0.0)


def _closest_candidates(req: PlanInputs, cands, verifier: Verifier, progress) -> list[Option]:
    """No candidate meets the SLO even at a trickle: verify the two closest (highest screened
    attainment at near-zero load) so the plan can show how close it gets."""
    pool = sorted((c for c in cands if c.role == "colocated"), key=lambda c: -c.floor_attainment)[:2]
    opts, jobs = [], []
    for c in pool:
        b = Bisection(0.05 if not req.closed_loop else 1.0, integer=req.closed_loop, max_probes=3)
        o = Option("colocated", ((c.pool, 1),), b, 0.0, c.binding, "lp")
        opts.append(o)
        jobs.append((deployment_of(req.model_name, o.mode, o.unit), b))
    verifier.bisect(jobs, progress)
    return opts


def _finish(req, options, counters, verifier, pruned, prices, cal, t0, exhaustive, backend,
            progress=None) -> Plan:
    verified = [o for o in options if o.goodput > 0]
    feasible = True
    if req.load is not None and verified:
        feasible = any(o.goodput * max_units(o, req.fleet) >= req.load for o in verified)
    ranked = rank(options, req.objective, req.load, feasible, req.fleet, prices)
    slo_ok = ranked[0].goodput > 0
    found = None
    promoted_note = ""
    # past the time limit only the winner's own operating point is simulated: no trials of the
    # cheapest sizing, no runners-up
    late = verifier.expired
    if req.load is not None and feasible and slo_ok and not late:
        found = cheapest(req, ranked, verifier, prices, progress)
        if found is not None:  # the option whose sized deployment is cheapest wins
            ranked.remove(found[0])
            ranked.insert(0, found[0])
    win = ranked[0]
    alt_opts = [] if late else _alternatives(ranked)
    if late:
        verifier.stopped_early = ((verifier.stopped_early or "time limit reached after verification")
                                  + "; plan sized from what was verified, runners-up not simulated")
    if found is not None:
        runs = [found[1:]] + operate(req, alt_opts, verifier, prices,
                                     [o.goodput > 0 for o in alt_opts], progress,
                                     repair_first=False)
    else:
        runs = operate(req, [win] + alt_opts, verifier, prices,
                       [feasible and slo_ok] + [feasible and o.goodput > 0 for o in alt_opts],
                       progress)
        if req.load is None and slo_ok and not runs[0][3] and not verifier.expired:
            promoted = _carried_instead(req, alt_opts, runs[0], verifier, prices, progress)
            if promoted is not None:
                lost_dep, _, lost_load, _ = runs[0]
                promoted_note = (
                    f"; the {win.mode} unit {win.label()} verified more per GPU alone, but its "
                    f"deployment on {lost_dep.num_gpus} GPU(s) missed the SLO down to "
                    f"{lost_load / lost_dep.num_gpus:.3g} {req.load_unit} per GPU, which this one meets")
                win, first = promoted
                ranked.remove(win)
                ranked.insert(0, win)
                alt_opts = _alternatives(ranked)
                runs = [first] + operate(req, alt_opts, verifier, prices,
                                         [o.goodput > 0 for o in alt_opts], progress,
                                         repair_first=False)
    dep, m, op_load, met = runs[0]
    binding = None
    if not slo_ok:
        feasible, binding = False, win.bound_by(req.slo) if win.bisection.probes else win.screen_binding
        binding = failure_reason_from(m, req) if binding in ("unknown", "gpus", "") else binding
    elif not feasible:
        binding = "gpus"
    elif not met:
        feasible, binding = False, failure_reason_from(m, req)
    win_pools = tuple((p, p.replicas) for p in dep.pools)
    gpus = dep.num_gpus
    cost = deployment_cost(win_pools, prices)
    predicted = Predicted.from_metrics(m, gpus, cost)

    alts = []
    for o, (adep, am, _, _) in zip(alt_opts, runs[1:], strict=True):
        apools = tuple((p, p.replicas) for p in adep.pools)
        pred = Predicted.from_metrics(am, adep.num_gpus, deployment_cost(apools, prices))
        alts.append(Alternative(o.mode, adep.to_dict(), pred, capacity(o, apools, req),
                                _why_lost(o, win, req, pred, predicted)))
    why = {
        "objective": _objective_text(req, feasible),
        "winner": {"mode": win.mode, "unit": win.label(), "bound_by": win.bound_by(req.slo),
                   "summary": _why_won(win, req, dep, op_load, met) + promoted_note},
        "alternatives": [{"mode": a.mode, "unit": a.capacity["unit"], "why": a.why} for a in alts],
        "not_refined": _not_refined(options, win, alt_opts, req, prices),
        "pruned": dict(pruned.counts),
        "pruned_examples": pruned.memory_examples,
    }
    search = {
        "method": "exhaustive simulation" if exhaustive else "screen + MILP + simulator verification",
        "candidates": space_size(req),
        "screened": counters["screened"],
        "shortlisted": counters["shortlisted"],
        "allocations": counters["allocations"],
        "verified": len(options),
        "simulated": verifier.sims,
        "sim_wall_s": round(verifier.sim_s, 3),
        "wall_s": round(time.perf_counter() - t0, 3),
        "time_limit_s": verifier.time_limit_s,
        "stopped_early": verifier.stopped_early,
        "backend": backend,
        "ranking": [{"mode": o.mode, "unit": o.label(), "goodput": o.goodput, "goodput_per_gpu": o.per_gpu}
                    for o in ranked[:8]],
    }
    notes = []
    if req.constraints.spec_method != "none":
        notes.append(f"speculative acceptance {req.constraints.spec_acceptance}: {req.acceptance_source}")
    notes += launch_lines(dep).get("notes", [])
    for gpu in dict.fromkeys(p.gpu for p in dep.pools):  # pool GPUs, in order, once each
        if cal is None or cal.calibration_for(gpu) is None:
            notes.append(defaults_note(load_gpu(gpu)))
    return Plan(
        deployment=dep.to_dict(), predicted=predicted, launch=launch_lines(dep),
        alternatives=tuple(alts), why=why, search=search,
        simulation=_simulation_block(req, op_load, m["num_requests_simulated"], cal),
        capacity=capacity(win, win_pools, req), inputs={**req.to_dict(), "backend": backend,
                                                           "exhaustive": exhaustive},
        feasible=feasible, binding=binding, uncertainty=plan_uncertainty(cal, dep, win, m, req),
        notes=tuple(notes),
    )


def _carried_instead(req: PlanInputs, alts: list[Option], failed: tuple, verifier: Verifier,
                     prices, progress=None):
    """With no target, the winner's fleet-sized deployment missed the SLO at every load it was
    backed off to (its units do not add up: uneven routing, a pool that binds as it grows).
    A runner-up whose own fleet-sized deployment meets the SLO at a load per GPU at least the
    last one the winner failed at carries more than the winner can: it wins instead. Returns
    (option, its operate() row) or None."""
    dep, _, load, _ = failed
    floor = load / max(dep.num_gpus, 1)
    for o in alts:
        if o.goodput <= 0 or verifier.expired:
            continue
        row = operate(req, [o], verifier, prices, [True], progress)[0]
        adep, _, aload, amet = row
        if amet and aload / max(adep.num_gpus, 1) >= floor:
            return o, row
    return None


def _not_refined(options: list[Option], win: Option, alts: list[Option], req: PlanInputs,
                 prices) -> list[dict]:
    """Modes the plan shows no option of because no load their units were simulated at met the
    SLO: the best such unit per mode and what its probes say (its bisection stops once even
    its lowest failing load cannot beat the leader, so its goodput stays unknown)."""
    shown = {win.mode} | {o.mode for o in alts}
    cut = {id(options[i]) for i in dominated(options, req.objective, req.load, req.fleet, prices)}
    out = []
    for mode in dict.fromkeys(o.mode for o in options):
        tried = [o for o in options if o.mode == mode and o.bisection.probes]
        if mode in shown or not tried or any(o.goodput > 0 for o in tried):
            continue
        o = max(tried, key=lambda o: o.screen_load / max(o.unit_gpus, 1))
        low = min(o.bisection.probes, key=lambda p: p.load)
        gpus = f"{o.unit_gpus} GPU" + ("s" if o.unit_gpus > 1 else "")
        why = (f"missed {failure_reason(low, req.slo)} at {low.load:.3g} {req.load_unit} "
               f"({low.load / o.unit_gpus:.3g} per GPU on {gpus}), its lowest load simulated")
        why += ("; not refined: even at that load it could not beat the best verified unit" if id(o) in cut
                else "; no load simulated met the SLO")
        out.append({"mode": mode, "unit": o.label(), "why": why})
    return out


def _alternatives(ranked: list[Option]) -> list[Option]:
    """The next best of each mode (the winner's mode too), at most one per mode."""
    win = ranked[0]
    out, modes = [], set()
    for o in ranked[1:]:
        if o.mode not in modes and o.goodput > 0:
            out.append(o)
            modes.add(o.mode)
    if win.goodput <= 0:
        out = [o for o in ranked[1:2]]
    return out


def _objective_text(req: PlanInputs, feasible: bool) -> str:
    unit = req.load_unit
    if req.load is None:
        return f"most goodput ({unit}) from the GPUs given"
    if not feasible:
        return f"the GPUs given cannot carry {req.load:g} {unit} within the SLO: the most they can"
    if req.objective == "cost":
        return f"fewest dollars per hour that serve {req.load:g} {unit} within the SLO"
    return f"most goodput per GPU, enough replicas to serve {req.load:g} {unit} within the SLO"


def _why_won(win: Option, req: PlanInputs, dep, op_load: float, met: bool) -> str:
    """Why the plan won, about the deployment shown (not the unit it was sized from, which
    may hold more or fewer GPUs)."""
    unit = req.load_unit
    gpus = dep.num_gpus
    pools = " + ".join(f"{p.replicas} {p.role}" for p in dep.pools)
    held = "meets the SLO" if met else "misses the SLO"
    return (f"{pools} on {gpus} GPU(s) {held} at {op_load:.3g} {unit} in simulation "
            f"({op_load / gpus:.3g} per GPU); above its verified goodput {win.bound_by(req.slo)} "
            f"breaks the SLO first")


def _why_lost(o: Option, win: Option, req: PlanInputs, pred: Predicted, win_pred: Predicted) -> str:
    if o.goodput <= 0:
        return f"meets the SLO at no load; bound by {o.bound_by(req.slo)}"
    if req.objective == "cost" and req.load is not None:
        lost = (f"${pred.cost_per_hour_usd:.2f}/h on {pred.gpus} GPUs vs ${win_pred.cost_per_hour_usd:.2f}/h "
                f"on {win_pred.gpus} for the target (cost)")
    elif req.load is not None and pred.gpus > win_pred.gpus:
        lost = f"needs {pred.gpus} GPUs for the target vs {win_pred.gpus}"
    else:
        d = 1.0 - (o.per_gpu / win.per_gpu) if win.per_gpu > 0 else 0.0
        lost = f"{o.per_gpu:.3g} vs {win.per_gpu:.3g} {req.load_unit} per GPU ({d:.0%} less)"
    return f"{lost}; bound by {o.bound_by(req.slo)}"


def _simulation_block(req: PlanInputs, op_load: float, n: int, cal) -> dict:
    s = req.slo
    load_flag = f"--concurrency {int(op_load)}" if req.closed_loop else f"--rate {op_load:g}"
    cmd = (f"serveplan simulate --plan PLAN.json --workload {req.workload_spec} {load_flag} "
           f"--requests {n} --seed {req.seed} --ttft-slo {s.ttft_s:g} "
           f"--tpot-slo {s.tpot_s:g} --slo-percentile {s.percentile:g} --attainment {s.attainment:g}")
    if req.burstiness_cv != 1.0:
        cmd += f" --burstiness {req.burstiness_cv:g}"
    if cal is not None:
        cmd += " --calibration CALIBRATION.json"
    return {
        "workload": req.workload_spec,
        "rate_rps": None if req.closed_loop else op_load,
        "concurrency": int(op_load) if req.closed_loop else None,
        "burstiness_cv": req.burstiness_cv,
        "num_requests": n,
        "seed": req.seed,
        "slo": {"ttft_s": s.ttft_s, "tpot_s": s.tpot_s, "percentile": s.percentile,
                "attainment": s.attainment},
        "command": cmd + " --json",
    }
