"""Verified options: deployment units whose goodput the simulator measured, and their ranking.

An option is a unit deployment (one colocated replica, or a prefill:decode pool pair with its
replica counts) with the goodput the simulator verified by bisection. Ranking:
- objective goodput, target servable: the fewest GPUs that carry the target (the fleet is not
  fully needed), then the most goodput per GPU;
- objective cost, target servable: dollars per hour of the deployment sized for the target;
- no target, or the fleet cannot carry it: the most goodput the fleet can deploy.
`size()` turns a unit into the deployment for the target load (whole replicas, within the fleet).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from planner.fleet import Fleet
from planner.verify import Bisection, Probe
from sim.deployment import Deployment, PoolConfig


@dataclass
class Option:
    mode: str  # colocated | disaggregated
    unit: tuple[tuple[PoolConfig, int], ...]  # (pool, replicas) of the unit that was verified
    bisection: Bisection
    screen_load: float  # the screen's (LP's) estimate of the unit's goodput
    screen_binding: str
    origin: str  # lp | exhaustive
    screen_caps: tuple[float, ...] | None = None  # the screen's per-replica capacity of each pool
    slo: object | None = None  # sim.metrics.SLO: tells which pool a failed probe ran out of

    @property
    def goodput(self) -> float:
        return self.bisection.goodput

    @property
    def unit_gpus(self) -> int:
        return sum(p.tp * p.pp * n for p, n in self.unit)

    def unit_price(self, prices: dict[str, float]) -> float:
        return sum(prices[p.gpu] * p.tp * p.pp * n for p, n in self.unit)

    @property
    def per_gpu(self) -> float:
        return self.goodput / self.unit_gpus if self.unit_gpus else 0.0

    def label(self) -> str:
        parts = []
        for p, n in self.unit:
            s = p.spec
            spec = ""
            if s.enabled:
                spec = f", {s.method} " + ("adaptive" if s.adaptive or not s.num_speculative_tokens
                                            else f"k={s.num_speculative_tokens}")
            parts.append(f"{n} x {p.role} {p.gpu} tp={p.tp} pp={p.pp} (mbt {p.max_num_batched_tokens}, "
                         f"seqs {p.max_num_seqs}, kv {p.kv_dtype}{spec})")
        return " + ".join(parts)

    def bound_by(self, slo) -> str:
        """What failed at the lowest load above the goodput: memory, ttft, tpot (or attainment)."""
        hi = self.bisection.lowest_fail
        if hi is None:
            return "gpus" if self.goodput > 0 else "unknown"
        return failure_reason(hi, slo)


def failure_reason(p: Probe, slo) -> str:
    m = p.metrics
    if m.get("preemptions", 0) > 0 or m.get("kv_peak_fraction", 0.0) >= 0.99:
        return "memory"
    if m.get("num_rejected", 0) > 0:
        return "memory"
    ttft_over = m["ttft_p90_s"] / slo.ttft_s if slo.ttft_s else 0.0
    tpot_over = (m["tpot_p90_s"] / slo.tpot_s) if (slo.tpot_s and m.get("tpot_p90_s") == m.get("tpot_p90_s")) else 0.0
    return "ttft" if ttft_over >= tpot_over else "tpot"


def scale_of(opt: Option, pools) -> float:
    """How many units a sized deployment holds (its goodput over the unit's, roughly): the
    ratio of the binding pool, i.e. the smaller ratio."""
    return min(k / n for (_, n), (_, k) in zip(opt.unit, pools, strict=True))


def max_units(opt: Option, fleet: Fleet) -> int:
    """How many copies of the unit the fleet holds."""
    need: dict[str, int] = {}
    for p, n in opt.unit:
        need[p.gpu] = need.get(p.gpu, 0) + p.tp * p.pp * n
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
        room = (cap[p.gpu] - counts[p.gpu]) // (p.tp * p.pp)
        k = max(1, min(want, room))
        counts[p.gpu] += k * p.tp * p.pp
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
    """Spend the GPUs whole units leave over: one replica at a time to the pool furthest behind
    the unit's ratio (the one that binds), while it fits."""
    counts = list(counts)
    while True:
        used: dict[str, int] = {}
        for (p, _), k in zip(opt.unit, counts, strict=True):
            used[p.gpu] = used.get(p.gpu, 0) + p.tp * p.pp * k
        order = sorted(range(len(counts)), key=lambda i: counts[i] / opt.unit[i][1])
        for i in order:
            p = opt.unit[i][0]
            if used[p.gpu] + p.tp * p.pp <= fleet.get(p.gpu).count:
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
    return sum(prices[p.gpu] * p.tp * p.pp * n for p, n in pools)


def score(o: Option, goodput: float, objective: str, load: float | None, feasible: bool,
          fleet: Fleet, prices: dict[str, float]) -> tuple:
    """Sort key of an option whose unit carries `goodput` (smaller is better)."""
    if goodput <= 0:
        return (1, 0.0, 0.0)
    per_gpu = goodput / o.unit_gpus
    if load is None or not feasible:
        pools = size(o, None, fleet, goodput)
        return (0, -goodput * scale_of(o, pools), deployment_cost(pools, prices))
    pools = size(o, load, fleet, goodput)
    if objective == "cost":
        return (0, deployment_cost(pools, prices), -per_gpu)
    return (0, sum(p.tp * p.pp * n for p, n in pools), -per_gpu)


def rank(options: list[Option], objective: str, load: float | None, feasible: bool, fleet: Fleet,
         prices: dict[str, float]) -> list[Option]:
    """Best first (options with no verified goodput last)."""
    return sorted(options, key=lambda o: score(o, o.goodput, objective, load, feasible, fleet, prices))


def dominated(options: list[Option], objective: str, load: float | None, fleet: Fleet,
              prices: dict[str, float]) -> set[int]:
    """Indexes of options that cannot win even at the top of their bisection bracket against
    the leader at the bottom of its own: refining them further would not change the plan."""
    feasible = load is not None
    lows = [score(o, o.goodput, objective, load, feasible, fleet, prices) for o in options]
    lead = min(range(len(options)), key=lambda i: lows[i])
    if options[lead].goodput <= 0:
        return set()
    out = set()
    for i, o in enumerate(options):
        hi = o.bisection.lowest_fail
        if i == lead or hi is None or not o.bisection.probes:
            continue
        best_case = score(o, hi.load, objective, load, feasible, fleet, prices)
        if best_case > lows[lead]:
            out.add(i)
    return out
