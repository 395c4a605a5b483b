"""Measure a mixture-of-experts plan: its MoE layers, shared experts and (MLA models) its MLA
attention modules, at the plan's iteration shapes, as rows `costmodel.fit` consumes.

Per iteration shape, on one GPU of the pool (tp x dp GPUs per replica, experts over `ep`):
- `moe`: one fused-MoE layer. The tokens entering it are the shape's tokens on every DP rank
  (T x dp), routed top-k over all E experts with AIConfigurator's balanced pattern
  (`moe_reference.balanced_topk`, the tables' and the cost model's `routing="balanced"`); the
  GPU holds experts 0 .. E/ep - 1, each `expert_ffn / moe_tp` wide (moe_tp = tp x dp / ep), and
  computes the rows routed to them, as the busiest rank of a balanced layer does. Columns as
  the AIConfigurator importer writes them (`num_tokens`, `hidden`, `inter` of the whole
  expert, `topk`, `num_experts`, `moe_tp`, `moe_ep`, `moe_gated`, `routing`);
- `mlp_up_proj` / `mlp_down_proj`: the shared experts' GEMMs (T x hidden -> 2 x width / tp and
  back), when the model has shared experts;
- for models with ordinary (GQA) attention (Qwen3-MoE, Mixtral, gpt-oss): the attention side
  of the layer as the dense runner times it (`measure.measure_ops`: qkv / o projections, norm,
  RoPE, prefill / decode attention, residual, embedding, LM head), its MLP rows left out;
- `mla_prefill` (prompts with no cached prefix: `batch_size` prompts of `prefill_len`) and
  `mla_decode` (`batch_size` sequences over `context_len` cached tokens, `prefill_len` new
  tokens each: 1, or k + 1 in a verify step): the MLA module of `validate.mla_reference`, in
  torch on every device (no Triton MLA kernel), prefill chunks up to 128 tokens through the
  absorbed path as vLLM runs them. Their `kernel` is "" so that the cost model picks the same
  path by the chunk length (`costmodel.measured`); the report names what ran.

What runs (`operators()`): the CPU times torch (the Triton kernel runs once, interpreted, in
the kernel check); a GPU times the Triton fused MoE and the engine-class reference (vLLM's
`fused_experts` when it imports, checked against torch on its first call; otherwise there is no
reference and the Triton kernel stands for the engine), shared-expert GEMMs as
`validate.reference` times GEMMs, and the torch MLA module in both sets. No iteration is timed
for an MoE model: its shapes' iteration columns stay empty (NaN) and the report says so.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from functools import partial

import torch

from costmodel.errors import ServePlanError
from validate.measure import SOURCE, ShapeMeasurement, combine_passes
from validate.shapes import IterationShape

ROTATIONS = 2  # weight sets the timed calls rotate over
MLP_OPS = ("mlp_up_proj", "mlp_down_proj", "mlp_act")  # a dense runner's MLP: the moe row instead
CHECK_TOL = {"float32": 1e-3, "bfloat16": 5e-2}
MLA_KERNEL = "torch:mla (absorbed for chunks up to 128 tokens and decodes, up-projected prefill)"


@dataclass(frozen=True)
class MoEDims:
    """One GPU's share of an MoE layer."""

    hidden: int
    num_experts: int  # in the model
    local_experts: int  # on this GPU: num_experts / ep
    topk: int
    expert_ffn: int  # one expert's FFN width in the model
    moe_tp: int
    ep: int
    gated: bool
    shared: int  # the shared experts' total width on this GPU (after TP), 0 = none

    @property
    def inter(self) -> int:
        return self.expert_ffn // self.moe_tp

    def expert_bytes(self, elem_bytes: float = 2.0) -> float:
        return self.local_experts * ((2 if self.gated else 1) + 1) * self.hidden * self.inter * elem_bytes


