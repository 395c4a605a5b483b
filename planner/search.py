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

from costmodel.errors import ServePlanError
from costmodel.memory import memory_plan
from planner.allocate import Allocation, shape_key, top_allocations
from planner.candidates import Candidate, ScreenContext, screen_space
from planner.fleet import Fleet
from planner.options import Option, dominated, rank
from planner.request import PlanInputs
from planner.space import Pruned, all_pools, enumerate_shapes, knobs_for, kv_tokens_needed
from planner.timing import ReplicaTiming
from planner.verify import Bisection, Verifier
from sim.engine import cost_model_for

# exhaustive disaggregation: every coprime prefill:decode replica ratio up to 4:4
DISAGG_RATIOS = tuple((a, b) for a in range(1, 5) for b in range(1, 5) if math.gcd(a, b) == 1)
RUNNER_UP_WITHIN = 0.05
TOP_K = {"colocated": 2, "disaggregated": 2}


def _top_k(top_k) -> dict[str, int]:
    """Allocations verified per mode: None (the defaults), one int for every mode (as the
    service's `top_k` gives it), or {mode: k}."""
    if top_k is None:
        return dict(TOP_K)
    if isinstance(top_k, dict):
        items = top_k
    else:
        items = {m: top_k for m in TOP_K}
    for m, k in items.items():
        if m not in TOP_K or isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 64:
            raise ServePlanError(f"top_k {top_k!r}; expected an integer in [1, 64] or "
                                 f"{{mode: k}} with modes {', '.join(TOP_K)}")
    return dict(items)


def nearest_ratio(n_p: int, n_d: int) -> tuple[int, int]:
    """The DISAGG_RATIOS entry closest to n_p : n_d (in log ratio; ties to the smaller unit):
    the fast and the exhaustive search verify units from the same set of ratios."""
    r = math.log(n_p / n_d)
    return min(DISAGG_RATIOS, key=lambda ab: (round(abs(math.log(ab[0] / ab[1]) - r), 9), sum(ab)))


def _unit_of(alloc: Allocation) -> tuple[tuple[Candidate, int], ...]:
    """The unit to verify: one colocated replica, or the prefill:decode pair of the space's ratios
    nearest the LP's counts (simulation cost grows with the load a unit carries)."""
    if alloc.mode == "colocated":
        return ((alloc.pools[0][0], 1),)
    (cp, n_p), (cd, n_d) = alloc.pools
    a, b = nearest_ratio(n_p, n_d)
    return ((cp, a), (cd, b))


def _screen_load(unit) -> float:
    return min(c.capacity * n for c, n in unit)


def _efficiency(c: Candidate, weight: str) -> float:
    return c.capacity / (c.gpus if weight == "gpus" else c.price_per_hour_usd)


def variants(unit, cands: list[Candidate], weight: str, within: float = RUNNER_UP_WITHIN) -> list:
    """Units next to the best one of a mode, which the screen cannot separate from it:
    - each pool swapped for the most efficient other candidate of its role (capacity per GPU, or
      per dollar) within `within` of the chosen one's efficiency, once with the same hardware
      (another engine-knob setting) and once with other hardware (TP2 and TP4 prefill replicas
      carry about the same per GPU), its replica count rescaled to keep the pool's capacity;
    - the same unit with the other KV dtype (the best screened setting of each twin shape), and
      likewise for the unit with other hardware;
    - for a prefill:decode pair, the neighbouring ratios of the space."""
    out = []
    for i, (c, n) in enumerate(unit):
        eff = _efficiency(c, weight)
        # a prefill and a decode pool must agree on weights and KV layout
        rivals = [r for r in cands if r.role == c.role and r.key != c.key
                  and (r.pool.precision, r.pool.kv_dtype) == (c.pool.precision, c.pool.kv_dtype)
                  and _efficiency(r, weight) >= (1 - within) * eff]
        same = [r for r in rivals if shape_key(r) == shape_key(c)]
        other = [r for r in rivals if shape_key(r) != shape_key(c)]
        for group in (same, other):  # the best other knob setting, and the best other hardware
            if not group:
                continue
            r = max(group, key=lambda x: _efficiency(x, weight))
            swapped = list(unit)
            swapped[i] = (r, max(1, round(n * c.capacity / r.capacity)))
            if len(swapped) == 2:
                a, b = nearest_ratio(swapped[0][1], swapped[1][1])
                swapped = [(swapped[0][0], a), (swapped[1][0], b)]
            out.append(tuple(swapped))
            if group is other:  # new hardware: its KV dtype preference may differ too
                twin = kv_twin(tuple(swapped), cands)
                if twin is not None:
                    out.append(twin)
    twin = kv_twin(unit, cands)
    if twin is not None:
        out.append(twin)
    if len(unit) == 2:
        order = sorted(DISAGG_RATIOS, key=lambda ab: ab[0] / ab[1])
        k = order.index((unit[0][1], unit[1][1]))
        for j in (k - 1, k + 1):
            if 0 <= j < len(order):
                a, b = order[j]
                out.append(((unit[0][0], a), (unit[1][0], b)))
    return out


