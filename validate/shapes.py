"""The iteration shapes a deployment will run: prefill chunks, decode batches, verify steps.

Each pool of a deployment (colocated, or the prefill and decode pools of a disaggregated one)
runs its own kind of iteration on its own GPUs:
- prefill (colocated and prefill pools): one median prompt, median prompts packed up to
  `max_num_batched_tokens`, and the last chunk of a long (p90) prompt over the prefix its
  earlier chunks cached (chunked prefill, chunks of `chunk_size`);
- decode (colocated and decode pools): batches of sequences at the decode-weighted median and
  p90 context (a request of input I and output O decodes at contexts I .. I + O - 1, so long
  outputs weigh more); the batch sizes are the simulator's p50 and p90 running sequences when
  an operating point is given (`operating_point`), else a ladder 1, 4, 16, ... up to
  `max_num_seqs`, capped by the pool's KV capacity;
- verify (when speculative decoding is on): the same batches with k + 1 query tokens each;
- mixed (colocated with chunked prefill): a decode batch sharing its token budget with a
  prompt chunk, the iteration Sarathi-Serve's scheduler runs under load.
Shapes are per GPU of the pool: TP divides heads and FFN width (`per_gpu_dims`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from costmodel.batch import Batch
from costmodel.errors import ServePlanError
from costmodel.model_spec import kv_dtype_of
from costmodel.specs import ModelSpec, load_model
from sim.deployment import Deployment, PoolConfig
from sim.workload import Workload, generate_requests

KINDS = ("prefill", "decode", "verify", "mixed")
LENGTH_SAMPLE = 4000  # requests drawn to estimate length quantiles
ADAPTIVE_K = 4  # draft length assumed for an adaptive speculative policy
EMBED_ROWS = 4096  # rows of the runner's embedding table (a lookup reads T rows whatever its size)


@dataclass(frozen=True)
class GpuDims:
    """What one GPU of a TP group holds of each layer (TP splits heads, FFN and vocabulary)."""

    hidden: int
    q_heads: int
    kv_heads: int  # replicated when tp > KV heads
    head_dim: int
    inter: int  # FFN width on this GPU
    vocab: int  # LM-head columns on this GPU
    gated: bool

    @property
    def qkv_out(self) -> int:
        return (self.q_heads + 2 * self.kv_heads) * self.head_dim

    @property
    def q_dim(self) -> int:
        return self.q_heads * self.head_dim

    @property
    def up_out(self) -> int:
        return (2 if self.gated else 1) * self.inter

    def layer_weight_elems(self) -> int:
        h = self.hidden
        return h * self.qkv_out + self.q_dim * h + h * self.up_out + self.inter * h + 2 * h


def per_gpu_dims(model: ModelSpec, tp: int) -> GpuDims:
    if model.is_moe:
        raise ServePlanError(f"{model.name} is a mixture of experts: its layers are measured by "
                             "validate.moe_measure, not as dense layers")
    if model.num_heads % tp:
        raise ServePlanError(f"tp={tp} does not divide {model.name}'s {model.num_heads} heads")
    return GpuDims(hidden=model.hidden_size, q_heads=model.num_heads // tp,
                   kv_heads=max(1, model.num_kv_heads // tp), head_dim=model.head_dim,
                   inter=model.intermediate_size // tp, vocab=-(-model.vocab_size // tp),
                   gated=model.gated_mlp)


@dataclass(frozen=True)
class IterationShape:
    """One engine iteration on one GPU of a pool. Decode sequences all sit at `decode_context`
    cached tokens and add `query_tokens` each (1, or k + 1 for a verify step)."""

    name: str
    kind: str  # prefill | decode | verify | mixed
    role: str  # the pool: colocated | prefill | decode
    model: str  # as the deployment names it: a preset or a config.json path (loadable)
    gpu: str  # the GPU the plan targets (not necessarily the device that measures)
    tp: int
    pp: int = 1
    ep: int = 1  # MoE: expert-parallel size of the pool
    dp: int = 1  # MoE: attention data-parallel ranks (each runs this shape)
    precision: str = "bf16"
    kv_dtype: str = "bf16"
    prefill: tuple[tuple[int, int], ...] = ()  # (chunk tokens, cached prefix tokens)
    decode_batch: int = 0
    decode_context: int = 0
    query_tokens: int = 1
    kv_budget: int | None = None  # decode attention reads at most this many cached tokens
    note: str = ""  # how the shape was scaled down to fit the device, if it was

    @property
    def num_tokens(self) -> int:
        return sum(c for c, _ in self.prefill) + self.decode_batch * self.query_tokens

    @property
    def num_seqs(self) -> int:
        return len(self.prefill) + self.decode_batch

    @property
    def num_logits(self) -> int:
        """Rows the LM head computes: the last token of each prompt, every query token of
        each decoding sequence (a verify step scores all k + 1)."""
        return len(self.prefill) + self.decode_batch * self.query_tokens

    @property
    def attended_context(self) -> int:
        """Cached tokens each decode attends to (the KV budget caps it)."""
        c = self.decode_context
        return c if self.kv_budget is None else min(c, self.kv_budget)

    def batch(self) -> Batch:
        """The cost model's view (decode contexts as the attention reads them)."""
        return Batch(prefill=self.prefill, decode=(self.attended_context,) * self.decode_batch,
                     decode_query_tokens=self.query_tokens)


