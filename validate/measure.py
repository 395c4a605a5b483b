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
  one layer.
Every row names the device that measured it (`gpu`), never the plan's GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import torch

from validate.model_runner import ModelRunner
from validate.shapes import IterationShape
from validate.timing import Timer

SOURCE = "serveplan validate"
# CPU: a GEMM's weights rotate over at least this many bytes (extra copies when the layers run
# hold less), so a repeat cannot find them in the last-level cache. CUDA needs none: do_bench
# flushes L2 before every run.
ROTATE_BYTES = 128 * 1024**2
MAX_COPIES = 8


@dataclass
class ShapeMeasurement:
    shape: IterationShape
    rows: list[dict] = field(default_factory=list)
    layer_s: float = 0.0
    head_s: float = 0.0
    layers_run: int = 1
    full_layers: int = 1

    @property
    def iteration_s(self) -> float:
        """One iteration through every layer of the model (pipeline stages back to back)."""
        return self.head_s + self.full_layers * self.layer_s


def combine_passes(passes: list[ShapeMeasurement]) -> ShapeMeasurement:
    """One measurement from several passes over the same shape taken at different times: each
    quantity's minimum over the passes. Other load on the machine only ever slows a pass down,
    so the least disturbed pass is the best estimate (within a pass each is a median)."""
    first = passes[0]
    rows = []
    for i, r in enumerate(first.rows):
        rows.append({**r, "measured_s": min(p.rows[i]["measured_s"] for p in passes)})
    return ShapeMeasurement(first.shape, rows, min(p.layer_s for p in passes),
                            min(p.head_s for p in passes), first.layers_run, first.full_layers)


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


def measure_shape(runner: ModelRunner, shape: IterationShape, timer: Timer, *, device_name: str,
                  model_name: str, full_layers: int, precision: str,
                  kv_dtype: str = "bf16") -> ShapeMeasurement:
    """Time the operators and the iteration of `shape` on `runner` (see module docstring)."""
    st = runner.state(shape)
    ops, d, layers = runner.ops, runner.dims, runner.layers
    kern = ops.name
    T, n_log = shape.num_tokens, shape.num_logits
    res = ShapeMeasurement(shape, layers_run=runner.num_layers, full_layers=full_layers)

    def row(op: str, kernel: str, t: float, **cols) -> None:
        res.rows.append({"source": SOURCE, "row_id": f"{shape.name}:{op}", "gpu": device_name,
                         "model": model_name, "op": op, "kernel": f"{kern}:{kernel}",
                         "precision": precision if op in _PROJECTIONS else "bf16",
                         "kv_dtype": kv_dtype if op.startswith("attn_") else "bf16", "tp": shape.tp, "pp": shape.pp, "num_tokens": T,
                         **cols, "measured_s": t})

    x = [runner.hidden_input(st) for _ in range(2)]
    time_ = timer.median_s
    # GEMMs C[m, n] = A[m, k] @ W[k, n]
    for op, wname, k_in, n_out in (("qkv_proj", "qkv", d.hidden, d.qkv_out),
                                   ("o_proj", "o", d.q_dim, d.hidden),
                                   ("mlp_up_proj", "up", d.hidden, d.up_out),
                                   ("mlp_down_proj", "down", d.inter, d.hidden)):
        a = [runner._randn(T, k_in) for _ in range(2)]
        t = time_(_rotate(ops.gemm, a, _weights(runner, wname)))
        row(op, "matmul", t, m=T, n=n_out, k=k_in)
    h = [runner._randn(n_log, d.hidden) for _ in range(2)]
    row("lm_head", "matmul", time_(_rotate(ops.gemm, h, [runner.lm_head])),
        m=n_log, n=d.vocab, k=d.hidden, num_tokens=n_log)
    # elementwise: m tokens, k input and n output elements per token
    row("input_layernorm", "rms_norm", time_(_rotate(ops.rms_norm, x, [lw.ln1 for lw in layers])),
        m=T, k=d.hidden, n=d.hidden)
    qs = [runner._randn(T, d.q_heads, d.head_dim) for _ in range(2)]
    ks = [runner._randn(T, d.kv_heads, d.head_dim) for _ in range(2)]
    heads = (d.q_heads + d.kv_heads) * d.head_dim
    row("rope", "apply_rope", time_(_rotate(ops.rope, qs, ks, [st.positions])), m=T, k=heads, n=heads)
    up = [runner._randn(T, d.up_out) for _ in range(2)]
    row("mlp_act", "silu_and_mul" if d.gated else "gelu",
        time_(_rotate(ops.act, up, [d.gated])), m=T, k=d.up_out, n=d.inter)
    row("residual_add", "add", time_(_rotate(torch.add, x, x[::-1])), m=T, k=2 * d.hidden, n=d.hidden)
    row("embedding", "embedding", time_([partial(runner.embed_tokens, st)]), m=T, k=d.hidden, n=d.hidden)
    _attention_rows(runner, st, shape, timer, row)
    # the iteration: layers, then the head apart
    res.layer_s = time_(_rotate(runner.layers_forward, x, [st])) / runner.num_layers
    # the head (embedding, final norm on the logit rows, LM head) is its measured op rows: the
    # norm over at most a few hundred rows is under 0.1% of the LM head, and timing the LM
    # head twice would cost a pass a quarter of its time
    res.head_s = sum(r["measured_s"] for r in res.rows if r["op"] in ("embedding", "lm_head"))
    del st, x
    if runner.device == "cuda":
        torch.cuda.empty_cache()
    return res


_PROJECTIONS = ("qkv_proj", "o_proj", "mlp_up_proj", "mlp_down_proj")


def _attention_rows(runner: ModelRunner, st, shape: IterationShape, timer: Timer, row) -> None:
    ops, d, n_layers = runner.ops, runner.dims, runner.num_layers
    heads = {"num_heads": d.q_heads, "num_kv_heads": d.kv_heads, "head_dim": d.head_dim}
    if st.layout is not None and len(set(shape.prefill)) == 1:  # rows describe equal chunks
        q = runner._randn(st.n_prefill_tokens, d.q_heads, d.head_dim)
        calls = [partial(ops.prefill_attention, q, *st.prefill_kv[i], st.layout)
                 for i in range(n_layers)]
        c, p = shape.prefill[0]
        row("attn_prefill", "flash_attn_prefill", timer.median_s(calls),
            batch_size=len(shape.prefill), prefill_len=c, context_len=p, **heads)
    if st.decode_kv:
        B, L = shape.decode_batch, shape.query_tokens
        q = runner._randn(B, L, d.q_heads, d.head_dim)
        t = timer.median_s([partial(ops.decode_attention, q, st.decode_kv[i]) for i in range(n_layers)])
        if L == 1:
            row("attn_decode", "paged_decode_attention", t, batch_size=B,
                context_len=shape.attended_context, **heads)
        else:
            row("attn_prefill", "spec_verify_attention", t, batch_size=B, prefill_len=L,
                context_len=shape.attended_context, **heads)
