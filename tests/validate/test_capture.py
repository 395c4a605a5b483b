"""Every kernel wrapper on the timed path is capture-safe: a repeated call copies nothing from the
host and reads nothing back (what a CUDA graph needs, and what timing as the engine runs needs).

Runs on the CPU (Triton's interpreter) and on a GPU alike: `validate.capture.host_traffic`
records the torch calls that would be host copies or host reads on a GPU. The first tests show
it catches them, including the way the RoPE wrapper once built its inverse frequencies.
"""

from __future__ import annotations

import pytest
import torch

from validate.capture import CaptureSafetyError, assert_capture_safe, host_traffic
from validate.kernels import (
    apply_rope,
    flash_attn_prefill,
    fused_experts,
    matmul,
    paged_decode_attention,
    rms_norm,
    silu_and_mul,
    spec_verify_attention,
)
from validate.kernels._device import fp8_supported


def test_the_recorder_catches_host_copies_and_reads(device):
    x = torch.randn(4, 8, device=device)

    def old_rope_inv_freq():  # as apply_rope built it before: on the host, then copied over
        exps = torch.arange(0, 4, dtype=torch.float64) * 2.0 / 8
        return (1.0 / 10000.0**exps).to(device=device, dtype=torch.float32)

    for fn, kind in ((old_rope_inv_freq, "host tensor"),
                     (lambda: torch.tensor([2.0], device=device), "host data"),
                     (lambda: x.sum().item(), "host read"),
                     (lambda: float(x[0, 0]), "host read"),
                     (lambda: x.tolist(), "host read"),
                     (lambda: x.cpu(), "host read")):
        with host_traffic() as events:
            fn()
        assert [e.kind for e in events] == [kind], events
        assert "test_capture.py" in events[0].where
    with host_traffic() as events:  # made on the device: no copy
        torch.arange(4, device=device), torch.empty(3, device=device), torch.full((2,), 1.0, device=device)
        x * 2
    assert events == []
    with pytest.raises(CaptureSafetyError, match="host tensor: torch.arange"):
        assert_capture_safe(old_rope_inv_freq, "old rope")


def _rand(gen, *shape, dtype=torch.bfloat16, device="cpu"):
    return torch.randn(*shape, generator=gen).to(dtype).to(device)