# --- lengths and operating point --------------------------------------------------------------
@dataclass(frozen=True)
class LengthStats:
    input_p50: int
    input_p90: int
    context_p50: int  # decode-weighted context of a decoding sequence
    context_p90: int


def length_stats(workload: Workload, rng: np.random.Generator) -> LengthStats:
    """Prompt quantiles, and context quantiles weighted by decode steps: a request of output O
    spends O steps decoding, at contexts I, I + 1, ..., I + O - 1."""
    arr = generate_requests(workload, LENGTH_SAMPLE, rng)
    inp, out = arr.input_len.astype(float), np.maximum(arr.output_len, 1).astype(float)
    pick = rng.choice(inp.size, size=LENGTH_SAMPLE, p=out / out.sum())
    ctx = inp[pick] + np.floor(rng.random(LENGTH_SAMPLE) * out[pick])
    q = lambda a, p: max(1, int(round(float(np.quantile(a, p)))))  # noqa: E731
    return LengthStats(q(inp, 0.5), q(inp, 0.9), q(ctx, 0.5), q(ctx, 0.9))


def operating_point(deployment: Deployment, workload: Workload, *, num_requests: int = 400,
                    seed: int = 0, calibration=None) -> dict[str, tuple[int, int]]:
    """Per pool role: (p50, p90) of running sequences while the replica is busy, from a
    simulation of `workload` (which must carry a rate or a concurrency)."""
    from sim.engine import simulate

    res = simulate(deployment, workload, num_requests=num_requests, seed=seed,
                   calibration=calibration, keep_requests=True)
    out: dict[str, tuple[int, int]] = {}
    for role in {p.role for p in deployment.pools}:
        running = np.concatenate([np.asarray(r["running"], float) for r in res.timeline["replicas"]
                                  if r["role"] == role] or [np.zeros(0)])
        running = running[running > 0]
        if running.size:
            out[role] = (max(1, int(np.quantile(running, 0.5))), max(1, int(np.quantile(running, 0.9))))
    return out


# --- derivation -------------------------------------------------------------------------------
def _kv_capacity_tokens(pool: PoolConfig, model: ModelSpec) -> int:
    from costmodel.memory import memory_plan
    from costmodel.model import CostModel

    cm = CostModel(model, pool.gpu, tp=pool.tp, pp=pool.pp, precision=pool.precision,
                   kv_dtype=pool.kv_dtype, ep=pool.ep, dp=pool.dp)
    mem = memory_plan(cm, pool.gpu_memory_utilization, pool.max_num_batched_tokens,
                      pool.max_num_seqs, pool.block_size)
    return mem.kv_capacity_tokens


def _ladder(max_seqs: int) -> list[int]:
    sizes, b = [], 1
    while b < max_seqs:
        sizes.append(b)
        b *= 4
    return sizes + [max_seqs]


