"""The planner's two searches over one space, both ending in simulator-verified options.

- `fast_options`: screen every shape analytically (`planner.candidates`), let the MILP
  (`planner.allocate`) pick the best few allocations per mode, and verify each one's unit in the
  simulator by bisection on the load (seeded with the screen's estimate).
- `exhaustive_options`: no screen, no LP: every configuration of the same space (the full knob
  grid of every shape; for disaggregation every prefill x decode pair at every coprime replica
  ratio up to 4:4 that fits the fleet) is verified by bisection in the simulator. This is how
  the fast path's shortcuts are judged (benchmarks/planner_quality.py).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace

from costmodel.memory import memory_plan
from planner.allocate import Allocation, shape_key, top_allocations
from planner.candidates import Candidate, ScreenContext, screen_space
from planner.fleet import Fleet
from planner.options import Option, dominated
from planner.request import PlanRequest
from planner.space import Pruned, all_pools, enumerate_shapes, knobs_for, kv_tokens_needed
from planner.timing import ReplicaTiming
from planner.verify import Bisection, Verifier
from sim.engine import cost_model_for

# exhaustive disaggregation: every coprime prefill:decode replica ratio up to 4:4
DISAGG_RATIOS = tuple((a, b) for a in range(1, 5) for b in range(1, 5) if math.gcd(a, b) == 1)
KNOB_RUNNER_UP_WITHIN = 0.05
TOP_K = {"colocated": 2, "disaggregated": 2}


def nearest_ratio(n_p: int, n_d: int) -> tuple[int, int]:
    """The DISAGG_RATIOS entry closest to n_p : n_d (in log ratio; ties to the smaller unit):
    the fast and the exhaustive search verify units from the same set of ratios."""
    r = math.log(n_p / n_d)
    return min(DISAGG_RATIOS, key=lambda ab: (round(abs(math.log(ab[0] / ab[1]) - r), 9), sum(ab)))


def _unit_of(alloc) -> tuple:
    """The unit to verify: one colocated replica, or the prefill:decode pair of the space's ratios
    nearest the LP's counts (simulation cost grows with the load a unit carries)."""
    if alloc.mode == "colocated":
        c, _ = alloc.pools[0]
        return ((c.pool, 1),)
    (cp, n_p), (cd, n_d) = alloc.pools
    a, b = nearest_ratio(n_p, n_d)
    return ((cp.pool, a), (cd.pool, b))


def _unit_screen_load(alloc, unit) -> float:
    if alloc.mode == "colocated":
        return alloc.pools[0][0].capacity
    (cp, _), (cd, _) = alloc.pools
    return min(cp.capacity * unit[0][1], cd.capacity * unit[1][1])


def knob_runners_up(allocs: list[Allocation], cands: list[Candidate],
                    within: float = KNOB_RUNNER_UP_WITHIN) -> list[Allocation]:
    """For the best allocation of each mode, the same hardware with the engine knobs the screen
    ranked second in its pool (colocated, or decode: where speculation and the seat limit live),
    when the screen puts the two within `within` of each other: the screen separates shapes
    better than it separates knob settings of one shape."""
    out, done = [], set()
    for a in allocs:
        if a.mode in done:
            continue
        done.add(a.mode)
        idx = 0 if a.mode == "colocated" else 1
        best, n = a.pools[idx]
        sk = shape_key(best)
        rivals = [c for c in cands if shape_key(c) == sk and c.key != best.key
                  and c.capacity >= (1 - within) * best.capacity]
        if not rivals:
            continue
        alt = max(rivals, key=lambda c: c.capacity)
        pools = list(a.pools)
        pools[idx] = (alt, n)
        out.append(replace(a, pools=tuple(pools)))
    return out


