"""Screen the search space: every shape's best engine knobs and its SLO-constrained capacity.

For each shape (role, GPU, tp, pp, precision, KV dtype) the analytic screen (`planner.screen`)
estimates the capacity of one replica (requests/s, or clients for a closed loop) for knob
settings found by coordinate search over the shape's grid: the token budget, then the draft
length (k is searched as a unimodal function, plus the adaptive policy), then `max_num_seqs`,
the KV budget and the memory fraction, each knob tried with the others held at their best so
far. Settings that leave no KV cache for the workload's longest request are pruned (memory).
The best two settings per shape go to the allocation LP.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import groupby

from costmodel.memory import memory_plan
from costmodel.specs import ModelSpec
from planner.screen import Capacity, ReplicaScreen, SLOTarget
from planner.shape import WorkloadShape
from planner.space import (
    Constraints,
    Knobs,
    Pruned,
    SearchSpace,
    Shape,
    enumerate_shapes,
    knobs_for,
    kv_tokens_needed,
    make_pool,
)
from planner.timing import ReplicaTiming
from sim.deployment import PoolConfig, SpecConfig
from sim.engine import cost_model_for

KV_LINK_LATENCY_S = 20e-6  # the simulator's default prefill -> decode link latency


@dataclass(frozen=True)
class Candidate:
    """One replica configuration with its screened capacity."""

    pool: PoolConfig  # resolved, replicas = 1
    capacity: float  # SLO-meeting load one replica carries: requests/s (or clients)
    capacity_rps: float  # the same in requests/s
    binding: str  # what stops a higher load
    kv_capacity_tokens: int
    price_per_hour_usd: float  # one replica
    floor_attainment: float = 1.0  # the screen's attainment at a near-zero load (< target: SLO unreachable)

    @property
    def role(self) -> str:
        return self.pool.role

    @property
    def gpus(self) -> int:
        return self.pool.replica_gpus

    @property
    def key(self) -> str:
        p, s = self.pool, self.pool.spec
        spec = "off" if not s.enabled else (f"{s.method}:adaptive" if s.adaptive or not s.num_speculative_tokens
                                            else f"{s.method}:k{s.num_speculative_tokens}")
        moe = f"ep{p.ep}dp{p.dp}" if p.ep > 1 or p.dp > 1 else ""
        return (f"{p.role}/{p.gpu}/tp{p.tp}pp{p.pp}{moe}/{p.precision}/kv-{p.kv_dtype}/mbt{p.max_num_batched_tokens}"
                f"/seqs{p.max_num_seqs}/budget{p.kv_budget_tokens or 'none'}/mem{p.gpu_memory_utilization}"
                f"/spec-{spec}")


@dataclass
class ScreenContext:
    """What every candidate's screen shares."""

    model: ModelSpec
    shape: WorkloadShape
    slo: SLOTarget
    calibration: object | None
    horizon_requests: int | None
    closed_loop: bool
    prices: dict[str, float]  # $/GPU-hour by GPU name
    kv_link_bw_bytes_s: float | None = None
    evaluated: int = 0


def kv_transfer_s_per_token(model: ModelSpec, pool: PoolConfig, cm, link_bw: float | None) -> float:
    """Seconds per prompt token to move its KV from a prefill replica like `pool` (its NICs)."""
    from costmodel.model import KV_BYTES
    from costmodel.model_spec import kv_dtype_of

    kv = kv_dtype_of(pool.kv_dtype)
    bw = link_bw or cm.gpu.network_bw_bytes_s * cm.num_gpus
    return model.kv_elems_per_token() * KV_BYTES[kv] / bw


def screen_pool(pool: PoolConfig, ctx: ScreenContext, pruned: Pruned | None = None) -> Candidate | None:
    """Capacity of one replica of `pool`, or None when it does not fit in memory."""
    cm = cost_model_for(pool, ctx.model, ctx.calibration)
    mem = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                      pool.max_num_seqs, pool.block_size)
    need = kv_tokens_needed(ctx.shape.max_total_tokens, pool.kv_budget_tokens, ctx.model)
    if mem.kv_capacity_tokens < need:
        if pruned is not None:
            moe = f" ep={pool.ep} dp={pool.dp}" if pool.ep > 1 or pool.dp > 1 else ""
            pruned.add("memory", f"{pool.role} {pool.gpu} tp={pool.tp} pp={pool.pp}{moe} {pool.precision} "
                                 f"weights, kv {pool.kv_dtype}: KV for {mem.kv_capacity_tokens} "
                                 f"tokens < {need} needed", mem.kv_capacity_tokens)
        return None
    ctx.evaluated += 1
    timing = ReplicaTiming(pool, cm, mem.kv_capacity_tokens)
    xfer = kv_transfer_s_per_token(ctx.model, pool, cm, ctx.kv_link_bw_bytes_s) if pool.role == "decode" else 0.0
    scr = ReplicaScreen(timing, ctx.shape, ctx.slo, xfer, KV_LINK_LATENCY_S if xfer else 0.0,
                        horizon_requests=ctx.horizon_requests)
    cap: Capacity = scr.capacity()
    # a DP replica is dp ranks, each screened as a replica whose MoE layers see every rank's
    # tokens (CostModel.step_time_s with dp > 1): dp times one rank's load
    load = rate = cap.rate_rps * pool.dp
    if ctx.closed_loop and pool.role != "prefill" and cap.rate_rps > 0:
        # clients a replica serves: Little's law over a request's whole life (no think time)
        e = cap.at
        life = e.ttft_mean_s + float(scr.out_m1_mean) * e.tpot_mean_s
        load = rate * life
    price = ctx.prices[pool.gpu] * pool.replica_gpus
    return Candidate(pool, load, rate, cap.binding, mem.kv_capacity_tokens, price,
                     cap.at.attainment)


