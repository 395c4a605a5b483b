"""The search space: which replica configurations a plan may use, pruned by memory.

A candidate is one replica of one pool (colocated, prefill or decode): a PoolConfig with
`replicas=1`. The space crosses GPU type (each type in the fleet), tensor and pipeline
parallelism, weight precision, KV dtype, `max_num_seqs`, `max_num_batched_tokens` (the chunk
size follows it), `gpu_memory_utilization`, the per-request KV budget, and the speculative
draft length k in 0..8 plus the adaptive policy. Constraints come from the user
(`Constraints`); the knob values from `SearchSpace` (whose defaults are the planner's space).

Pruning, before any estimate: TP is a power of two that divides the heads and stays inside a
node; tp x pp is at most `max_gpus_per_replica` and at most the fleet's count of that GPU;
pipeline parallelism is searched only when TP inside one node cannot hold the model (vLLM's own
advice: TP within a node, PP across nodes) unless `SearchSpace.force_pp`; speculative decoding
is not combined with PP (vLLM does not support it); and the memory plan must leave KV cache
for the longest request of the workload (`costmodel.memory`).

Mixture-of-experts models add attention data parallelism and expert parallelism: `dp` ranks
of `tp` GPUs each (`SearchSpace.dps`; tp x dp within the GPUs a replica may use), the experts
either tensor-parallel over the TP group (ep = 1, dp = 1), expert-parallel over it (ep = tp),
or, with dp > 1, expert-parallel over all tp x dp GPUs (vLLM's `--data-parallel-size N
--enable-expert-parallel`, SGLang's DP attention with `--ep-size`). The memory plan knows the
experts are sharded over all tp x dp GPUs while attention is per rank. DP ranks run without
PP and without speculative decoding (what the simulator models).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from costmodel.errors import ServePlanError
from costmodel.memory import memory_plan
from costmodel.model import KV_DTYPES, PRECISIONS, CostModel, check_parallelism
from costmodel.specs import ModelSpec
from planner.fleet import Fleet
from sim.deployment import SPEC_METHODS, PoolConfig, SpecConfig

MODES = ("colocated", "disaggregated")


@dataclass(frozen=True)
class SearchSpace:
    """Knob values searched (None in max_num_seqs = the engine default for the GPU)."""

    modes: tuple[str, ...] = MODES
    tps: tuple[int, ...] = (1, 2, 4, 8)
    pps: tuple[int, ...] = (1, 2, 4)
    max_num_seqs: tuple[int | None, ...] = (None, 256, 128)
    max_num_batched_tokens: tuple[int, ...] = (2048, 4096, 8192)  # colocated pools
    prefill_batched_tokens: tuple[int, ...] = (8192, 16384)  # prefill pools
    spec_ks: tuple[int, ...] = tuple(range(9))  # 0 = speculative decoding off
    spec_adaptive: bool = True
    gpu_memory_utilizations: tuple[float, ...] = (0.9,)
    force_pp: bool = False
    dps: tuple[int, ...] = (1, 2, 4, 8, 16)  # attention data-parallel ranks (MoE models only)

    def __post_init__(self):
        bad = [m for m in self.modes if m not in MODES]
        if bad or not self.modes:
            raise ServePlanError(f"modes {self.modes!r}; expected a subset of {', '.join(MODES)}")
        for name in ("tps", "pps", "max_num_batched_tokens", "prefill_batched_tokens", "dps"):
            vals = getattr(self, name)
            if not vals or any(not isinstance(v, int) or v < 1 for v in vals):
                raise ServePlanError(f"search space {name}={vals!r}; expected integers >= 1")
        if any(k < 0 or k > 16 for k in self.spec_ks):
            raise ServePlanError(f"spec_ks={self.spec_ks!r}; expected draft lengths in 0..16")


@dataclass(frozen=True)
class Constraints:
    """What the user allows."""

    precisions: tuple[str, ...] = ("bf16",)
    kv_dtypes: tuple[str, ...] = ("bf16", "fp8")
    min_kv_budget_tokens: int | None = None  # smallest per-request KV budget allowed
    spec_method: str = "none"
    draft_model: str | None = None
    spec_acceptance: float = 0.0  # per-token acceptance (looked up when not given)
    max_gpus_per_replica: int | None = None  # default: two nodes

    def __post_init__(self):
        for p in self.precisions:
            if p not in PRECISIONS:
                raise ServePlanError(f"precision {p!r}; expected one of {', '.join(PRECISIONS)}")
        for k in self.kv_dtypes:
            if k not in KV_DTYPES or k == "auto":
                raise ServePlanError(f"KV dtype {k!r}; expected bf16, fp8 or int4 (auto = bf16 and fp8)")
        if not self.precisions or not self.kv_dtypes:
            raise ServePlanError("at least one precision and one KV dtype must be allowed")
        if self.spec_method not in SPEC_METHODS:
            raise ServePlanError(f"spec method {self.spec_method!r}; expected one of {', '.join(SPEC_METHODS)}")
        if self.spec_method == "draft" and not self.draft_model:
            raise ServePlanError("spec method 'draft' needs a draft model (--draft-model)")
        b = self.min_kv_budget_tokens
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 16):
            raise ServePlanError(f"min KV budget {b!r} tokens; expected an integer >= 16")
        g = self.max_gpus_per_replica
        if g is not None and (isinstance(g, bool) or not isinstance(g, int) or g < 1):
            raise ServePlanError(f"max GPUs per replica {g!r}; expected an integer >= 1")


@dataclass
class Pruned:
    """Why candidates were dropped before screening (counts), and the smallest fit seen."""

    counts: dict[str, int] = field(default_factory=dict)
    memory_examples: list[str] = field(default_factory=list)  # distinct, at most 3
    largest_kv_tokens: int = 0  # the most KV any configuration pruned for memory held

    def add(self, reason: str, example: str = "", kv_tokens: int | None = None) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        if kv_tokens is not None:
            self.largest_kv_tokens = max(self.largest_kv_tokens, int(kv_tokens))
        if (reason == "memory" and example and len(self.memory_examples) < 3
                and example not in self.memory_examples):
            self.memory_examples.append(example)

    def merge(self, other: Pruned) -> None:
        """Add what `other` pruned after what this one did (as if added one after another)."""
        for reason, n in other.counts.items():
            self.counts[reason] = self.counts.get(reason, 0) + n
        self.largest_kv_tokens = max(self.largest_kv_tokens, other.largest_kv_tokens)
        for ex in other.memory_examples:
            if len(self.memory_examples) < 3 and ex not in self.memory_examples:
                self.memory_examples.append(ex)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Shape:
    """What fixes a replica's hardware: role, GPU, parallelism, precision, KV dtype."""

    role: str
    gpu: str
    tp: int
    pp: int
    precision: str
    kv_dtype: str
    ep: int = 1
    dp: int = 1

    @property
    def gpus(self) -> int:
        return self.tp * self.pp * self.dp