def fast_options(req: PlanRequest, ctx: ScreenContext, verifier: Verifier, pruned: Pruned,
                 top_k: dict[str, int] | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[list[Option], dict, list]:
    """Screen, allocate, verify: the options, search counters and the screened candidates."""
    space, cons, fleet = req.space, req.constraints, req.fleet
    cands = screen_space(ctx, fleet, space, cons, pruned, progress)
    weight = "price" if req.objective == "cost" else "gpus"
    per_mode = {m: k for m, k in (top_k or TOP_K).items() if m in space.modes}
    allocs, feasible = top_allocations(cands, fleet, req.load, weight, per_mode)
    allocs = allocs + knob_runners_up(allocs, cands)
    seen: set = set()
    options: list[Option] = []
    jobs = []
    for a in allocs:
        unit = _unit_of(a)
        key = tuple((p, n) for p, n in unit)
        if key in seen:
            continue
        seen.add(key)
        guess = _unit_screen_load(a, unit)
        b = Bisection(guess, integer=req.closed_loop, requests_for=req.requests_for)
        binding = a.pools[0][0].binding if a.mode == "colocated" else min(
            ((c.capacity * n, c.binding) for c, n in a.pools))[1]
        opt = Option(a.mode, unit, b, guess, binding, "lp")
        options.append(opt)
        jobs.append((_deployment(req, opt), b))
    prices = {g.name: g.price_per_hour_usd for g in fleet.gpus}
    # stop refining an option once even its optimistic goodput cannot beat the leader's floor
    verifier.bisect(jobs, progress,
                    lambda: dominated(options, req.objective, req.load, fleet, prices))
    counters = {"screened": ctx.evaluated, "shortlisted": len(cands), "allocations": len(allocs),
                "lp_feasible": feasible}
    return options, counters, cands


def _deployment(req: PlanRequest, opt: Option):
    from planner.options import deployment_of

    return deployment_of(req.model_name, opt.mode, opt.unit)


def grid(req: PlanRequest, ctx: ScreenContext, pruned: Pruned) -> dict[str, list]:
    """Every configuration of the space that fits in memory, by role (one replica each)."""
    out: dict[str, list] = {"colocated": [], "prefill": [], "decode": []}
    for shape in enumerate_shapes(req.model, req.fleet, req.space, req.constraints, pruned):
        for pool in all_pools(shape, knobs_for(shape, req.space, req.constraints)):
            cm = cost_model_for(pool, req.model, ctx.calibration)
            mem = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                              pool.max_num_seqs, pool.block_size)
            need = kv_tokens_needed(ctx.shape.max_total_tokens, pool.kv_budget_tokens, req.model)
            if mem.kv_capacity_tokens < need:
                pruned.add("memory")
                continue
            out[pool.role].append((pool, ReplicaTiming(pool, cm, mem.kv_capacity_tokens)))
    return out


def space_size(req: PlanRequest) -> int:
    """Configurations in the space after the structural rules (before memory)."""
    n = 0
    p = Pruned()
    for shape in enumerate_shapes(req.model, req.fleet, req.space, req.constraints, p):
        n += knobs_for(shape, req.space, req.constraints).size
    return n


def _fits(fleet: Fleet, unit) -> bool:
    need: dict[str, int] = {}
    for p, n in unit:
        need[p.gpu] = need.get(p.gpu, 0) + p.tp * p.pp * n
    return all(fleet.get(g).count >= k for g, k in need.items())


def exhaustive_options(req: PlanRequest, ctx: ScreenContext, verifier: Verifier, pruned: Pruned,
                       progress: Callable[[str], None] | None = None) -> tuple[list[Option], dict, list]:
    """Simulate every configuration of the space (bisection from a cost-model throughput bound)."""
    g = grid(req, ctx, pruned)
    options: list[Option] = []
    jobs = []

    def add(mode: str, unit: tuple, guess: float) -> None:
        if not _fits(req.fleet, unit):
            pruned.add("gpus")
            return
        b = Bisection(guess, integer=req.closed_loop, max_probes=10, grow=2.0,
                      requests_for=req.requests_for)
        opt = Option(mode, unit, b, 0.0, "", "exhaustive")
        options.append(opt)
        jobs.append((_deployment(req, opt), b))

    def bound(timing) -> float:
        x = 0.5 * timing.throughput_bound_rps(ctx.shape)
        return max(1.0, round(x)) if req.closed_loop else x

    if "colocated" in req.space.modes:
        for pool, t in g["colocated"]:
            add("colocated", ((pool, 1),), bound(t))
    if "disaggregated" in req.space.modes:
        for pp_, tp_ in g["prefill"]:
            for dp_, td_ in g["decode"]:
                if (pp_.precision, pp_.kv_dtype) != (dp_.precision, dp_.kv_dtype):
                    continue
                for n_p, n_d in DISAGG_RATIOS:
                    guess = min(n_p * bound(tp_), n_d * bound(td_))
                    add("disaggregated", ((pp_, n_p), (dp_, n_d)), guess)
    if progress:
        progress(f"exhaustive: {len(jobs)} configurations to simulate")
    verifier.bisect(jobs, progress)
    counters = {"screened": 0, "shortlisted": len(options), "allocations": 0, "lp_feasible": None}
    return options, counters, []