def _search_k(base: dict, specs: tuple[SpecConfig, ...], evaluate) -> list[tuple[dict, Candidate | None]]:
    """Draft lengths to try: a ternary search over fixed k (capacity is unimodal in k: each
    extra draft token is accepted less often but costs a full verify position), plus adaptive."""
    fixed = [s for s in specs if not s.adaptive]
    tried: dict[int, tuple[dict, Candidate | None]] = {}

    def at(i: int) -> float:
        if i not in tried:
            kw = {**base, "spec": fixed[i]}
            tried[i] = (kw, evaluate(kw))
        c = tried[i][1]
        return c.capacity if c is not None else -1.0

    lo, hi = 0, len(fixed) - 1
    while hi - lo > 2:
        m1 = lo + (hi - lo) // 3
        m2 = hi - (hi - lo) // 3
        if at(m1) < at(m2):
            lo = m1 + 1
        else:
            hi = m2 - 1
    for i in range(lo, hi + 1):
        at(i)
    out = list(tried.values())
    for s in specs:
        if s.adaptive:
            kw = {**base, "spec": s}
            out.append((kw, evaluate(kw)))
    return out


def screen_shape(shape: Shape, knobs: Knobs, ctx: ScreenContext, pruned: Pruned,
                 keep: int = 2) -> list[Candidate]:
    """Coordinate search over one shape's knobs; the best `keep` settings found."""
    seen: dict[PoolConfig, Candidate | None] = {}

    def evaluate(kw: dict) -> Candidate | None:
        # keyed by the resolved pool: an unset knob and the engine default it resolves to are one
        pool = make_pool(shape, kw["mbt"], kw["mns"], kw["spec"], kw["budget"], kw["util"])
        if pool not in seen:
            seen[pool] = screen_pool(pool, ctx, pruned)
        return seen[pool]

    # start from the most permissive settings: the largest token budget and memory fraction,
    # the engine's seat limit, speculation off; the KV budget first (it decides the fit)
    best_kw = {"mbt": knobs.max_num_batched_tokens[-1], "mns": knobs.max_num_seqs[0],
               "spec": knobs.specs[0], "budget": knobs.kv_budgets[0],
               "util": max(knobs.gpu_memory_utilizations)}
    best = None
    for name, values in (("budget", knobs.kv_budgets), ("mbt", knobs.max_num_batched_tokens),
                         ("spec", knobs.specs), ("mns", knobs.max_num_seqs),
                         ("util", knobs.gpu_memory_utilizations)):
        if name == "spec" and len(values) > 4:
            trials = _search_k(best_kw, values, evaluate)
        else:
            trials = [(kw, evaluate(kw)) for kw in ({**best_kw, name: v} for v in values)]
        for kw, c in trials:
            if c is not None and (best is None or c.capacity > best.capacity * (1 + 1e-9)):
                best, best_kw = c, kw
        if best is None and name == "budget":
            return []  # no KV budget lets this shape hold the workload's longest request
    live = sorted((c for c in seen.values() if c is not None), key=lambda c: -c.capacity)
    return live[:keep]


def _screen_task(args) -> tuple[list[Candidate], Pruned, int]:
    """Some shapes' screens in a worker process: their candidates, what they pruned, and how
    many settings they evaluated (the caller merges them in shape order)."""
    shapes, space, cons, ctx, keep = args
    local = Pruned()
    ctx = replace(ctx, evaluated=0)
    out: list[Candidate] = []
    for shape in shapes:
        out += screen_shape(shape, knobs_for(shape, space, cons), ctx, local, keep)
    return out, local, ctx.evaluated


def _hardware_groups(shapes: list[Shape]) -> list[list[Shape]]:
    """Runs of consecutive shapes on one hardware layout (GPU, parallelism, precision): they
    share one cost model and its memo tables (the roles and KV dtypes differ), so a worker
    screens them together rather than each worker pricing the same layout again."""
    return [list(g) for _, g in groupby(shapes, key=lambda s: (s.gpu, s.tp, s.pp, s.ep, s.dp,
                                                                s.precision))]


def screen_space(ctx: ScreenContext, fleet, space: SearchSpace, cons: Constraints,
                 pruned: Pruned, progress: Callable[[str], None] | None = None,
                 keep: int = 2, mapper: Callable | None = None) -> list[Candidate]:
    """Every shape's best candidates (empty when nothing fits the memory).

    mapper: `mapper(fn, items)` -> results in order (a process pool's map): the shapes are
    screened side by side, with the same candidates, counts and pruning notes as one after
    another (each shape's screen depends on nothing the others compute)."""
    out: list[Candidate] = []
    shapes = enumerate_shapes(ctx.model, fleet, space, cons, pruned)
    if mapper is not None and len(shapes) > 1:
        if progress:
            progress(f"screen {len(shapes)} shapes in parallel")
        results = mapper(_screen_task, [(g, space, cons, ctx, keep) for g in _hardware_groups(shapes)])
        for cands, local, evaluated in results:
            out += cands
            pruned.merge(local)
            ctx.evaluated += evaluated
        return out
    for i, shape in enumerate(shapes):
        if progress:
            progress(f"screen {i + 1}/{len(shapes)}: {shape.role} {shape.gpu} tp={shape.tp} pp={shape.pp}")
        out += screen_shape(shape, knobs_for(shape, space, cons), ctx, pruned, keep)
    return out