def kv_twin(unit, cands: list[Candidate]):
    """The same hardware with the other KV dtype in every pool (each pool's best screened
    setting of its twin shape), or None: fp8 KV halves attention's reads and doubles the cache,
    which the screen prices less well than the simulator does."""
    twin = []
    for c, n in unit:
        alike = [r for r in cands if r.role == c.role and r.pool.kv_dtype != c.pool.kv_dtype
                 and (r.pool.gpu, r.pool.tp, r.pool.pp, r.pool.ep, r.pool.dp, r.pool.precision)
                 == (c.pool.gpu, c.pool.tp, c.pool.pp, c.pool.ep, c.pool.dp, c.pool.precision)]
        if not alike:
            return None
        twin.append((max(alike, key=lambda x: x.capacity), n))
    return tuple(twin) if len({r.pool.kv_dtype for r, _ in twin}) == 1 else None


def fast_options(req: PlanInputs, ctx: ScreenContext, verifier: Verifier, pruned: Pruned,
                 top_k: dict[str, int] | None = None,
                 progress: Callable[[str], None] | None = None) -> tuple[list[Option], dict, list]:
    """Screen, allocate, verify: the options, search counters and the screened candidates."""
    space, cons, fleet = req.space, req.constraints, req.fleet
    cands = screen_space(ctx, fleet, space, cons, pruned, progress,
                         mapper=getattr(verifier.executor, "map_fn", None))
    weight = "price" if req.objective == "cost" else "gpus"
    per_mode = {m: k for m, k in _top_k(top_k).items() if m in space.modes}
    allocs, feasible = top_allocations(cands, fleet, req.load, weight, per_mode)
    prices = {g.name: g.price_per_hour_usd for g in fleet.gpus}
    seen: set = set()
    options: list[Option] = []
    units_of: dict[int, tuple] = {}

    def verify(units: list[tuple[str, tuple]], bias: dict[str, float] | None = None) -> None:
        if verifier.expired:  # past the time limit: plan with what is verified
            return
        jobs = []
        for mode, unit in units:
            key = tuple((c.pool, n) for c, n in unit)
            if key in seen or not _fits(fleet, key):
                continue
            seen.add(key)
            screened = _screen_load(unit)
            # start the bisection where the screen's error on this mode's verified best says
            # the goodput is (the screen's bias is shared by neighbouring settings)
            guess = screened * (bias or {}).get(mode, 1.0)
            binding = min((c.capacity * n, c.binding) for c, n in unit)[1]
            b = Bisection(guess, integer=req.closed_loop, requests_for=req.requests_for)
            opt = Option(mode, key, b, screened, binding, "lp", tuple(c.capacity for c, _ in unit),
                         req.slo)
            units_of[id(opt)] = unit
            options.append(opt)
            jobs.append((_deployment(req, opt), b))
        # stop refining an option once even its optimistic goodput cannot beat the leader's floor
        verifier.bisect(jobs, progress, lambda: {
            id(options[i].bisection)
            for i in dominated(options, req.objective, req.load, fleet, prices)})

    # stage 1: the MILP's picks and, for an MoE model, the best replica of each expert layout
    # they lack (verified side by side, the losers stop early); stage 2: the neighbours of each
    # mode's verified best, which the screen cannot tell apart from it
    stage1 = [(a.mode, _unit_of(a)) for a in allocs]
    if "colocated" in per_mode:
        stage1 += _each_moe_layout(req, [u for m, u in stage1 if m == "colocated"], cands, weight)
    verify(stage1)
    ranked = rank(options, req.objective, req.load, req.load is not None, fleet, prices)
    stage2, bias = [], {}
    for mode in per_mode:
        best = next((o for o in ranked if o.mode == mode and o.goodput > 0), None)
        if best is not None:
            stage2 += [(mode, v) for v in variants(units_of[id(best)], cands, weight)]
            if best.screen_load > 0:
                bias[mode] = best.goodput / best.screen_load

    verify(stage2, bias)
    counters = {"screened": ctx.evaluated, "shortlisted": len(cands), "allocations": len(allocs),
                "lp_feasible": feasible}
    return options, counters, cands


