"""The fused-MoE grouped GEMM (validate/kernels/fused_moe.py) against a float64 torch reference:
bf16 and fp32 experts, block-FP8 experts (against the same quantisation in float64), routing
that leaves experts empty or piles every token on one, the alignment by hand, capture safety,
and bad shapes. Shapes are small and not multiples of the tiles, so every mask is exercised."""

from __future__ import annotations

import pytest
import torch

from validate.capture import assert_capture_safe
from validate.kernels import fused_moe
from validate.kernels._device import fp8_supported

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.bfloat16: dict(rtol=3e-2, atol=3e-2)}


def _mod():
    import importlib

    return importlib.import_module("validate.kernels.fused_moe")


def reference(x, w1, w2, wts, ids, w1_deq=None, w2_deq=None, quant=None):
    """float64: each token's k experts, SwiGLU between the projections, weighted sum. With
    block-FP8 experts, the dequantised weights, and the activations through `quant` (the
    kernel's per-group quantisation) before each projection."""
    x = x.double().cpu()
    w1 = (w1_deq if w1_deq is not None else w1).double().cpu()
    w2 = (w2_deq if w2_deq is not None else w2).double().cpu()
    inter = w1.shape[1] // 2
    out = torch.zeros_like(x)
    for t in range(x.shape[0]):
        for j in range(ids.shape[1]):
            e = int(ids[t, j])
            xt = quant(x[t:t + 1]) if quant else x[t:t + 1]
            h = xt @ w1[e].T
            if quant:  # the kernel keeps its intermediates in x's dtype (bf16) before quantising
                h = h.to(torch.bfloat16).double()
            a = torch.nn.functional.silu(h[:, :inter]) * h[:, inter:]
            a = quant(a.to(torch.bfloat16).double()) if quant else a
            out[t] += float(wts[t, j]) * (a @ w2[e].T)[0]
    return out


