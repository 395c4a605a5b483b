"""Verified options: deployment units whose goodput the simulator measured, and their ranking.

An option is a unit deployment (one colocated replica, or a prefill:decode pool pair with its
replica counts) with the goodput the simulator verified by bisection. Ranking:
- objective goodput, target servable: the fewest GPUs that carry the target (the fleet is not
  fully needed), then the most goodput per GPU;
- objective cost, target servable: dollars per hour of the deployment sized for the target;
- no target, or the fleet cannot carry it: the most goodput the fleet can deploy.
Each is scored on the unit sized for the target (`planner.sizing.size`); `dominated` says which
options cannot win whatever their unfinished bisections find.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.fleet import Fleet
from planner.sizing import deployment_cost, scale_of, size
from planner.verify import Bisection, failure_reason
from sim.deployment import PoolConfig


@dataclass
class Option:
    mode: str  # colocated | disaggregated
    unit: tuple[tuple[PoolConfig, int], ...]  # (pool, replicas) of the unit that was verified
    bisection: Bisection
    screen_load: float  # the screen's (LP's) estimate of the unit's goodput
    screen_binding: str
    origin: str  # lp | exhaustive
    screen_caps: tuple[float, ...] | None = None  # the screen's per-replica capacity of each pool
    slo: object | None = None  # sim.slo.SLO: tells which pool a failed probe ran out of

    @property
    def goodput(self) -> float:
        return self.bisection.goodput

    @property
    def unit_gpus(self) -> int:
        return sum(p.replica_gpus * n for p, n in self.unit)

    def unit_price(self, prices: dict[str, float]) -> float:
        return sum(prices[p.gpu] * p.replica_gpus * n for p, n in self.unit)

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
            moe = f" ep={p.ep} dp={p.dp}" if p.ep > 1 or p.dp > 1 else ""
            parts.append(f"{n} x {p.role} {p.gpu} tp={p.tp} pp={p.pp}{moe} (mbt {p.max_num_batched_tokens}, "
                         f"seqs {p.max_num_seqs}, kv {p.kv_dtype}{spec})")
        return " + ".join(parts)

    def bound_by(self, slo) -> str:
        """What failed at the lowest load above the goodput: memory, ttft, tpot (or attainment)."""
        hi = self.bisection.lowest_fail
        if hi is None:
            return "gpus" if self.goodput > 0 else "unknown"
        return failure_reason(hi, slo)


def score(o: Option, goodput: float, objective: str, load: float | None, feasible: bool,
          fleet: Fleet, prices: dict[str, float]) -> tuple:
    """Sort key of an option whose unit carries `goodput` (smaller is better)."""
    if goodput <= 0:
        return (1, 0.0, 0.0)
    per_gpu = goodput / o.unit_gpus
    if load is None or not feasible:
        pools = size(o, None, fleet, goodput)
        # whole verified units only: what `fill` adds beyond them rests on the screen's estimate of
        # the pool that does not bind, which ranks options on an unverified number
        return (0, -goodput * scale_of(o, pools), deployment_cost(pools, prices))
    pools = size(o, load, fleet, goodput)
    if objective == "cost":
        return (0, deployment_cost(pools, prices), -per_gpu)
    return (0, sum(p.replica_gpus * n for p, n in pools), -per_gpu)


def rank(options: list[Option], objective: str, load: float | None, feasible: bool, fleet: Fleet,
         prices: dict[str, float]) -> list[Option]:
    """Best first (options with no verified goodput last)."""
    return sorted(options, key=lambda o: score(o, o.goodput, objective, load, feasible, fleet, prices))


_UNBOUNDED = 1e12  # a goodput above any load: the unit at its smallest deployable size


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
        if i == lead or not o.bisection.probes:
            continue
        if hi is None:
            # no ceiling found yet: with a target the fleet can carry, its best case is the
            # fewest GPUs any goodput could size it to (one replica of each pool), so a unit
            # larger than the leader's whole deployment cannot win however far it climbs
            if not feasible:
                continue
            best_case = score(o, _UNBOUNDED, objective, load, feasible, fleet, prices)[:2]
            if best_case > lows[lead][:2]:
                out.add(i)
            continue
        best_case = score(o, hi.load, objective, load, feasible, fleet, prices)
        if best_case > lows[lead]:
            out.add(i)
    return out
