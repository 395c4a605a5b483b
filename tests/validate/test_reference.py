"""The engine-class operators (`validate.reference.EngineOps`) compute what the torch reference
computes, say what runs for each measured row, take vLLM's ops when vLLM imports (a stand-in
module here) and drop one that disagrees; and a shape measured with both sets keeps both
times per operator and fits the set asked for."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from validate.model_runner import ModelRunner
from validate.ops import TorchOps, prefill_layout
from validate.reference import EngineOps, make_ops
from validate.shapes import GpuDims, IterationShape
from validate.timing import Timer
from validate.vllm_ops import VllmOps

DIMS = GpuDims(hidden=64, q_heads=4, kv_heads=2, head_dim=32, inter=96, vocab=128, gated=True)


def _close(a, b, tol=3e-2):
    a, b = a.float(), b.float()
    assert float((a - b).abs().max()) <= tol * float(b.abs().max())


def test_engine_ops_match_torch_and_name_what_runs(gen):
    eng, ref = EngineOps(vllm=None), TorchOps()
    a = torch.randn(5, 64, generator=gen).bfloat16()
    w = torch.randn(64, 48, generator=gen).bfloat16()
    _close(eng.gemm(a, w), a @ w)
    nw = torch.randn(64, generator=gen).bfloat16()
    _close(eng.rms_norm(a, nw), ref.rms_norm(a, nw))
    for chunks in (((7, 0), (7, 0)), ((5, 9),)):  # plain prompts (SDPA), a chunk over a prefix (Triton)
        lay = prefill_layout(chunks, "cpu")
        q = torch.randn(lay.cu_q[-1].item(), 4, 32, generator=gen).bfloat16()
        k = torch.randn(lay.total_k, 2, 32, generator=gen).bfloat16()
        v = torch.randn(lay.total_k, 2, 32, generator=gen).bfloat16()
        _close(eng.prefill_attention(q, k, v, lay), ref.prefill_attention(q, k, v, lay))
    assert eng.kernel_of("qkv_proj") == "torch:matmul"
    assert eng.kernel_of("input_layernorm") == "torch:rms_norm"
    assert eng.kernel_of("attn_prefill") == "torch:sdpa"
    assert eng.kernel_of("attn_prefill", prefix=True) == "triton:flash_attn_prefill"
    assert eng.kernel_of("attn_prefill", verify=True) == "triton:spec_verify_attention"
    assert eng.kernel_of("attn_decode") == "triton:paged_decode_attention"
    assert eng.kernel_of("rope") == "triton:apply_rope" and not eng.has_reference("rope")
    assert make_ops("engine").name == "engine"


def test_fp8_gemm_reference_is_scaled_mm_or_says_why_not(gen):
    eng = EngineOps(fp8=True, vllm=None)
    a = torch.randn(16, 64, generator=gen).bfloat16()
    w = (torch.randn(64, 32, generator=gen) / 8).to(torch.float8_e4m3fn)
    out = eng.gemm(a, w)
    _close(out, a @ w.to(torch.bfloat16), tol=0.08)  # the activations are quantised to e4m3
    label = eng.kernel_of("qkv_proj")
    if label == "triton:matmul":  # this torch build refused: a message says so
        assert any("_scaled_mm refused" in m for m in eng.messages)
    else:
        assert label == "torch:scaled_mm" and not eng.messages
    assert eng.kernel_of("lm_head") == "torch:matmul"  # the LM head stays bf16


def _fake_vllm(bad_rms: bool = False) -> types.ModuleType:
    """vllm._custom_ops as its signatures are: out-parameters, RoPE in place."""
    mod = types.ModuleType("vllm._custom_ops")

    def rms_norm(out, x, w, eps):
        y = F.rms_norm(x.float(), (x.shape[-1],), w.float(), eps)
        out.copy_(y * (2.0 if bad_rms else 1.0))

    def silu_and_mul(out, x):
        i = x.shape[-1] // 2
        out.copy_(F.silu(x[:, :i]) * x[:, i:])

    def rotary_embedding(positions, q, k, head_size, cache, is_neox):
        half = head_size // 2
        cos, sin = cache[positions, :half].float()[:, None], cache[positions, half:].float()[:, None]
        for t in (q, k):
            x1, x2 = t[..., :half].float(), t[..., half:].float()
            t.copy_(torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1))

    mod.rms_norm, mod.silu_and_mul, mod.rotary_embedding = rms_norm, silu_and_mul, rotary_embedding
    return mod


def test_vllm_ops_are_the_reference_when_vllm_imports(gen, monkeypatch):
    pkg = types.ModuleType("vllm")
    monkeypatch.setitem(sys.modules, "vllm", pkg)
    monkeypatch.setitem(sys.modules, "vllm._custom_ops", _fake_vllm())
    eng = make_ops("engine")
    assert isinstance(eng.vllm, VllmOps)
    assert eng.kernel_of("input_layernorm") == "vllm:rms_norm"
    assert eng.kernel_of("rope") == "vllm:rotary_embedding" and eng.has_reference("rope")
    assert eng.kernel_of("mlp_act") == "vllm:silu_and_mul"
    ref = TorchOps()
    x = torch.randn(5, 64, generator=gen).bfloat16()
    nw = torch.randn(64, generator=gen).bfloat16()
    _close(eng.rms_norm(x, nw), ref.rms_norm(x, nw))
    up = torch.randn(5, 192, generator=gen).bfloat16()
    _close(eng.act(up), ref.act(up))
    q = torch.randn(5, 4, 32, generator=gen).bfloat16()
    k = torch.randn(5, 2, 32, generator=gen).bfloat16()
    pos = torch.arange(90, 95)
    want = ref.rope(q, k, pos, 500000.0)
    got = eng.rope(q.clone(), k.clone(), pos, 500000.0)
    _close(got[0], want[0])
    _close(got[1], want[1])
    assert not eng.all_messages()


def test_a_vllm_op_that_disagrees_is_dropped_with_a_message(gen):
    eng = EngineOps(vllm=VllmOps(_fake_vllm(bad_rms=True)))
    x = torch.randn(5, 64, generator=gen).bfloat16()
    nw = torch.randn(64, generator=gen).bfloat16()
    _close(eng.rms_norm(x, nw), TorchOps().rms_norm(x, nw))  # the first call already falls back
    assert eng.kernel_of("input_layernorm") == "torch:rms_norm"
    assert any("rms_norm op differs from torch" in m for m in eng.all_messages())


@pytest.mark.parametrize("fit", ["engine", "triton"])
def test_a_shape_measured_with_both_sets_keeps_both_and_fits_one(fit):
    """The GPU path's bookkeeping, run on the CPU (Triton interpreted, a per-call timer)."""
    from validate.measure import measure_shape

    shape = IterationShape("s", "mixed", "colocated", "m", "cpu", 1, prefill=((9, 0),),
                           decode_batch=2, decode_context=20)
    runner = ModelRunner(DIMS, 1, ops=make_ops("triton"), device="cpu", seed=0)
    timer = Timer("cpu", warmup=0, min_reps=1, reps=1)
    res = measure_shape(runner, shape, timer, device_name="cpu", model_name="m", full_layers=4,
                        precision="bf16", reference=EngineOps(vllm=None), fit=fit)
    by_op = {c["op"]: c for c in res.compare}
    assert by_op["qkv_proj"]["reference_kernel"] == "torch:matmul"
    assert by_op["attn_prefill"]["reference_kernel"] == "torch:sdpa"
    assert by_op["attn_decode"]["reference_kernel"] == "(none: Triton)"
    assert by_op["attn_decode"]["reference_s"] == by_op["attn_decode"]["triton_s"]
    assert all(math.isclose(c["ratio"], c["reference_s"] / c["triton_s"]) for c in res.compare)
    kernels = {r["op"]: r["kernel"] for r in res.rows}
    assert kernels["qkv_proj"] == ("torch:matmul" if fit == "engine" else "triton:matmul")
    assert kernels["attn_decode"] == "triton:paged_decode_attention"
    assert kernels["residual_add"] == "torch:add"
    assert res.kernels == fit and runner.ops.name == "triton"  # the runner's ops restored
    for v in (res.layer_s, res.other_layer_s, res.eager_layer_s, res.other_head_s):
        assert v > 0 and math.isfinite(v)
    assert math.isfinite(res.host_s) and res.iteration_s > 0