def _each_moe_layout(req: PlanInputs, units: list[tuple], cands: list[Candidate],
                     weight: str) -> list:
    """For an MoE model, the best screened colocated replica of each expert layout (experts
    tensor-parallel, EP inside TP, DP attention + EP) that none of `units` has yet:
    the screen cannot rank layouts whose decode steps it prices within a few percent of each
    other, and `--explain` compares the layouts by what the simulator verified."""
    if not getattr(req.model, "is_moe", False):
        return []
    from planner.moe_explain import kind_of

    have = {kind_of(c.pool) for u in units for c, _ in u}
    best: dict[str, Candidate] = {}
    for c in cands:
        if c.role != "colocated" or c.capacity <= 0:
            continue
        k = kind_of(c.pool)
        if k not in have and (k not in best or _efficiency(c, weight) > _efficiency(best[k], weight)):
            best[k] = c
    return [("colocated", ((c, 1),)) for _, c in sorted(best.items())]


def _deployment(req: PlanInputs, opt: Option):
    from planner.sizing import deployment_of

    return deployment_of(req.model_name, opt.mode, opt.unit)


def grid(req: PlanInputs, ctx: ScreenContext, pruned: Pruned) -> dict[str, list]:
    """Every configuration of the space that fits in memory, by role (one replica each)."""
    out: dict[str, list] = {"colocated": [], "prefill": [], "decode": []}
    for shape in enumerate_shapes(req.model, req.fleet, req.space, req.constraints, pruned):
        for pool in all_pools(shape, knobs_for(shape, req.space, req.constraints)):
            cm = cost_model_for(pool, req.model, ctx.calibration)
            mem = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                              pool.max_num_seqs, pool.block_size)
            need = kv_tokens_needed(ctx.shape.max_total_tokens, pool.kv_budget_tokens, req.model)
            if mem.kv_capacity_tokens < need:
                pruned.add("memory", kv_tokens=mem.kv_capacity_tokens)
                continue
            out[pool.role].append((pool, ReplicaTiming(pool, cm, mem.kv_capacity_tokens)))
    return out


def space_size(req: PlanInputs) -> int:
    """Configurations in the space after the structural rules (before memory)."""
    n = 0
    p = Pruned()
    for shape in enumerate_shapes(req.model, req.fleet, req.space, req.constraints, p):
        n += knobs_for(shape, req.space, req.constraints).size
    return n


def _fits(fleet: Fleet, unit) -> bool:
    need: dict[str, int] = {}
    for p, n in unit:
        need[p.gpu] = need.get(p.gpu, 0) + p.replica_gpus * n
    return all(fleet.get(g).count >= k for g, k in need.items())


def exhaustive_options(req: PlanInputs, ctx: ScreenContext, verifier: Verifier, pruned: Pruned,
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