def _pool_shapes(pool: PoolConfig, model: ModelSpec, model_ref: str, stats: LengthStats,
                 running: tuple[int, int] | None) -> list[IterationShape]:
    kv = kv_dtype_of(pool.kv_dtype)
    base = dict(role=pool.role, model=model_ref, gpu=pool.gpu, tp=pool.tp, pp=pool.pp,
                ep=pool.ep, dp=pool.dp, precision=pool.precision, kv_dtype=kv)
    C = min(pool.chunk_size, pool.max_num_batched_tokens)
    B, S = pool.max_num_batched_tokens, pool.max_num_seqs
    out: list[IterationShape] = []
    tag = f"{pool.role}/"
    if pool.role in ("colocated", "prefill"):
        i50, i90 = stats.input_p50, stats.input_p90
        out.append(IterationShape(f"{tag}prefill 1x{min(i50, C)}", "prefill",
                                  prefill=((min(i50, C), 0),), **base))
        n = min(S, B // max(i50, 1))
        if n > 1 and i50 <= C:
            out.append(IterationShape(f"{tag}prefill {n}x{i50}", "prefill",
                                      prefill=((i50, 0),) * n, **base))
        if i90 > C:
            prefix = C * ((i90 - 1) // C)
            last = i90 - prefix
            out.append(IterationShape(f"{tag}prefill chunk {last}+{prefix}", "prefill",
                                      prefill=((last, prefix),), **base))
        elif i90 != i50:
            out.append(IterationShape(f"{tag}prefill 1x{i90}", "prefill", prefill=((i90, 0),), **base))
    if pool.role in ("colocated", "decode"):
        cap = max(1, _kv_capacity_tokens(pool, model))
        sizes = sorted(set(running)) if running else _ladder(S)
        budget = pool.kv_budget_tokens
        k = 0
        if pool.spec.enabled:
            k = pool.spec.num_speculative_tokens or ADAPTIVE_K
        for ctx in sorted({stats.context_p50, stats.context_p90}):
            kv_tokens = min(ctx, budget) if budget else ctx
            for b in sizes:
                b = max(1, min(b, S, cap // (kv_tokens + k + 1)))
                name = f"{tag}decode {b}x{ctx}"
                if budget:
                    name += f" (kv budget {budget})"
                out.append(IterationShape(name, "decode", decode_batch=b, decode_context=ctx,
                                          kv_budget=budget, **base))
                if k:
                    out.append(IterationShape(f"{tag}verify {b}x{ctx} k={k}", "verify",
                                              decode_batch=b, decode_context=ctx,
                                              query_tokens=k + 1, kv_budget=budget, **base))
        if pool.role == "colocated" and pool.enable_chunked_prefill:
            b = max(1, min(running[0] if running else min(S, 32), S))
            b = max(1, min(b, cap // (stats.context_p50 + 1)))
            chunk = min(C, max(B - b, 0), stats.input_p50)
            if chunk > 0:
                out.append(IterationShape(f"{tag}mixed {b}x{stats.context_p50} + {chunk}", "mixed",
                                          prefill=((chunk, 0),), decode_batch=b,
                                          decode_context=stats.context_p50, kv_budget=budget,
                                          **base))
    return _dedupe(out)


def _dedupe(shapes: Sequence[IterationShape]) -> list[IterationShape]:
    seen, out = set(), []
    for s in shapes:
        key = (s.role, s.prefill, s.decode_batch, s.decode_context, s.query_tokens)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def select(shapes: Sequence[IterationShape], max_shapes: int | None) -> list[IterationShape]:
    """At most `max_shapes`, taken round-robin over (role, kind) so every kind stays in."""
    if max_shapes is None or len(shapes) <= max_shapes:
        return list(shapes)
    if max_shapes < 1:
        raise ServePlanError(f"max_shapes={max_shapes}; expected an integer >= 1")
    groups: dict[tuple[str, str], list[IterationShape]] = {}
    for s in shapes:
        groups.setdefault((s.role, s.kind), []).append(s)
    queues = [list(g) for g in groups.values()]
    out: list[IterationShape] = []
    while len(out) < max_shapes:
        for q in queues:
            if q and len(out) < max_shapes:
                # alternate ends so a cut list keeps both small and large shapes
                out.append(q.pop(0) if len(q) % 2 else q.pop())
    order = {id(s): i for i, s in enumerate(shapes)}
    return sorted(out, key=lambda s: order[id(s)])


def derive_shapes(deployment: Deployment, workload: Workload, *, rng: np.random.Generator,
                  running: dict[str, tuple[int, int]] | None = None,
                  max_shapes: int | None = None) -> list[IterationShape]:
    """The iteration shapes of every pool of `deployment` under `workload`'s lengths.

    running: per role, (p50, p90) running sequences (`operating_point`); None = a ladder."""
    dep = deployment.resolved()
    model = load_model(dep.model)
    stats = length_stats(workload, rng)
    shapes: list[IterationShape] = []
    for pool in dep.pools:
        shapes += _pool_shapes(pool, model, dep.model, stats, (running or {}).get(pool.role))
    return select(shapes, max_shapes)