def _paged(gen, device, batch=3, ctx=40, hkv=2, d=32, fp8=False):
    blocks = batch * -(-ctx // 16)
    kc = _rand(gen, blocks, 16, hkv, d, device=device)
    vc = _rand(gen, blocks, 16, hkv, d, device=device)
    if fp8:
        kc, vc = kc.to(torch.float8_e4m3fn), vc.to(torch.float8_e4m3fn)
    tables = torch.randperm(blocks, generator=gen).to(torch.int32).view(batch, -1).to(device)
    lens = torch.full((batch,), ctx, dtype=torch.int32).to(device)
    return kc, vc, tables, lens


def wrapper_calls(gen, device):
    """Each wrapper as the validate runner calls it on the timed path."""
    dt = torch.bfloat16
    a = _rand(gen, 6, 64, device=device)
    w = _rand(gen, 64, 48, device=device)
    big = _rand(gen, 80, 64, device=device)
    x = _rand(gen, 5, 64, device=device)
    nw = _rand(gen, 64, device=device)
    q = _rand(gen, 5, 4, 32, device=device)
    k = _rand(gen, 5, 2, 32, device=device)
    pos = torch.arange(100, 105, device=device)
    up = _rand(gen, 5, 96, device=device)
    qp = _rand(gen, 12, 4, 32, device=device)
    kp = _rand(gen, 20, 2, 32, device=device)
    vp = _rand(gen, 20, 2, 32, device=device)
    cu_q = torch.tensor([0, 5, 12], dtype=torch.int32).to(device)
    cu_k = torch.tensor([0, 8, 20], dtype=torch.int32).to(device)
    kc, vc, tables, lens = _paged(gen, device)
    qd = _rand(gen, 3, 4, 32, device=device)
    qv = _rand(gen, 3, 3, 4, 32, device=device)
    sel = torch.stack([torch.randperm(40, generator=gen)[:24].sort().values for _ in range(3)]).to(torch.int32).to(device)
    xm = _rand(gen, 13, 64, device=device)
    w1m, w2m = _rand(gen, 4, 64, 64, device=device), _rand(gen, 4, 64, 32, device=device)
    ids = torch.randint(0, 8, (13, 2), generator=gen, dtype=torch.int32).to(device)
    tw = torch.rand(13, 2, generator=gen).to(device)
    calls = {
        "fused_moe (4 of 8 experts)": lambda: fused_experts(xm, w1m, w2m, tw, ids, num_experts=8,
                                                         expert_offset=4),
        "matmul (split-K, decode rows)": lambda: matmul(a, w),
        "matmul (tiled)": lambda: matmul(big, w, path="tiled"),
        "rms_norm": lambda: rms_norm(x, nw),
        "apply_rope": lambda: apply_rope(q, k, pos, 500000.0),
        "silu_and_mul": lambda: silu_and_mul(up),
        "flash_attn_prefill": lambda: flash_attn_prefill(qp, kp, vp, cu_q, cu_k, 7, check_offsets=False),
        "paged_decode_attention": lambda: paged_decode_attention(qd, kc, vc, tables, lens),
        "paged_decode_attention (2 splits)": lambda: paged_decode_attention(qd, kc, vc, tables, lens, num_splits=2),
        "paged_decode_attention (KV budget)": lambda: paged_decode_attention(qd, kc, vc, tables, lens,
                                                                            selected_positions=sel),
        "spec_verify_attention": lambda: spec_verify_attention(qv, kc, vc, tables, lens),
    }
    from validate.kernels import gemm_persistent

    if gemm_persistent.hopper(torch.device(device)):
        b128 = _rand(gen, 64, 48, device=device)
        calls["matmul (persistent)"] = lambda: matmul(big, b128, path="persistent")
    if fp8_supported(torch.device(device)):
        f8 = torch.float8_e4m3fn
        a8, w8 = a.to(f8), w.to(f8)
        s = a.abs().amax().float() / 448.0  # a device scale, as the runner's W8A8 GEMM passes
        from validate.kernels.fused_moe import quantise_block_weights

        (q1, s1), (q2, s2) = quantise_block_weights(w1m), quantise_block_weights(w2m)
        calls["fused_moe (block fp8)"] = lambda: fused_experts(xm, q1, q2, tw, ids, w1_scale=s1, w2_scale=s2)
        calls["matmul fp8 (scale on the device and a float)"] = lambda: matmul(a8, w8, a_scale=s, b_scale=1.0)
        kc8, vc8, t8, l8 = _paged(gen, device, fp8=True)
        calls["paged_decode_attention (fp8 KV)"] = lambda: paged_decode_attention(
            qd, kc8, vc8, t8, l8, k_scale=0.02, v_scale=0.03)
    assert dt == torch.bfloat16
    return calls


def test_each_wrapper_makes_no_host_copy_on_a_repeated_call(device, gen):
    failures = []
    for name, call in wrapper_calls(gen, device).items():
        try:
            assert_capture_safe(call, name)
        except CaptureSafetyError as e:
            failures.append(str(e))
    assert not failures, "\n".join(failures)


def test_a_validate_iteration_is_capture_safe(device):
    """The whole timed iteration of the runner (every layer's operators, the KV-cache writes),
    with the Triton kernels and with the engine-class references, on a shape that has a prompt
    chunk over a cached prefix and decodes over a paged fp8 cache."""
    from validate.model_runner import ModelRunner
    from validate.reference import make_ops
    from validate.shapes import GpuDims, IterationShape

    dims = GpuDims(hidden=64, q_heads=4, kv_heads=2, head_dim=32, inter=96, vocab=128, gated=True)
    shape = IterationShape("probe", "mixed", "colocated", "m", "cpu", 1, prefill=((9, 7),),
                           decode_batch=2, decode_context=37)
    for backend in ("triton", "engine"):
        runner = ModelRunner(dims, 2, ops=make_ops(backend, kv_fp8=fp8_supported(torch.device(device))),
                             device=device, seed=0)
        st = runner.state(shape)
        x = runner.hidden_input(st)
        assert_capture_safe(lambda runner=runner, st=st, x=x: runner.layers_forward(x, st), backend)