def moe_dims(model, tp: int, ep: int = 1, dp: int = 1) -> MoEDims:
    if model.num_experts % ep:
        raise ServePlanError(f"ep={ep} does not divide {model.name}'s {model.num_experts} experts; "
                             "expected a divisor of the expert count")
    if (tp * dp) % ep:
        raise ServePlanError(f"ep={ep} does not divide the tp x dp = {tp * dp} GPUs of the replica")
    moe_tp = tp * dp // ep
    if model.expert_ffn % moe_tp:
        raise ServePlanError(f"MoE tensor-parallel size {moe_tp} (tp x dp / ep) does not divide "
                             f"{model.name}'s expert FFN width {model.expert_ffn}")
    return MoEDims(model.hidden_size, model.num_experts, model.num_experts // ep,
                   model.experts_per_token, model.expert_ffn, moe_tp, ep, model.gated_mlp,
                   model.shared_ffn // tp)


# --- the implementations -------------------------------------------------------------------------
class MoEImpl:
    """The fused MoE of one set: torch (CPU), triton, or engine (vLLM's, else none)."""

    def __init__(self, backend: str, messages: list[str]):
        from validate import moe_reference as mr

        self.backend, self.messages = backend, messages
        self.fn, self.kernel = mr.torch_fused_moe, "torch:fused_moe_experts"
        if backend in ("triton", "engine"):
            from validate.kernels import fused_experts

            self.fn, self.kernel = fused_experts, "triton:fused_moe"
        self.reference = False
        if backend == "engine":
            v = mr.vllm_fused_experts()
            if v is not None:
                self.fn, self.kernel, self.reference = v, "vllm:fused_experts", True
        self._checked = False

    def __call__(self, *args, **kw):
        if not self._checked and self.reference:  # first call, untimed: agree with torch or drop
            from validate.moe_reference import torch_fused_moe

            self._checked = True
            want = torch_fused_moe(*args, **kw).float()
            try:
                got = self.fn(*args, **kw).float()
                bad = float((got - want).abs().max()) > CHECK_TOL["bfloat16"] * max(float(want.abs().max()), 1e-6)
                why = "differs from torch"
            except Exception as e:  # noqa: BLE001 - an API that changed between vLLM releases
                bad, why = True, f"failed ({str(e).splitlines()[0][:120]})"
            if bad:
                from validate.kernels import fused_experts

                self.messages.append(f"vLLM's fused_experts {why}: the Triton fused MoE is timed instead")
                self.fn, self.kernel, self.reference = fused_experts, "triton:fused_moe", False
        return self.fn(*args, **kw)


def operators(device: str, impl: MoEImpl | None, mla: bool, shared: bool) -> dict[str, dict]:
    """What the report says ran for each MoE-model operator."""
    out = {"moe": {"triton": "triton:fused_moe",
                   "timed": impl.kernel if impl is not None else "torch:fused_moe_experts",
                   "how": ("Triton fused MoE, compiled; reference " + (impl.kernel if impl is not None
                                                                        and impl.reference else "none (vLLM not importable)"))
                   if device == "cuda" else "torch loop over experts on the CPU; the Triton kernel "
                   "ran in the interpreter for the kernel check"}}
    if shared:
        out["shared_experts"] = {"triton": "triton:matmul", "timed": "torch:matmul" if device != "cuda"
                                 else "cuBLAS (engine) / triton:matmul", "how": "dense GEMM rows"}
    if mla:
        out["mla"] = {"triton": None, "timed": MLA_KERNEL, "how": "MLA: torch reference, no Triton kernel"}
    return out


# --- one shape -----------------------------------------------------------------------------------
def _mla_calls(shape: IterationShape, mla, dev: str, gen) -> list[tuple[str, dict, object]]:
    """(op, row columns, calls) for the MLA module of each part of the shape."""
    d = mla.d
    out = []
    runs: dict[tuple[int, int], int] = {}
    for c, p in shape.prefill:
        runs[(c, p)] = runs.get((c, p), 0) + 1
    for (c, p), n in runs.items():
        if p:
            continue  # an mla_prefill row has no cached prefix (said once by the caller)
        xs = [torch.randn(n * c, d.hidden, generator=gen, device=dev).to(mla.dtype) for _ in range(2)]
        pos = torch.arange(c, device=dev).repeat(n)
        if c > 128:
            calls = [partial(mla.prefill, x, n, pos) for x in xs]
        else:
            cache = torch.zeros(n, c, d.latent, device=dev, dtype=mla.dtype)
            calls = [partial(mla.absorbed, x, cache, c, pos) for x in xs]
        out.append(("mla_prefill", {"batch_size": n, "prefill_len": c, "context_len": 0,
                                    "num_tokens": n * c}, calls))
    B, L = shape.decode_batch, shape.query_tokens
    if B:
        ctx = shape.attended_context + L
        cache = torch.randn(B, ctx, d.latent, generator=gen, device=dev).to(mla.dtype)
        xs = [torch.randn(B * L, d.hidden, generator=gen, device=dev).to(mla.dtype) for _ in range(2)]
        pos = torch.arange(ctx - L, ctx, device=dev).repeat(B)
        out.append(("mla_decode", {"batch_size": B, "prefill_len": L, "context_len": ctx - L,
                                   "num_tokens": B * L},
                    [partial(mla.absorbed, x, cache, L, pos) for x in xs]))
    return out


def measure_moe_shape(shape: IterationShape, m: MoEDims, experts: list, base: MoEImpl,
                      ref: MoEImpl | None, gemm_sets: tuple, shared_w: list, mla, timer, *,
                      device: str, device_name: str, model_name: str, precision: str,
                      fit: str, seed: int, attn=None) -> ShapeMeasurement:
    """The rows of one shape (module doc); `attn` = (ModelRunner, engine ops or None, KV dtype
    that ran) times the attention side of a non-MLA model's layer (`measure.measure_ops`)."""
    from validate.moe_reference import balanced_topk, routing_weights

    dev = "cuda" if device == "cuda" else "cpu"
    gen = torch.Generator(device=dev).manual_seed(seed)
    cpu_gen = torch.Generator().manual_seed(seed)
    T = shape.num_tokens
    T_all = T * shape.dp
    dtype = experts[0][0].dtype if experts[0][0].dtype != torch.float8_e4m3fn else torch.bfloat16
    res = ShapeMeasurement(shape, layer_s=math.nan, head_s=math.nan, layers_run=0,
                           kernels="torch" if ref is None else fit)
    base_row = {"source": SOURCE, "gpu": device_name, "model": model_name, "kv_dtype": "bf16",
                "tp": shape.tp, "pp": shape.pp, "num_tokens": T}

    def record(op: str, cols: dict, calls_of, base_kernel: str, ref_kernel: str | None) -> None:
        t_base = timer.median_s(calls_of(base))
        t_ref, kern = t_base, base_kernel
        if ref is not None:
            if ref_kernel is not None:
                t_ref = timer.median_s(calls_of(ref))
                ref_kernel = ref.kernel if op == "moe" else ref_kernel  # a failed reference fell back
            has_ref = ref_kernel is not None and not ref_kernel.startswith("triton:")
            res.compare.append({"shape": shape.name, "op": op, "triton_kernel": base_kernel,
                                "reference_kernel": ref_kernel if has_ref else "(none: Triton)",
                                "triton_s": t_base, "reference_s": t_ref if has_ref else t_base,
                                "ratio": (t_ref if has_ref else t_base) / t_base})
            if fit == "engine" and has_ref:
                kern, t_base = ref_kernel, t_ref
        res.rows.append({**base_row, "row_id": f"{shape.name}:{op}", "op": op, "kernel": kern,
                         **cols, "measured_s": t_base})

    xs = [torch.randn(T_all, m.hidden, generator=gen, device=dev).to(dtype) for _ in range(2)]
    ids = balanced_topk(T_all, m.num_experts, m.topk, dev)
    tw = routing_weights(T_all, m.topk, cpu_gen, dev)

    def moe_calls(impl):
        return [partial(impl, xs[i % 2], w1, w2, tw, ids, w1_scale=s1, w2_scale=s2, gated=m.gated,
                        num_experts=m.num_experts, expert_offset=0)
                for i, (w1, w2, s1, s2) in enumerate(experts)]

    record("moe", {"precision": precision, "hidden": m.hidden, "inter": m.inter * m.moe_tp,
                   "topk": m.topk, "num_experts": m.num_experts, "moe_tp": m.moe_tp,
                   "moe_ep": m.ep, "moe_gated": int(m.gated), "routing": "balanced",
                   "num_tokens": T_all},
           lambda impl: moe_calls(impl), base.kernel,
           ref.kernel if ref is not None and ref.reference else None)  # no vLLM: Triton timed once
    if m.shared:
        a = [torch.randn(T, m.hidden, generator=gen, device=dev).to(dtype) for _ in range(2)]
        up = (2 if m.gated else 1) * m.shared
        h = [torch.randn(T, m.shared, generator=gen, device=dev).to(dtype) for _ in range(2)]
        base_ops, ref_ops = gemm_sets
        for op, acts, ws, n, k in (("mlp_up_proj", a, [w[0] for w in shared_w], up, m.hidden),
                                   ("mlp_down_proj", h, [w[1] for w in shared_w], m.hidden, m.shared)):
            def calls_of(impl, acts=acts, ws=ws):
                ops = base_ops if impl is base else ref_ops
                return [partial(ops.gemm, acts[i % 2], w) for i, w in enumerate(ws)]

            rk = None if ref_ops is None else ref_ops.kernel_of(op)
            record(op, {"precision": "bf16", "m": T, "n": n, "k": k}, calls_of,
                   f"{base_ops.name}:matmul", rk)
    if mla is not None:
        d = mla.d
        cols = {"precision": "bf16", "kv_dtype": "bf16", "num_heads": d.num_heads, "num_kv_heads": 1,
                "hidden": d.hidden, "q_lora_rank": d.q_lora_rank, "kv_lora_rank": d.kv_lora_rank,
                "qk_nope_dim": d.qk_nope_dim, "qk_rope_dim": d.qk_rope_dim, "v_head_dim": d.v_head_dim}
        for op, c, calls in _mla_calls(shape, mla, dev, gen):
            record(op, {**cols, **c}, lambda impl, calls=calls: calls, "torch:mla", None)
            res.rows[-1]["kernel"] = ""  # the cost model picks the MLA path from the chunk length
            if res.compare:
                res.compare[-1].update(triton_kernel="(none: torch reference)", reference_kernel=MLA_KERNEL)
    if attn is not None:
        from validate.measure import measure_ops

        runner, engine, kv = attn
        measure_ops(runner, runner.state(shape), shape, timer, res, device_name=device_name,
                    model_name=model_name, precision="bf16", kv_dtype=kv, reference=engine,
                    fit=fit, skip=MLP_OPS)
    if device == "cuda":
        torch.cuda.empty_cache()
    return res


# --- the plan --------------------------------------------------------------------------------
def _estimate_s(shape: IterationShape, m: MoEDims, mla, hw) -> float:
    """A rough roofline of one shape's MoE layer and MLA module (half of peak): budgeting only."""
    T = shape.num_tokens * shape.dp
    rows = T * m.topk / m.ep
    flops = 2.0 * rows * ((2 if m.gated else 1) + 1) * m.hidden * m.inter
    nbytes = m.expert_bytes()
    if mla is not None:
        pairs = sum(c * (c + 1) / 2 for c, p in shape.prefill if not p)
        pairs += shape.decode_batch * shape.query_tokens * (shape.attended_context + shape.query_tokens)
        flops += mla.flops(shape.num_tokens, pairs, absorbed=True)
        nbytes += mla.d.weight_elems() * 2 + shape.decode_batch * shape.attended_context * mla.d.latent * 2
    return flops / (0.5 * hw.bf16_flops) + nbytes / (0.5 * hw.hbm_bw_bytes_s)


def _fit_shapes(shapes, m, mla, hw, budget, dims=None) -> tuple[list[IterationShape], list[str]]:
    """Shapes shrunk (decode batches, prompts, chunks: `budget._shrink`) until one layer is
    estimated within the CPU's time budget; on a GPU unchanged."""
    from validate.budget import _shrink, describe, estimate_layer_s

    def est(s):
        return _estimate_s(s, m, mla, hw) + (0.0 if dims is None else estimate_layer_s(dims, s, hw))

    out, msgs = [], []
    for s in shapes:
        cur = s
        if budget.layer_time_s is not None:
            while est(cur) > budget.layer_time_s and (nxt := _shrink(cur)) is not None:
                cur = nxt
        if cur is not s:
            cur = replace(cur, name=describe(cur),
                          note=f"scaled down from {s.name} (~{est(s):.2f} s > "
                               f"{budget.layer_time_s} s time budget)")
            msgs.append(f"{cur.note}: runs {cur.name}")
        out.append(cur)
    return out, msgs


def check_moe_kernels(m: MoEDims, device: str, seed: int = 0) -> dict:
    """The Triton fused MoE against the torch loop over experts (and vLLM's where it imports) on
    a small layer with the plan's top-k and expert-parallel share: 13 tokens, hidden 64, FFN 32."""
    from validate.kernels import fused_experts
    from validate.moe_reference import routing_weights, torch_fused_moe

    E = min(m.num_experts, 8)
    k = min(m.topk, E)
    local = max(1, E // m.ep) if m.ep > 1 else E
    dev = "cuda" if device == "cuda" else "cpu"
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    g = torch.Generator().manual_seed(seed)
    T, H, inter = 13, 64, 32
    x = torch.randn(T, H, generator=g).to(dtype).to(dev)
    w1 = (torch.randn(local, (2 if m.gated else 1) * inter, H, generator=g) * H ** -0.5).to(dtype).to(dev)
    w2 = (torch.randn(local, H, inter, generator=g) * inter ** -0.5).to(dtype).to(dev)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]).to(torch.int32).to(dev)
    tw = routing_weights(T, k, g, dev)
    kw = dict(gated=m.gated, num_experts=E, expert_offset=0)
    want = torch_fused_moe(x, w1, w2, tw, ids, **kw).float()
    err = float((fused_experts(x, w1, w2, tw, ids, **kw).float() - want).abs().max())
    scale = float(want.abs().max())
    name = str(dtype).removeprefix("torch.")
    tol = CHECK_TOL[name]
    return {"ok": bool(err <= tol * max(scale, 1e-6)), "max_abs_err": err, "scale": scale,
            "tol_rel": tol, "dtype": name, "device": device,
            "where": "Triton interpreter (CPU)" if device == "cpu" else "compiled (CUDA)",
            "probe": f"fused MoE: {T} tokens, top-{k} of {E} experts ({local} local), hidden {H}, FFN {inter}"}


