"""Sizing and repair: from a verified unit to the deployment that serves the target load.

A unit (`planner.options.Option`) is one colocated replica, or a prefill:decode pair of pools,
whose goodput the simulator verified. Here it becomes the deployment the plan launches:
- `size(opt, load, fleet)`: whole replicas for the target load, pool by pool from each pool's
  capacity (`pool_capacities`), within the fleet; with no target, as many units as the fleet
  holds (`max_units`) and the GPUs whole units leave over (`fill`, to the pool that binds);
  `scale_of` says how many units a sized deployment holds, `carried` what load it carries
  (pool by pool, so a replica `fill` added to the binding pool counts);
- `cheapest(...)`: the cheapest sized deployment the simulator says carries the target (the
  best few options sized, and each with one replica fewer in one pool);
- `operate(...)`: every option simulated at its operating load in one round; then the winner
  repaired while it misses the SLO: one more replica where it failed (`_grow`) or, with no
  target, a little less load (`_back_off`), at most MAX_REPAIRS times;
- `capacity(...)`: the Plan's capacity block; `deployment_of`, `deployment_cost`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

from planner.fleet import Fleet
from planner.request import PlanInputs
from planner.verify import Probe, Verifier, failure_reason
from sim.deployment import Deployment, PoolConfig

if TYPE_CHECKING:  # options imports this module (its ranking sizes options)
    from planner.options import Option

MAX_REPAIRS = 3


def scale_of(opt: Option, pools) -> float:
    """How many units a sized deployment holds (its goodput over the unit's, roughly): the
    ratio of the binding pool, i.e. the smaller ratio."""
    return min(k / n for (_, n), (_, k) in zip(opt.unit, pools, strict=True))


def carried(opt: Option, pools, goodput: float | None = None) -> float:
    """The load a sized deployment of `opt` carries, at the unit's verified goodput (or
    `goodput`): the smallest pool's replicas x its per-replica capacity (`pool_capacities`).
    For a colocated unit, or a deployment of whole units, this is goodput x `scale_of`; a
    prefill or decode replica that `fill` added beyond whole units adds what its pool carries
    while that pool still binds."""
    g = opt.goodput if goodput is None else goodput
    if g <= 0:
        return 0.0
    caps = pool_capacities(opt, g)
    return min(k * c for (_, k), c in zip(pools, caps, strict=True))


def max_units(opt: Option, fleet: Fleet) -> int:
    """How many copies of the unit the fleet holds."""
    need: dict[str, int] = {}
    for p, n in opt.unit:
        need[p.gpu] = need.get(p.gpu, 0) + p.replica_gpus * n
    return min(fleet.get(g).count // k for g, k in need.items())


def size(opt: Option, load: float | None, fleet: Fleet,
         goodput: float | None = None) -> tuple[tuple[PoolConfig, int], ...]:
    """Replica counts of the deployment: enough units for `load` (None: as many as fit), at the
    unit's verified goodput (or `goodput` when given)."""
    g_unit = opt.goodput if goodput is None else goodput
    counts = {p.gpu: 0 for p, _ in opt.unit}
    cap = {g.name: g.count for g in fleet.gpus}
    if load is None or g_unit <= 0:
        m = max(1, max_units(opt, fleet))
        if opt.mode == "colocated":
            return ((opt.unit[0][0], m),)
        return fill(opt, [n * m for _, n in opt.unit], fleet)
    caps = pool_capacities(opt, g_unit)
    out = []
    for (p, _), c in zip(opt.unit, caps, strict=True):
        want = max(1, math.ceil(load / c - 1e-9))
        room = (cap[p.gpu] - counts[p.gpu]) // (p.replica_gpus)
        k = max(1, min(want, room))
        counts[p.gpu] += k * p.replica_gpus
        out.append((p, k))
    return tuple(out)


def pool_capacities(opt: Option, goodput: float) -> list[float]:
    """Per-replica capacity of each pool, from the unit's verified goodput.

    A colocated replica carries the unit's goodput. In a prefill:decode unit the pool that ran
    out first (TTFT: prefill; TPOT, memory: decode; from the lowest failed probe) carries
    goodput / its replicas; the other carries the screen's estimate rescaled by how far the
    screen was off for the unit, and at least goodput / its replicas. Sizing pool by pool, not
    unit by unit, keeps a pool that has slack from being rounded up with the one that binds."""
    if opt.mode == "colocated" or not opt.screen_caps or opt.slo is None:
        return [goodput / n for _, n in opt.unit]
    counts = [n for _, n in opt.unit]
    screen_unit = min(c * n for c, n in zip(opt.screen_caps, counts, strict=True))
    scale = goodput / screen_unit if screen_unit > 0 else 1.0
    caps = [max(c * scale, goodput / n) for c, n in zip(opt.screen_caps, counts, strict=True)]
    hi = opt.bisection.lowest_fail
    bind = 0 if hi is not None and failure_reason(hi, opt.slo) == "ttft" else 1
    caps[bind] = goodput / counts[bind]
    return caps


