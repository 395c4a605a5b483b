"""Measure one iteration shape: per-operator rows in the native format, and the iteration.

For a shape the runner times, each on rotating inputs (one weight set per layer run):
- the GEMMs `qkv_proj`, `o_proj`, `mlp_up_proj`, `mlp_down_proj` (m = the iteration's tokens)
  and `lm_head` (m = rows needing logits);
- the elementwise ops `input_layernorm`, `rope`, `mlp_act`, `residual_add`, `embedding`
  (m tokens, k input and n output elements per token, as `costmodel.importers` defines);
- attention: `attn_prefill` for the prompt chunks (`batch_size` chunks of `prefill_len` over
  `context_len` cached tokens), `attn_decode` for plain decodes, and for a verify step an
  `attn_prefill` row too (k + 1 new tokens per sequence over its cache is exactly what that
  row describes; its `kernel` says `spec_verify_attention`);
- the whole iteration: `layers_run` layers timed together (one layer = their time / layers),
  and the head = the embedding and LM-head rows; `iteration_s` = head + full layer count x
  one measured layer.
Every row names the device that measured it (`gpu`), never the plan's GPU.

On a GPU each operator is timed twice (`reference` given): with the Triton kernels and with
the engine-class operators (`validate.reference.EngineOps`; an operator with no reference is
the same Triton kernel, timed once). `fit` picks which set becomes `rows` and the iteration
(`engine`: what the plan's engine runs; `triton`: ServePlan's kernels alone); `compare` keeps
both times per operator. Timing is inside CUDA graphs (`Timer`); the fitted set's iteration is
also timed eagerly, and the difference, times the model's layers, is the host launch time of
an iteration run without graphs (`host_s`): not a kernel cost, and not in the profile.
On a CPU one set, the torch operators, is timed, as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial

import torch

from validate.model_runner import ModelRunner
from validate.shapes import IterationShape
from validate.timing import Timer

SOURCE = "serveplan validate"
# CPU: a GEMM's weights rotate over at least this many bytes (extra copies when the layers run
# hold less), so a repeat cannot find them in the last-level cache. CUDA needs none: the layers'
# weights rotate through more than the L2 holds.
ROTATE_BYTES = 128 * 1024**2
MAX_COPIES = 8
SHARED_OPS = ("residual_add", "embedding")  # torch in both sets: timed once


@dataclass
class ShapeMeasurement:
    shape: IterationShape
    rows: list[dict] = field(default_factory=list)  # the fitted set's rows
    layer_s: float = 0.0  # the fitted set's layer, in a CUDA graph on a GPU
    head_s: float = 0.0
    layers_run: int = 1
    full_layers: int = 1
    compare: list[dict] = field(default_factory=list)  # per op: triton_s, reference_s
    other_layer_s: float = math.nan  # the other set's layer (Triton when fitting the engine)
    other_head_s: float = math.nan
    eager_layer_s: float = math.nan  # the fitted set's layer timed eagerly (GPU)
    kernels: str = "torch"  # engine | triton | torch (the CPU)

    @property
    def iteration_s(self) -> float:
        """One iteration through every layer of the model (pipeline stages back to back)."""
        return self.head_s + self.full_layers * self.layer_s

    @property
    def other_iteration_s(self) -> float:
        return self.other_head_s + self.full_layers * self.other_layer_s

    @property
    def host_s(self) -> float:
        """Host launch time of an iteration run eagerly: eager minus graph, all layers."""
        return self.full_layers * (self.eager_layer_s - self.layer_s)


def combine_passes(passes: list[ShapeMeasurement]) -> ShapeMeasurement:
    """One measurement from several passes over the same shape taken at different times: each
    quantity's minimum over the passes. Other load on the machine only ever slows a pass down,
    so the least disturbed pass is the best estimate (within a pass each is a median)."""
    first = passes[0]
    rows = [{**r, "measured_s": min(p.rows[i]["measured_s"] for p in passes)}
            for i, r in enumerate(first.rows)]
    comp = [{**c, "triton_s": min(p.compare[i]["triton_s"] for p in passes),
             "reference_s": min(p.compare[i]["reference_s"] for p in passes)}
            for i, c in enumerate(first.compare)]
    for c in comp:
        c["ratio"] = c["reference_s"] / c["triton_s"]
    return ShapeMeasurement(first.shape, rows, min(p.layer_s for p in passes),
                            min(p.head_s for p in passes), first.layers_run, first.full_layers,
                            comp, min(p.other_layer_s for p in passes),
                            min(p.other_head_s for p in passes),
                            min(p.eager_layer_s for p in passes), first.kernels)


def _rotate(fn, *pools: list) -> list:
    """Calls fn(a, b, ...) over the pools in turn: max(len(pool)) calls, each pool cycled."""
    n = max(len(p) for p in pools)
    return [partial(fn, *(p[i % len(p)] for p in pools)) for i in range(n)]


def _weights(runner: ModelRunner, name: str) -> list[torch.Tensor]:
    ws = [getattr(lw, name) for lw in runner.layers]
    if runner.device == "cuda":
        return ws
    size = ws[0].numel() * ws[0].element_size()
    extra = min(MAX_COPIES - len(ws), -(-ROTATE_BYTES // size) - len(ws))
    return ws + [ws[i % len(ws)].clone() for i in range(max(extra, 0))]


_PROJECTIONS = ("qkv_proj", "o_proj", "mlp_up_proj", "mlp_down_proj")


def _op_specs(runner: ModelRunner, st, shape: IterationShape) -> list[tuple]:
    """(op, Triton kernel, calls(ops) -> rotating callables, row columns, kernel_of keywords)
    for every measured operator of the shape."""
    d, layers = runner.dims, runner.layers
    T, n_log = shape.num_tokens, shape.num_logits
    x = [runner.hidden_input(st) for _ in range(2)]
    specs = []
    for op, wname, k_in, n_out in (("qkv_proj", "qkv", d.hidden, d.qkv_out),
                                   ("o_proj", "o", d.q_dim, d.hidden),
                                   ("mlp_up_proj", "up", d.hidden, d.up_out),
                                   ("mlp_down_proj", "down", d.inter, d.hidden)):
        a = [runner._randn(T, k_in) for _ in range(2)]
        w = _weights(runner, wname)
        specs.append((op, "matmul", lambda ops, a=a, w=w: _rotate(ops.gemm, a, w),
                      {"m": T, "n": n_out, "k": k_in}, {}))
    h = [runner._randn(n_log, d.hidden) for _ in range(2)]
    specs.append(("lm_head", "matmul", lambda ops: _rotate(ops.gemm, h, [runner.lm_head]),
                  {"m": n_log, "n": d.vocab, "k": d.hidden, "num_tokens": n_log}, {}))
    specs.append(("input_layernorm", "rms_norm",
                  lambda ops: _rotate(ops.rms_norm, x, [lw.ln1 for lw in layers]),
                  {"m": T, "k": d.hidden, "n": d.hidden}, {}))
    qs = [runner._randn(T, d.q_heads, d.head_dim) for _ in range(2)]
    ks = [runner._randn(T, d.kv_heads, d.head_dim) for _ in range(2)]
    heads = (d.q_heads + d.kv_heads) * d.head_dim
    specs.append(("rope", "apply_rope", lambda ops: _rotate(ops.rope, qs, ks, [st.positions]),
                  {"m": T, "k": heads, "n": heads}, {}))
    up = [runner._randn(T, d.up_out) for _ in range(2)]
    specs.append(("mlp_act", "silu_and_mul" if d.gated else "gelu",
                  lambda ops: _rotate(ops.act, up, [d.gated]), {"m": T, "k": d.up_out, "n": d.inter}, {}))
    specs.append(("residual_add", "add", lambda ops: _rotate(torch.add, x, x[::-1]),
                  {"m": T, "k": 2 * d.hidden, "n": d.hidden}, {}))
    specs.append(("embedding", "embedding", lambda ops: [partial(runner.embed_tokens, st)],
                  {"m": T, "k": d.hidden, "n": d.hidden}, {}))
    heads_cols = {"num_heads": d.q_heads, "num_kv_heads": d.kv_heads, "head_dim": d.head_dim}
    n_layers = runner.num_layers
    if st.layout is not None and len(set(shape.prefill)) == 1:  # rows describe equal chunks
        q = runner._randn(st.n_prefill_tokens, d.q_heads, d.head_dim)
        c, p = shape.prefill[0]
        specs.append(("attn_prefill", "flash_attn_prefill",
                      lambda ops: [partial(ops.prefill_attention, q, *st.prefill_kv[i], st.layout)
                                   for i in range(n_layers)],
                      {"batch_size": len(shape.prefill), "prefill_len": c, "context_len": p,
                       **heads_cols}, {"prefix": any(pp for _, pp in shape.prefill)}))
    if st.decode_kv:
        B, L = shape.decode_batch, shape.query_tokens
        qd = runner._randn(B, L, d.q_heads, d.head_dim)
        calls = lambda ops: [partial(ops.decode_attention, qd, st.decode_kv[i]) for i in range(n_layers)]  # noqa: E731
        if L == 1:
            specs.append(("attn_decode", "paged_decode_attention", calls,
                          {"batch_size": B, "context_len": shape.attended_context, **heads_cols}, {}))
        else:
            specs.append(("attn_prefill", "spec_verify_attention", calls,
                          {"batch_size": B, "prefill_len": L, "context_len": shape.attended_context,
                           **heads_cols}, {"verify": True}))
    return specs


def measure_ops(runner: ModelRunner, st, shape: IterationShape, timer: Timer, res: ShapeMeasurement,
                *, device_name: str, model_name: str, precision: str, kv_dtype: str = "bf16",
                reference=None, fit: str = "engine", skip: tuple[str, ...] = ()) -> None:
    """Time each operator row of `shape` (but those in `skip`) into `res.rows` (and
    `res.compare` with a `reference`)."""
    base = runner.ops

    def row(op: str, kernel: str, t: float, cols: dict) -> dict:
        return {"source": SOURCE, "row_id": f"{shape.name}:{op}", "gpu": device_name,
                "model": model_name, "op": op, "kernel": kernel,
                "precision": precision if op in _PROJECTIONS else "bf16",
                "kv_dtype": kv_dtype if op.startswith("attn_") else "bf16", "tp": shape.tp,
                "pp": shape.pp, "num_tokens": shape.num_tokens, **cols, "measured_s": t}

    for op, kname, calls, cols, kw in _op_specs(runner, st, shape):
        if op in skip:
            continue
        t_base = timer.median_s(calls(base))
        base_kernel = f"{base.name}:{kname}" if op not in SHARED_OPS else f"torch:{kname}"
        if reference is None:
            res.rows.append(row(op, base_kernel, t_base, cols))
            continue
        ref_kernel = base_kernel if op in SHARED_OPS else reference.kernel_of(op, **kw)
        has_ref = not ref_kernel.startswith("triton:")
        t_ref = t_base
        if has_ref and op not in SHARED_OPS:
            t_ref = timer.median_s(calls(reference))
            ref_kernel = reference.kernel_of(op, **kw)  # a reference that failed fell back
        res.compare.append({"shape": shape.name, "op": op, "triton_kernel": base_kernel,
                            "reference_kernel": ref_kernel if has_ref else "(none: Triton)",
                            "triton_s": t_base, "reference_s": t_ref, "ratio": t_ref / t_base})
        fitted = (ref_kernel, t_ref) if fit == "engine" else (base_kernel, t_base)
        res.rows.append(row(op, *fitted, cols))


def measure_shape(runner: ModelRunner, shape: IterationShape, timer: Timer, *, device_name: str,
                  model_name: str, full_layers: int, precision: str, kv_dtype: str = "bf16",
                  reference=None, fit: str = "engine") -> ShapeMeasurement:
    """Time the operators and the iteration of `shape` on `runner` (see module docstring);
    `reference` (an EngineOps) is timed beside `runner.ops` when given."""
    st = runner.state(shape)
    base = runner.ops
    kinds = "torch" if reference is None else fit
    res = ShapeMeasurement(shape, layers_run=runner.num_layers, full_layers=full_layers, kernels=kinds)
    measure_ops(runner, st, shape, timer, res, device_name=device_name, model_name=model_name,
                precision=precision, kv_dtype=kv_dtype, reference=reference, fit=fit)
    # the iteration: layers (graph; eagerly too on a GPU), then the head apart
    x = [runner.hidden_input(st) for _ in range(2)]

    def layer_s(ops, eager: bool = False) -> float:
        runner.ops = ops
        try:
            calls = _rotate(runner.layers_forward, x, [st])
            return (timer.eager_s(calls) if eager else timer.median_s(calls)) / runner.num_layers
        finally:
            runner.ops = base

    fitted_ops = reference if (reference is not None and fit == "engine") else base
    res.layer_s = layer_s(fitted_ops)
    if reference is not None:
        res.other_layer_s = layer_s(base if fitted_ops is reference else reference)
        res.eager_layer_s = layer_s(fitted_ops, eager=True)
    # the head (embedding, final norm on the logit rows, LM head) is its measured op rows: the
    # norm over at most a few hundred rows is under 0.1% of the LM head, and timing the LM
    # head twice would cost a pass a quarter of its time
    res.head_s = sum(r["measured_s"] for r in res.rows if r["op"] in ("embedding", "lm_head"))
    if reference is not None:
        other = "triton_s" if fit == "engine" else "reference_s"
        res.other_head_s = sum(c[other] for c in res.compare if c["op"] in ("embedding", "lm_head"))
    if runner.device == "cuda":
        torch.cuda.empty_cache()
    return res