@dataclass(frozen=True)
class Knobs:
    """The engine knobs of a shape, each with its list of values to try."""

    max_num_batched_tokens: tuple[int, ...]
    max_num_seqs: tuple[int | None, ...]
    specs: tuple[SpecConfig, ...]
    kv_budgets: tuple[int | None, ...]
    gpu_memory_utilizations: tuple[float, ...]

    @property
    def size(self) -> int:
        return (len(self.max_num_batched_tokens) * len(self.max_num_seqs) * len(self.specs)
                * len(self.kv_budgets) * len(self.gpu_memory_utilizations))


def spec_options(cons: Constraints, space: SearchSpace) -> tuple[SpecConfig, ...]:
    """k = 0 (off), each k > 0, and the adaptive policy, for the user's method."""
    if cons.spec_method == "none":
        return (SpecConfig(),)
    opts = []
    for k in sorted(set(space.spec_ks)):
        if k == 0:
            opts.append(SpecConfig())
        else:
            opts.append(SpecConfig(cons.spec_method, cons.draft_model, k, cons.spec_acceptance))
    if space.spec_adaptive:
        opts.append(SpecConfig(cons.spec_method, cons.draft_model, 0, cons.spec_acceptance, True))
    return tuple(opts)


def _fits_one_node(model: ModelSpec, fleet: Fleet, cons: Constraints) -> dict[str, bool]:
    """Per GPU type: does some TP inside one node hold the weights (pp = 1)?"""
    out = {}
    for g in fleet.gpus:
        ok = False
        for tp in (1, 2, 4, 8, 16):
            if tp > g.spec.gpus_per_node:
                break
            try:
                cm = CostModel(model, g.spec, tp=tp, precision=cons.precisions[0])
            except ServePlanError:
                continue
            if memory_plan(cm).kv_capacity_tokens > 0:
                ok = True
                break
        out[g.name] = ok
    return out