def fill(opt: Option, counts: list[int], fleet: Fleet) -> tuple[tuple[PoolConfig, int], ...]:
    """Spend the GPUs whole units leave over: one replica at a time to the pool that binds (the
    smallest replicas x per-replica capacity, `pool_capacities`; with no verified goodput, the
    pool furthest behind the unit's ratio), while it fits."""
    counts = list(counts)
    caps = (pool_capacities(opt, opt.goodput) if opt.goodput > 0
            else [1.0 / n for _, n in opt.unit])
    while True:
        used: dict[str, int] = {}
        for (p, _), k in zip(opt.unit, counts, strict=True):
            used[p.gpu] = used.get(p.gpu, 0) + p.replica_gpus * k
        order = sorted(range(len(counts)), key=lambda i: counts[i] * caps[i])
        for i in order:
            p = opt.unit[i][0]
            if used[p.gpu] + p.replica_gpus <= fleet.get(p.gpu).count:
                counts[i] += 1
                break
        else:
            return tuple((p, k) for (p, _), k in zip(opt.unit, counts, strict=True))
        # adding to a pool that does not bind gains nothing: stop when the binding one is full
        if i != order[0]:
            counts[i] -= 1
            return tuple((p, k) for (p, _), k in zip(opt.unit, counts, strict=True))


def deployment_of(model: str, mode: str, pools: tuple[tuple[PoolConfig, int], ...],
                  prices: dict[str, float] | None = None) -> Deployment:
    ps = tuple(replace(p, replicas=int(n),
                       gpu_price_per_hour_usd=(prices or {}).get(p.gpu, p.gpu_price_per_hour_usd))
               for p, n in pools)
    return Deployment(model=model, pools=ps, mode=mode)


def deployment_cost(pools, prices: dict[str, float]) -> float:
    return sum(prices[p.gpu] * p.replica_gpus * n for p, n in pools)


def _sizing(req: PlanInputs, opt: Option, feasible: bool):
    """(pools, operating load, target load or None) of `opt` deployed for the target."""
    load = req.load if feasible else None
    pools = size(opt, load, req.fleet)
    op_load = load
    if op_load is None:  # as much as the deployed pools carry
        op_load = max(carried(opt, pools), 0.05 if not req.closed_loop else 1.0)
        if req.closed_loop:
            op_load = float(max(1, int(op_load)))
        elif req.load is not None:
            op_load = min(op_load, req.load)
    return pools, op_load, load


def operate(req: PlanInputs, opts: list[Option], verifier: Verifier, prices,
            feasible: list[bool], progress=None, repair_first: bool = True) -> list[tuple]:
    """Simulate each option sized for the target, all in one round; then, for the first (the
    winner) only, add replicas (or back the load off, with no target) while the SLO fails.
    Returns (deployment, metrics, operating load, SLO met) per option."""
    sized = [_sizing(req, o, f) for o, f in zip(opts, feasible, strict=True)]
    items = []
    for i, (o, (pools, op_load, load)) in enumerate(zip(opts, sized, strict=True)):
        best = o.bisection.best
        if i > 0 and load is None and best is not None:
            # a runner-up with no target to size for: its verified unit at its goodput (that
            # simulation already ran), not another fleet-sized run
            items.append((deployment_of(req.model_name, o.mode, o.unit, prices), best.load,
                          req.requests_for(best.load)))
        else:
            items.append((deployment_of(req.model_name, o.mode, pools, prices), op_load,
                          req.requests_for(op_load)))
    spare = None
    if repair_first and opts and sized[0][2] is None and opts[0].goodput > 0:
        # no target: the winner's fleet-sized run may need its load backed off; simulate the
        # backed-off load in the same round (a second worker), not in a round of its own
        spare = (items[0][0], _back_off(req, items[0][1]), req.requests_for(_back_off(req, items[0][1])))
    if progress:
        progress(f"operating point: {len(items) + (spare is not None)} simulation(s)")
    ms = verifier.run(items + ([spare] if spare else []))
    out = [(d, dict(m, num_requests_simulated=n), x, bool(m["slo_met"]))
           for (d, x, n), m in zip(items, ms[:len(items)], strict=True)]
    if not repair_first or not opts:
        return out
    win = opts[0]
    pools, op_load, load = sized[0]
    dep, m, _, met = out[0]
    if spare is not None and not met and ms[-1]["slo_met"]:
        op_load = spare[1]
        m, met = dict(ms[-1], num_requests_simulated=spare[2]), True
        out[0] = (dep, m, op_load, met)
    for _ in range(MAX_REPAIRS):
        if met or win.goodput <= 0 or verifier.expired:
            break
        if load is None:
            op_load = _back_off(req, op_load)
        else:
            grown = _grow(win, pools, m, req, prices)
            if grown is None:
                break
            pools = grown
        n = req.requests_for(op_load)
        dep = deployment_of(req.model_name, win.mode, pools, prices)
        m = dict(verifier.run([(dep, op_load, n)])[0], num_requests_simulated=n)
        met = bool(m["slo_met"])
        out[0] = (dep, m, op_load, met)
    return out


