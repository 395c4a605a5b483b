"""Check, inside a run, that the Triton kernels compute what the timed operators compute.

A small model with the plan's head geometry (head dim, GQA group) and narrow layers runs one
iteration that has every kind of attention the plan uses (a prompt chunk over a cached
prefix, decodes or k + 1 verify tokens, the KV budget) through `TorchOps`, `TritonOps` and the
engine-class `EngineOps` (`validate.reference`), with the same weights and caches. On a GPU the kernels are compiled; on a CPU they
run in Triton's interpreter, which `prepare_interpreter` must switch on before anything
imports triton. The logits must agree to `tol` relative to their largest magnitude.
"""

from __future__ import annotations

import os
import sys

from validate.shapes import GpuDims, IterationShape

TOL = {"float32": 1e-3, "bfloat16": 5e-2}


def prepare_interpreter(device: str) -> str | None:
    """On a CPU, switch Triton to its interpreter if it is not imported yet; else say why the
    kernel check cannot run (None when it can)."""
    from validate.kernels import interpreting

    if device != "cpu" or interpreting():
        return None
    if "triton" in sys.modules:
        return ("triton was imported before TRITON_INTERPRET=1 could be set, so the kernels "
                "cannot run on the CPU in this process; kernel check skipped")
    os.environ["TRITON_INTERPRET"] = "1"
    return None


def check_kernels(dims: GpuDims, shape: IterationShape, device: str, seed: int = 0,
                  kv_fp8: bool = False) -> dict:
    """{ok, max_abs_err, scale, tol, dtype, dims, shape}: Triton vs torch on one iteration
    (`kv_fp8`: both read the same fp8 decode caches)."""
    import torch

    from validate.model_runner import ModelRunner
    from validate.reference import make_ops

    group = min(dims.q_heads // dims.kv_heads, 4)
    small = GpuDims(hidden=64, q_heads=group * min(dims.kv_heads, 2), kv_heads=min(dims.kv_heads, 2),
                    head_dim=dims.head_dim, inter=96, vocab=256, gated=dims.gated)
    B = 2 if shape.decode_batch else 0
    ctx = 37
    budget = min(shape.kv_budget, 24) if shape.kv_budget else None
    probe = IterationShape("kernel check", "mixed", shape.role, shape.model, shape.gpu, 1,
                           prefill=((9, 7),), decode_batch=B, decode_context=ctx,
                           query_tokens=shape.query_tokens if B else 1, kv_budget=budget)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    outs = []
    for backend in ("torch", "triton", "engine"):
        runner = ModelRunner(small, 2, ops=make_ops(backend, kv_fp8=kv_fp8), device=device,
                             dtype=dtype, seed=seed)
        outs.append(runner.forward(runner.state(probe)).float())
    err = float((outs[0] - outs[1]).abs().max())
    engine_err = float((outs[0] - outs[2]).abs().max())
    scale = float(outs[0].abs().max())
    name = str(dtype).removeprefix("torch.")
    tol = TOL[name]
    return {"ok": bool(max(err, engine_err) <= tol * max(scale, 1e-6)), "max_abs_err": err,
            "engine_max_abs_err": engine_err, "scale": scale,
            "tol_rel": tol, "dtype": name, "device": device,
            "where": "Triton interpreter (CPU)" if device == "cpu" else "compiled (CUDA)",
            "probe": f"hidden 64, {small.q_heads}/{small.kv_heads} heads of {small.head_dim}, "
                     f"chunk 9+7" + (f", {B} x {shape.query_tokens} queries at {ctx + shape.query_tokens}"
                                     if B else "") + (f", kv budget {budget}" if budget else "")
                     + (", fp8 KV cache" if kv_fp8 and B else "")}