def _routing(gen, T, E, k, device, skew=False):
    logits = torch.randn(T, E, generator=gen, dtype=torch.float64)
    if skew:  # every token's top pick is expert 0, and most experts get nothing
        logits[:, 0] += 100.0
        logits[:, E // 2:] -= 100.0
    wts, ids = logits.softmax(-1).topk(k, dim=-1)
    return wts.float().to(device), ids.to(torch.int32).to(device)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("skew", [False, True], ids=["spread", "skewed"])
def test_fused_moe_matches_reference(dtype, skew, device, gen):
    T, H, inter, E, k = 13, 48, 40, 6, 2
    x = torch.randn(T, H, generator=gen).to(dtype).to(device)
    w1 = (torch.randn(E, 2 * inter, H, generator=gen) * 0.2).to(dtype).to(device)
    w2 = (torch.randn(E, H, inter, generator=gen) * 0.2).to(dtype).to(device)
    wts, ids = _routing(gen, T, E, k, device, skew)
    out = fused_moe(x, w1, w2, wts, ids)
    assert out.dtype == dtype and out.shape == (T, H) and not out.isnan().any()
    torch.testing.assert_close(out.double().cpu(), reference(x, w1, w2, wts, ids), **TOL[dtype])


def test_block_fp8_experts(device, gen):
    if not fp8_supported(torch.device(device)):
        pytest.skip("fp8 e4m3 needs compute capability >= 8.9 or the interpreter")
    m = _mod()
    T, H, inter, E, k = 5, 256, 128, 4, 2
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16).to(device)
    w1f = torch.randn(E, 2 * inter, H, generator=gen) * 0.1
    w2f = torch.randn(E, H, inter, generator=gen) * 0.1

    def blocks(w):  # 128 x 128 block scales, as DeepSeek-V3 checkpoints store them
        e, n, kk = w.shape
        b = w.reshape(e, n // 128, 128, kk // 128, 128)
        s = (b.abs().amax(dim=(2, 4)) / m.FP8_MAX).clamp_min(1e-10)
        q = (b / s[:, :, None, :, None]).to(torch.float8_e4m3fn)
        deq = (q.double() * s[:, :, None, :, None].double()).reshape(e, n, kk)
        return q.reshape(e, n, kk).to(device), s.float().to(device), deq

    w1, s1, d1 = blocks(w1f)
    w2, s2, d2 = blocks(w2f)
    wts, ids = _routing(gen, T, E, k, device)

    def quant(a):
        q, s = m.quantize_groups(a)
        return (q.double().reshape(a.shape[0], -1, 128) * s.double()[..., None]).reshape(a.shape)

    out = fused_moe(x, w1, w2, wts, ids, w1_scale=s1, w2_scale=s2)
    ref = reference(x, None, None, wts, ids, w1_deq=d1, w2_deq=d2, quant=quant)
    # the reference rounds the intermediates to bf16 as the kernel stores them, so both quantise
    # nearly the same values; an intermediate whose bf16 value differs (fp32 against float64
    # sums; the interpreter truncates to bf16 where torch rounds) lands one fp8 step (2^-3)
    # away with odds ~ 2^-8 / 2^-3, an expected relative L2 error of ~2% (measured: the first
    # GEMM alone is within 0.33%): every element within 5% of the output's scale, the whole
    # within 4%
    got = out.double().cpu()
    torch.testing.assert_close(got, ref, rtol=0.0, atol=0.05 * float(ref.abs().max()))
    assert float((got - ref).norm() / ref.norm()) < 0.04
    unscaled = reference(x, None, None, wts, ids, w1_deq=d1, w2_deq=d2)
    assert (out.double().cpu() - unscaled).abs().max() < 0.25 * unscaled.abs().max()


def test_alignment_by_hand(device):
    m = _mod()
    ids = torch.tensor([[2, 0], [2, 1], [2, 0]], dtype=torch.int32, device=device)
    rows, tiles = m.align_by_expert(ids, num_experts=4, block_m=2)
    # expert 0: rows 1, 5 (tile 0); expert 1: row 3 + pad (tile 1); expert 2: rows 0, 2 | 4 + pad
    assert rows.cpu().tolist()[:8] == [1, 5, 3, 6, 0, 2, 4, 6]
    assert tiles.cpu().tolist() == [0, 1, 2, 2, -1, -1, -1]  # cdiv(6, 2) + 4 tiles, bounded


def test_capture_safe_on_repeated_calls(device, gen):
    x = torch.randn(7, 32, generator=gen).to(torch.bfloat16).to(device)
    w1 = torch.randn(4, 48, 32, generator=gen).to(torch.bfloat16).to(device)
    w2 = torch.randn(4, 32, 24, generator=gen).to(torch.bfloat16).to(device)
    wts, ids = _routing(gen, 7, 4, 2, device)
    assert_capture_safe(lambda: fused_moe(x, w1, w2, wts, ids), "fused_moe")


def test_bad_shapes_are_named(device, gen):
    x = torch.randn(3, 32).to(torch.bfloat16).to(device)
    w1 = torch.randn(4, 48, 32).to(torch.bfloat16).to(device)
    w2 = torch.randn(4, 32, 20).to(torch.bfloat16).to(device)
    wts, ids = _routing(gen, 3, 4, 2, device)
    with pytest.raises(ValueError, match=r"w2 \(4, 32, 20\) do not fit"):
        fused_moe(x, w1, w2, wts, ids)
    with pytest.raises(ValueError, match="block-FP8 experts need"):
        fused_moe(x, w1, w1.new_empty(4, 32, 24), wts, ids, w1_scale=torch.ones(1))


def test_block_fp8_first_gemm_alone(device, gen):
    """The gate/up GEMM over block-FP8 weights against float64 on the same quantised operands:
    only its bf16 output rounding is left (2^-8)."""
    if not fp8_supported(torch.device(device)):
        pytest.skip("fp8 e4m3 needs compute capability >= 8.9 or the interpreter")
    m = _mod()
    T, H, n, E, k = 5, 256, 256, 4, 2
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16)
    b = (torch.randn(E, n, H, generator=gen) * 0.1).reshape(E, n // 128, 128, H // 128, 128)
    s = (b.abs().amax(dim=(2, 4)) / m.FP8_MAX).clamp_min(1e-10)
    q = (b / s[:, :, None, :, None]).to(torch.float8_e4m3fn)
    deq = (q.double() * s[:, :, None, :, None].double()).reshape(E, n, H)
    ids = torch.randint(0, E, (T, k), generator=gen).to(torch.int32)
    rows, tiles = m.align_by_expert(ids.to(device), E, 16)
    xq, xs = m.quantize_groups(x.to(device))
    up = torch.full((T * k, n), float("nan"), dtype=torch.bfloat16, device=device)
    m._gemm(xq, q.reshape(E, n, H).to(device), up, rows, tiles, None, k, True, xs,
            s.float().to(device), 16)
    xd = (xq.cpu().double().reshape(T, -1, 128) * xs.cpu().double()[..., None]).reshape(T, H)
    ref = torch.stack([xd[r // k] @ deq[int(ids.flatten()[r])].T for r in range(T * k)])
    got = up.cpu().double()
    assert not got.isnan().any()
    assert float((got - ref).norm() / ref.norm()) < 0.01