def run_moe_groups(meas, shapes: list[IterationShape], opts, timer, skip_check: str | None, log) -> None:
    """Measure every shape of an MoE plan into `meas` (a validate.runner.Measurements)."""
    from costmodel.specs import load_model
    from validate.budget import device_budget
    from validate.kernels.fused_moe import quantise_block_weights
    from validate.mla_reference import MLAModule, mla_dims
    from validate.reference import make_ops

    model = load_model(meas.model_ref)
    budget = device_budget(meas.device, opts.layer_time_s)
    dev = "cuda" if meas.device == "cuda" else "cpu"
    groups: dict[tuple, list[IterationShape]] = {}
    for s in shapes:
        groups.setdefault((s.tp, s.ep, s.dp, s.precision), []).append(s)
    meas.messages.append(f"{model.name}: the router and expert dispatch/combine are not measured "
                         "(no row kind for the router; one GPU has no dispatch); they keep their defaults")
    meas.messages.append("MoE plan: no whole iteration is timed; each shape's row in the table is "
                         "the sum of its op rows (moe, and shared experts, MLA or the attention "
                         "side where the model has them), measured and predicted")
    for (tp, ep, dp, _), group in groups.items():
        m = moe_dims(model, tp, ep, dp)
        part = model.dtype_of("experts")
        fp8 = part in ("fp8", "fp8_block") and meas.device == "cuda" and _fp8_ok()
        prec = "fp8_block" if fp8 else "bf16"
        meas.precision[f"experts {part}"] = prec
        if part != prec:
            meas.messages.append(f"experts {part}: " + ("run as block fp8 (128 x 128 scales)" if fp8 else
                                                         f"no {part} fused-MoE kernel on this device; "
                                                         "the experts run in bf16"))
        need = m.expert_bytes(1.0 if fp8 else 2.0) * ROTATIONS
        if need > 0.5 * budget.memory_bytes:
            raise ServePlanError(f"{model.name}: {m.local_experts} experts per GPU (tp={tp}, ep={ep}) take "
                                 f"{need / 1024**3:.1f} GiB with {ROTATIONS} weight sets, over half this "
                                 f"device's budget of {budget.memory_bytes / 1024**3:.1f} GiB; validate a "
                                 "plan with a larger ep or tp, or on a device with more memory")
        mla = (MLAModule(mla_dims(model, tp), device=dev, seed=opts.seed,
                         max_positions=max(s.decode_context + s.query_tokens + sum(c + p for c, p in s.prefill)
                                           for s in group) + 1)
               if model.is_mla else None)
        if mla is not None and any(p for s in group for _, p in s.prefill):
            meas.messages.append("MLA prefill chunks over a cached prefix are not measured "
                                 "(an mla_prefill row has no prefix)")
        if meas.kernel_check is None:
            if skip_check is None:
                t0 = time.perf_counter()
                meas.kernel_check = check_moe_kernels(m, meas.device, opts.seed)
                log(f"kernel check ({meas.kernel_check['where']}, {time.perf_counter() - t0:.1f} s): "
                    f"fused MoE max |triton - torch| = {meas.kernel_check['max_abs_err']:.2e} "
                    f"({'ok' if meas.kernel_check['ok'] else 'FAILED'})")
            else:
                meas.kernel_check = {"ok": None, "skipped": skip_check}
        attn = None if model.is_mla else _attention_runner(meas, model, tp, group[0].kv_dtype, opts.seed)
        experts = _expert_weights(m, dev, fp8, opts.seed, quantise_block_weights)
        shared_w = ([(_w(m.hidden, (2 if m.gated else 1) * m.shared, dev, opts.seed + 7 + i),
                      _w(m.shared, m.hidden, dev, opts.seed + 9 + i)) for i in range(ROTATIONS)]
                    if m.shared else [])
        cuda = meas.device == "cuda"
        base = MoEImpl("triton" if cuda else "torch", meas.messages)
        ref = MoEImpl("engine", meas.messages) if cuda else None
        gemm_sets = (make_ops("triton" if cuda else "torch"), make_ops("engine") if cuda else None)
        meas.operators = operators(meas.device, ref if cuda else base, mla is not None, bool(m.shared))
        if attn is not None:
            meas.operators["attention"] = {
                "triton": "triton:flash_attn_prefill, triton:paged_decode_attention",
                "timed": "torch (CPU)" if not cuda else f"--kernels {meas.kernels} as for dense models",
                "how": "the dense runner's attention-side rows (projections, norm, RoPE, attention)"}
        scaled, notes = _fit_shapes(group, m, mla, meas.hardware, budget,
                                    None if attn is None else attn[0].dims)
        meas.messages += notes
        passes = opts.passes or (1 if cuda else 5)
        by_shape: list[list[ShapeMeasurement]] = [[] for _ in scaled]
        for k in range(passes):
            for i, s in enumerate(scaled):
                t0 = time.perf_counter()
                r = measure_moe_shape(s, m, experts, base, ref, gemm_sets, shared_w, mla, timer,
                                      device=meas.device, device_name=meas.hardware.name,
                                      model_name=model.name, precision=prec, fit=meas.kernels,
                                      seed=opts.seed + i, attn=attn)
                by_shape[i].append(r)
                log(f"  pass {k + 1}/{passes} {s.name}: " + ", ".join(
                    f"{row['op']} {row['measured_s'] * 1e3:.3f} ms" for row in r.rows)
                    + f" ({time.perf_counter() - t0:.1f} s)")
        meas.results += [combine_passes(r) for r in by_shape]


