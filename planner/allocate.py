"""Allocation MILP (pulp, CBC): how many replicas of which candidate to deploy.

Data: candidates (one replica each) with a screened capacity `cap_i` (load units: requests/s or
clients), GPU type, GPUs per replica `gpus_i` and price per replica-hour `price_i`; the fleet's
GPU counts; the target load L (optional).

Variables: `n_i` integer replicas, `y_i` binary "candidate i is used" (the fixed-charge pattern
of PuLP's ComputerPlantProblem), `col`/`dis` binary mode, `S` >= 0 the served load.

Constraints:
- one mode: col + dis = 1; one candidate per pool: sum_C y = col, sum_P y = dis, sum_D y = dis
  (a Deployment has one pool per role), and n_i <= U_i y_i, n_i >= y_i;
- prefill and decode pools share the checkpoint and the KV layout: for each (precision, KV
  dtype) class, sum_P y = sum_D y;
- GPUs: for each type g, sum_{i on g} gpus_i n_i <= count_g;
- served load: S <= sum_C cap n + M dis, S <= sum_P cap n + M col, S <= sum_D cap n + M col
  (a disaggregated deployment serves the smaller of its two pools).

Objectives:
- `serve` (target L): S >= L, minimise sum w_i n_i - eps S with w = GPUs (objective goodput:
  the fewest GPUs, i.e. the most goodput per GPU) or w = price (objective cost);
- `max` (no target, or the fleet cannot carry it): maximise S - eps sum w_i n_i.

The k best distinct choices come from re-solving with a no-good cut on the used shapes (the
hardware of each pool), so runners-up differ in more than one engine knob.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import pulp

from planner.candidates import Candidate
from planner.fleet import Fleet

SOLVER_TIME_LIMIT_S = 10


@dataclass(frozen=True)
class Allocation:
    mode: str  # colocated | disaggregated
    pools: tuple[tuple[Candidate, int], ...]  # (candidate, replicas), colocated first / prefill, decode
    served: float  # the LP's served load (screen capacities)
    gpus: int
    cost_per_hour_usd: float
    formulation: str  # serve | max

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(c.key for c, _ in self.pools)

    @property
    def shapes(self) -> frozenset[str]:
        """Role, GPU, parallelism, precision and KV dtype of each pool (not the engine knobs)."""
        return frozenset(shape_key(c) for c, _ in self.pools)

    def describe(self) -> str:
        return " + ".join(f"{n} x {c.role} {c.pool.gpu} tp={c.pool.tp} pp={c.pool.pp}"
                          + (f" ep={c.pool.ep} dp={c.pool.dp}" if c.pool.ep > 1 or c.pool.dp > 1 else "")
                          for c, n in self.pools)


def shape_key(c: Candidate) -> str:
    p = c.pool
    moe = f"ep{p.ep}dp{p.dp}" if p.ep > 1 or p.dp > 1 else ""
    return f"{p.role}/{p.gpu}/tp{p.tp}pp{p.pp}{moe}/{p.precision}/kv-{p.kv_dtype}"


def _solver():
    # pulp is pinned (pyproject, 3.3.2) and ships CBC; the solver is named explicitly, quiet and
    # time-limited. pulp 3.3 marks PULP_CBC_CMD deprecated in favour of a separate CBC install
    # (COIN_CMD) for pulp 4: the bundled binary is what the pin guarantees, so keep it, quietly.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pulp.PULP_CBC_CMD(msg=False, timeLimit=SOLVER_TIME_LIMIT_S)


def solve(cands: Sequence[Candidate], fleet: Fleet, load: float | None, weight: str,
          mode: str | None = None, exclude: Sequence[frozenset[str]] = (),
          formulation: str = "serve") -> Allocation | None:
    """One MILP solve; None when infeasible. weight: "gpus" or "price"; mode: restrict to one."""
    cs = list({c.key: c for c in cands if c.capacity > 0 and (mode is None or _mode_of(c) == mode)}.values())
    C = [c for c in cs if c.role == "colocated"]
    P = [c for c in cs if c.role == "prefill"]
    D = [c for c in cs if c.role == "decode"]
    if not C and not (P and D):
        return None
    counts = {g.name: g.count for g in fleet.gpus}
    w = {c.key: float(c.gpus if weight == "gpus" else c.price_per_hour_usd) for c in cs}
    upper = {c.key: counts.get(c.pool.gpu, 0) // c.gpus for c in cs}
    big_m = sum(c.capacity * upper[c.key] for c in cs) + 1.0
    eps = 1e-4 * min(w.values()) / big_m

    sense = pulp.LpMinimize if formulation == "serve" else pulp.LpMaximize
    prob = pulp.LpProblem("replica_allocation", sense)
    idx = {c.key: i for i, c in enumerate(cs)}
    n = {c.key: prob.add_variable(f"n_{idx[c.key]}", 0, upper[c.key], cat="Integer") for c in cs}
    y = {c.key: prob.add_variable(f"y_{idx[c.key]}", cat="Binary") for c in cs}
    col = prob.add_variable("col", cat="Binary")
    dis = prob.add_variable("dis", cat="Binary")
    served = prob.add_variable("served", 0)
    cost = pulp.lpSum(w[c.key] * n[c.key] for c in cs)
    prob += (cost - eps * served) if formulation == "serve" else (served - eps * cost)

    prob += col + dis == 1, "one_mode"
    if not C:
        prob += col == 0, "no_colocated"
    if not (P and D):
        prob += dis == 0, "no_disaggregated"
    prob += pulp.lpSum(y[c.key] for c in C) == col, "one_colocated_type"
    prob += pulp.lpSum(y[c.key] for c in P) == dis, "one_prefill_type"
    prob += pulp.lpSum(y[c.key] for c in D) == dis, "one_decode_type"
    for c in cs:
        prob += n[c.key] <= upper[c.key] * y[c.key], f"use_{idx[c.key]}"
        prob += n[c.key] >= y[c.key], f"min_{idx[c.key]}"
    for cls in {(c.pool.precision, c.pool.kv_dtype) for c in P + D}:
        prob += (pulp.lpSum(y[c.key] for c in P if (c.pool.precision, c.pool.kv_dtype) == cls)
                 == pulp.lpSum(y[c.key] for c in D if (c.pool.precision, c.pool.kv_dtype) == cls)), \
            f"same_weights_and_kv_{cls[0]}_{cls[1]}"
    for g, cnt in counts.items():
        on_g = [c for c in cs if c.pool.gpu == g]
        if on_g:
            prob += pulp.lpSum(c.gpus * n[c.key] for c in on_g) <= cnt, f"gpus_{g}"
    prob += served <= pulp.lpSum(c.capacity * n[c.key] for c in C) + big_m * dis, "served_colocated"
    prob += served <= pulp.lpSum(c.capacity * n[c.key] for c in P) + big_m * col, "served_prefill"
    prob += served <= pulp.lpSum(c.capacity * n[c.key] for c in D) + big_m * col, "served_decode"
    if formulation == "serve":
        prob += served >= float(load), "serve_target"
    # no-good cuts on shapes: the next allocation differs in some pool's hardware, not only in
    # an engine knob (those the screen already settled within a shape)
    shape_of = {c.key: shape_key(c) for c in cs}
    for j, shapes in enumerate(exclude):
        groups = [[y[c.key] for c in cs if shape_of[c.key] == s] for s in shapes]
        if all(groups):
            prob += pulp.lpSum(v for g in groups for v in g) <= len(groups) - 1, f"no_good_{j}"

    status = prob.solve(_solver())
    if pulp.LpStatus[status] != "Optimal":
        return None
    chosen = [(c, int(round(n[c.key].value() or 0))) for c in cs if (y[c.key].value() or 0) > 0.5]
    chosen = [(c, k) for c, k in chosen if k > 0]
    if not chosen:
        return None
    order = {"colocated": 0, "prefill": 1, "decode": 2}
    chosen.sort(key=lambda ck: order[ck[0].role])
    md = "colocated" if chosen[0][0].role == "colocated" else "disaggregated"
    return _allocation(md, chosen, formulation)


def _mode_of(c: Candidate) -> str:
    return "colocated" if c.role == "colocated" else "disaggregated"


def _allocation(mode: str, chosen, formulation: str) -> Allocation:
    caps = [c.capacity * k for c, k in chosen]
    served = caps[0] if mode == "colocated" else min(caps)
    return Allocation(mode, tuple(chosen), served, sum(c.gpus * k for c, k in chosen),
                      sum(c.price_per_hour_usd * k for c, k in chosen), formulation)


def max_served(cands: Sequence[Candidate], fleet: Fleet, weight: str, mode: str | None = None) -> Allocation | None:
    return solve(cands, fleet, None, weight, mode, formulation="max")


def top_allocations(cands: Sequence[Candidate], fleet: Fleet, load: float | None, weight: str,
                    per_mode: dict[str, int]) -> tuple[list[Allocation], bool]:
    """The best distinct allocations per mode, and whether the target load is servable.

    Serves the target with the least weight when the fleet can carry it; otherwise (or with no
    target) the allocations that serve the most."""
    feasible = True
    out: list[Allocation] = []
    for mode, k in per_mode.items():
        if k <= 0:
            continue
        formulation = "serve"
        if load is None:
            formulation = "max"
        else:
            best = max_served(cands, fleet, weight, mode)
            if best is None:
                continue
            if best.served < load:
                formulation = "max"
        excl: list[frozenset[str]] = []
        for _ in range(k):
            a = solve(cands, fleet, load, weight, mode, excl, formulation)
            if a is None:
                break
            out.append(a)
            excl.append(a.shapes)
    if load is not None and out and all(a.formulation == "max" for a in out):
        feasible = False
    return out, feasible