def moe_layouts(model: ModelSpec, tp: int, pp: int, dps: tuple[int, ...], cap: int) -> list[tuple[int, int]]:
    """(ep, dp) pairs a replica of tp x pp GPUs may use: (1, 1) for a dense model; for an MoE
    model also EP over the TP group, and with pp = 1 DP attention over dp ranks with EP over
    all tp x dp GPUs, within `cap` GPUs and where ep divides the experts."""
    if not model.is_moe:
        return [(1, 1)]
    out = [(1, 1)]
    if tp > 1 and model.num_experts % tp == 0:
        out.append((tp, 1))
    if pp == 1:
        for dp in sorted(set(dps)):
            ep = tp * dp
            if dp > 1 and ep <= cap and model.num_experts % ep == 0:
                out.append((ep, dp))
    return out


def enumerate_shapes(model: ModelSpec, fleet: Fleet, space: SearchSpace, cons: Constraints,
                     pruned: Pruned) -> list[Shape]:
    """Every (role, GPU, tp, pp, precision, KV dtype) the rules allow (memory checked later)."""
    roles = []
    if "colocated" in space.modes:
        roles.append("colocated")
    if "disaggregated" in space.modes:
        roles += ["prefill", "decode"]
    one_node = _fits_one_node(model, fleet, cons)
    shapes = []
    for g in fleet.gpus:
        cap = min(g.count, cons.max_gpus_per_replica or 2 * g.spec.gpus_per_node)
        for tp in space.tps:
            try:
                check_parallelism(model, g.spec, tp, 1)
            except ServePlanError:
                pruned.add("parallelism")
                continue
            for pp in space.pps:
                if tp * pp > cap:
                    pruned.add("gpus")
                    continue
                if pp > 1 and one_node[g.name] and not space.force_pp:
                    pruned.add("pp_not_needed")
                    continue
                if pp > model.num_layers:
                    pruned.add("parallelism")
                    continue
                for ep, dp in moe_layouts(model, tp, pp, space.dps, cap):
                    for prec in cons.precisions:
                        for kv in cons.kv_dtypes:
                            for role in roles:
                                shapes.append(Shape(role, g.name, tp, pp, prec, kv, ep, dp))
    return shapes


def knobs_for(shape: Shape, space: SearchSpace, cons: Constraints) -> Knobs:
    budgets: tuple[int | None, ...] = (None,)
    if cons.min_kv_budget_tokens:
        budgets = (None, cons.min_kv_budget_tokens)
    specs = spec_options(cons, space) if shape.pp == 1 and shape.dp == 1 else (SpecConfig(),)
    if shape.role == "prefill":
        return Knobs(space.prefill_batched_tokens, (None,), (SpecConfig(),), (None,),
                     space.gpu_memory_utilizations)
    if shape.role == "decode":
        return Knobs((None,), space.max_num_seqs, specs, budgets, space.gpu_memory_utilizations)
    return Knobs(rank_token_budgets(space.max_num_batched_tokens, shape.dp), space.max_num_seqs,
                 specs, budgets, space.gpu_memory_utilizations)


MIN_RANK_TOKENS = 256  # the smallest per-rank token budget searched under attention DP