def op_sums(res: ShapeMeasurement, profile=None) -> dict:
    """A shape of an MoE plan in the per-shape table: its op rows' measured times summed, and
    the cost model's predictions of the same rows with default parameters and with `profile`
    (the shape's MoE layer, shared experts and MLA module, not a whole iteration)."""
    import pandas as pd

    from costmodel.importers import tidy
    from costmodel.measured import predict_rows

    rows = tidy(pd.DataFrame(res.rows))
    out = {"measured_s": float(rows["measured_s"].sum()),
           "predicted_default_s": float(predict_rows(rows).sum()),
           "note": (res.shape.note + "; " if res.shape.note else "")
           + "sum of the shape's op rows (" + ", ".join(rows["op"]) + "), no iteration timed"}
    if profile is not None:
        out["predicted_calibrated_s"] = float(predict_rows(rows, profile).sum())
    return out


def _attention_runner(meas, model, tp: int, kv_dtype: str, seed: int):
    """(ModelRunner, engine ops or None, KV dtype that ran) for the attention side of a non-MLA
    MoE model's layers: the dense runner with the model's heads, its MLP narrow (unused)."""
    from validate.devices import ran_kv_dtype
    from validate.model_runner import ModelRunner
    from validate.reference import make_ops
    from validate.shapes import GpuDims

    if model.num_heads % tp:
        raise ServePlanError(f"tp={tp} does not divide {model.name}'s {model.num_heads} heads")
    if kv_dtype not in meas.kv_dtype:
        meas.kv_dtype[kv_dtype] = ran_kv_dtype(kv_dtype, meas.device, meas.messages)
    kv = meas.kv_dtype[kv_dtype]
    if model.dtype_of("attn") != "bf16" and not any("attention projections" in x for x in meas.messages):
        meas.messages.append(f"attention projections {model.dtype_of('attn')}: timed in bf16")
    dims = GpuDims(hidden=model.hidden_size, q_heads=model.num_heads // tp,
                   kv_heads=max(1, model.num_kv_heads // tp), head_dim=model.head_dim, inter=16,
                   vocab=-(-model.vocab_size // tp), gated=model.gated_mlp)
    cuda = meas.device == "cuda"
    ops = make_ops("triton" if cuda else "torch", kv_fp8=kv == "fp8")
    runner = ModelRunner(dims, ROTATIONS, ops=ops, device=meas.device, seed=seed)
    return runner, (make_ops("engine", kv_fp8=kv == "fp8") if cuda else None), kv


def _fp8_ok() -> bool:
    from validate.kernels._device import fp8_supported

    return fp8_supported(torch.device("cuda"))


def _w(k: int, n: int, dev: str, seed: int) -> torch.Tensor:
    g = torch.Generator(device=dev).manual_seed(seed)
    return (torch.randn(k, n, generator=g, device=dev) * k ** -0.5).to(torch.bfloat16)


def _expert_weights(m: MoEDims, dev: str, fp8: bool, seed: int, quantise) -> list[tuple]:
    """ROTATIONS sets of (w1 [E_l, 2I, H], w2 [E_l, H, I], scales or None) of N(0, 1/fan_in)."""
    out = []
    for r in range(ROTATIONS):
        g = torch.Generator(device=dev).manual_seed(seed + 100 + r)
        up = (2 if m.gated else 1) * m.inter
        w1 = torch.randn(m.local_experts, up, m.hidden, generator=g, device=dev).mul_(m.hidden ** -0.5)
        w2 = torch.randn(m.local_experts, m.hidden, m.inter, generator=g, device=dev).mul_(m.inter ** -0.5)
        if fp8:
            (w1, s1), (w2, s2) = quantise(w1), quantise(w2)
            out.append((w1, w2, s1, s2))
        else:
            out.append((w1.to(torch.bfloat16), w2.to(torch.bfloat16), None, None))
    return out