def _back_off(req: PlanInputs, load: float) -> float:
    """The whole deployment carries a little less than its units did alone (another slice of
    the trace, uneven routing): the next operating load to try."""
    return float(max(1, int(load * 0.93))) if req.closed_loop else load * 0.93


def cheapest(req: PlanInputs, ranked: list[Option], verifier: Verifier, prices, progress=None,
             top: int = 3):
    """The cheapest deployment that the simulator says carries the target: each of the `top`
    best options sized for the target, and the same with one replica fewer in one pool (the
    sizing rounds up, and a unit's goodput is a lower bound), tried cheapest first, two at a
    time. Returns (option, deployment, metrics, load, met) or None when none meets the SLO."""
    load = req.load
    trials = []
    for o in [o for o in ranked if o.goodput > 0][:top]:
        pools = size(o, load, req.fleet)
        trials.append((o, pools))
        for i, (p, n) in enumerate(pools):
            if n > 1:
                fewer = list(pools)
                fewer[i] = (p, n - 1)
                trials.append((o, tuple(fewer)))

    def cost(t):
        pools = t[1]
        gpus = sum(p.replica_gpus * n for p, n in pools)
        dollars = deployment_cost(pools, prices)
        return (dollars, gpus) if req.objective == "cost" else (gpus, dollars)

    seen, ordered = set(), []
    for t in sorted(trials, key=cost):
        key = tuple((p, n) for p, n in t[1])
        if key not in seen:
            seen.add(key)
            ordered.append(t)
    n = req.requests_for(load)
    for i in range(0, len(ordered), 2):
        batch = ordered[i:i + 2]
        if progress:
            progress(f"sizing for the target: {len(batch)} simulation(s)")
        deps = [deployment_of(req.model_name, o.mode, pools, prices) for o, pools in batch]
        ms = verifier.run([(d, load, n) for d in deps])
        for (o, _), d, m in zip(batch, deps, ms, strict=True):
            if m["slo_met"]:
                return o, d, dict(m, num_requests_simulated=n), load, True
    return None


def _grow(opt: Option, pools, m: dict, req: PlanInputs, prices):
    """One more replica where the SLO failed (the prefill pool for TTFT, else decode)."""
    used = {}
    for p, n in pools:
        used[p.gpu] = used.get(p.gpu, 0) + p.replica_gpus * n
    reason = failure_reason_from(m, req)
    idx = 0
    if opt.mode == "disaggregated":
        idx = 0 if reason == "ttft" else 1
    p, n = pools[idx]
    if used[p.gpu] + p.replica_gpus > req.fleet.get(p.gpu).count:
        return None
    out = list(pools)
    out[idx] = (p, n + 1)
    return tuple(out)


def failure_reason_from(m: dict, req: PlanInputs) -> str:
    """What a run's metrics (RunMetrics.to_dict()) say it ran out of: memory, ttft or tpot."""
    return failure_reason(Probe(0.0, bool(m["slo_met"]), 0.0, m), req.slo)


def capacity(opt: Option, pools, req: PlanInputs) -> dict:
    """The Plan's capacity block of `opt` deployed as `pools`: the unit's verified goodput and
    its probes, and what the deployment carries (`carried`: pool by pool)."""
    dep_goodput = carried(opt, pools)
    out = {
        "load_unit": req.load_unit,
        "unit": opt.label(),
        "unit_gpus": opt.unit_gpus,
        "unit_goodput": opt.goodput,
        "goodput_per_gpu": opt.per_gpu,
        "deployment_goodput_estimate": dep_goodput,
        "screen_estimate": opt.screen_load if opt.origin == "lp" else None,
        "verify_probes": [{"load": p.load, "slo_met": p.met, "attainment": p.metrics["slo_attainment"]}
                          for p in sorted(opt.bisection.probes, key=lambda p: p.load)],
    }
    if req.load:
        out["headroom"] = dep_goodput / req.load - 1.0
    return out