def rank_token_budgets(budgets: tuple[int, ...], dp: int) -> tuple[int, ...]:
    """Per-rank token budgets of a colocated replica with `dp` attention ranks: each of the
    space's budgets split over the ranks (at least MIN_RANK_TOKENS), so that a step's MoE
    layers see about as many tokens in all as one rank of a replica without DP. Each rank
    schedules its own chunk (vLLM's `--max-num-batched-tokens` is per DP engine; SGLang divides
    `--chunked-prefill-size` by `--dp` itself), and every MoE layer runs all ranks' tokens
    together, so a rank prefilling the whole budget makes every rank's decodes wait for
    dp x budget tokens of experts."""
    if dp <= 1:
        return budgets
    return tuple(sorted({max(MIN_RANK_TOKENS, b // dp) for b in budgets}))


def make_pool(shape: Shape, mbt: int | None, mns: int | None, spec: SpecConfig,
              budget: int | None, util: float, price: float | None = None) -> PoolConfig:
    """A resolved one-replica PoolConfig (chunk size = the token budget). vLLM refuses a token
    budget below `max_num_seqs`, so the sequence cap comes down to the budget where it is
    above it (only small per-rank budgets under attention DP reach this)."""
    pool = PoolConfig(
        role=shape.role, gpu=shape.gpu, tp=shape.tp, pp=shape.pp, ep=shape.ep, dp=shape.dp, replicas=1,
        precision=shape.precision, max_num_seqs=mns, max_num_batched_tokens=mbt,
        chunk_size=mbt, kv_dtype=shape.kv_dtype, gpu_memory_utilization=util,
        kv_budget_tokens=budget, gpu_price_per_hour_usd=price, spec=spec,
    ).resolved()
    if pool.max_num_seqs > pool.max_num_batched_tokens:
        pool = replace(pool, max_num_seqs=pool.max_num_batched_tokens)
    return pool


def all_pools(shape: Shape, knobs: Knobs, price: float | None = None) -> list[PoolConfig]:
    """The full grid of one shape's knobs (what the exhaustive search simulates), without the
    duplicates that unset knobs resolving to the engine default would make."""
    pools = (
        make_pool(shape, mbt, mns, spec, budget, util, price)
        for mbt in knobs.max_num_batched_tokens
        for mns in knobs.max_num_seqs
        for spec in knobs.specs
        for budget in knobs.kv_budgets
        for util in knobs.gpu_memory_utilizations
    )
    return list(dict.fromkeys(pools))


def kv_tokens_needed(longest_request_tokens: int, budget: int | None, model: ModelSpec) -> int:
    """KV tokens one replica must hold: the workload's longest request (capped by the budget)."""
    need = min(longest_request_tokens, model.max_position)
    return max(16, min(need, budget) if budget else need)



def smallest_fit(model: ModelSpec, gpu_specs, precisions: tuple[str, ...], kv_dtypes: tuple[str, ...],
                 need_tokens: int, tps: tuple[int, ...] = (1, 2, 4, 8),
                 pps: tuple[int, ...] = (1, 2, 4, 8, 16)) -> tuple[int, str, int, int, str] | None:
    """The fewest GPUs of any listed type (TP and PP among the space's values) that hold the
    model and `need_tokens` of KV: (gpus, gpu name, tp, pp, precision), ignoring how many the
    fleet has."""
    best = None
    for spec in gpu_specs:
        for prec in precisions:
            for kv in kv_dtypes:
                for pp in sorted(set(pps)):
                    for tp in sorted(set(tps)):
                        if best is not None and tp * pp >= best[0]:
                            continue
                        try:
                            cm = CostModel(model, spec, tp=tp, pp=pp, precision=prec, kv_dtype=kv)
                        except ServePlanError:
                            continue
                        if memory_plan(cm).kv_capacity_tokens >= need_tokens:
                            best = (tp * pp, spec.name, tp, pp, prec)
    return best


def largest_kv_capacity(model: ModelSpec, gpus, precisions: tuple[str, ...],
                        kv_dtypes: tuple[str, ...], tps: tuple[int, ...] = (1, 2, 4, 8),
                        pps: tuple[int, ...] = (1, 2, 4, 8, 16)) -> int:
    """The most KV tokens one replica holds, over `gpus` ((HardwareSpec, count) pairs: tp x pp
    at most the count), the TPs, PPs, precisions and KV dtypes listed (0 when none holds the
    weights)."""
    best = 0
    for spec, count in gpus:
        for prec in precisions:
            for kv in kv_dtypes:
                for pp in sorted(set(pps)):
                    for tp in sorted(set(tps)):
                        if tp * pp > count:
                            continue
                        try:
                            cm = CostModel(model, spec, tp=tp, pp=pp, precision=prec, kv_dtype=kv)
                        except ServePlanError:
                            continue
                        best = max(best, memory_plan(cm).kv_capacity_tokens)
    return best
