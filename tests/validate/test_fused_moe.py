"""The Triton fused-MoE kernel against the torch reference (a loop over experts), under Triton's
interpreter on a CPU or compiled on a GPU.

Shapes are tiny and off the block sizes on purpose: 8 experts, top-2, hidden 64, expert FFN 32,
13 tokens (26 routed rows: expert groups that end mid-block, padding blocks, K tails under the
interpreter's 32-wide K steps). Routing is random, so some experts get no rows. Tolerances:
fp32 1e-4 (both sides accumulate in fp32), bf16 2e-2 relative to the output's scale (the
intermediate rounds to bf16 in both), block fp8 2e-2 against the same fp8 weights dequantised
and the activations quantised per group of 128 as the kernel quantises them.
"""

from __future__ import annotations

import pytest
import torch

from validate.capture import assert_capture_safe
from validate.kernels import fused_experts
from validate.kernels._device import fp8_supported
from validate.kernels.fused_moe import moe_align, quantise_block_weights
from validate.moe_reference import balanced_topk, dequantise_blocks, torch_fused_moe

E, K_TOP, H, INTER, T = 8, 2, 64, 32, 13


def _routing(gen, tokens=T, experts=E, k=K_TOP, device="cpu"):
    logits = torch.randn(tokens, experts, generator=gen)
    w, ids = torch.topk(torch.softmax(logits, -1), k, dim=-1)
    return (w / w.sum(-1, keepdim=True)).to(device), ids.to(torch.int32).to(device)


def _weights(gen, dtype, device, experts=E, hidden=H, inter=INTER, gated=True):
    w1 = torch.randn(experts, (2 if gated else 1) * inter, hidden, generator=gen) * hidden ** -0.5
    w2 = torch.randn(experts, hidden, inter, generator=gen) * inter ** -0.5
    return w1.to(dtype).to(device), w2.to(dtype).to(device)


def _close(out, ref, rel):
    out, ref = out.float().cpu(), ref.float().cpu()
    assert not out.isnan().any()
    err = float((out - ref).abs().max())
    scale = float(ref.abs().max())
    assert err <= rel * scale, f"max |triton - torch| = {err:.3g} of {scale:.3g}"


@pytest.mark.parametrize("dtype,rel", [(torch.float32, 1e-4), (torch.bfloat16, 2e-2)],
                         ids=["fp32", "bf16"])
def test_fused_moe_matches_the_torch_loop_over_experts(dtype, rel, device, gen):
    x = torch.randn(T, H, generator=gen).to(dtype).to(device)
    w1, w2 = _weights(gen, dtype, device)
    tw, ids = _routing(gen, device=device)
    out = fused_experts(x, w1, w2, tw, ids)
    assert out.shape == (T, H) and out.dtype == dtype
    _close(out, torch_fused_moe(x, w1, w2, tw, ids), rel)


def test_expert_parallel_share_sums_to_the_whole_layer(device, gen):
    """Two ranks of 4 experts each: each computes its own experts' rows, and their outputs add
    up to the layer on one GPU (rows routed elsewhere contribute nothing)."""
    x = torch.randn(T, H, generator=gen).to(device)
    w1, w2 = _weights(gen, torch.float32, device)
    tw, ids = _routing(gen, device=device)
    whole = fused_experts(x, w1, w2, tw, ids)
    parts = [fused_experts(x, w1[r * 4:(r + 1) * 4], w2[r * 4:(r + 1) * 4], tw, ids, num_experts=E,
                       expert_offset=r * 4) for r in range(2)]
    _close(parts[0] + parts[1], whole, 1e-4)
    ref0 = torch_fused_moe(x, w1[:4], w2[:4], tw, ids, expert_offset=0)
    _close(parts[0], ref0, 1e-4)


def test_block_fp8_experts(device, gen):
    if not fp8_supported(torch.device(device)):
        pytest.skip("fp8 needs compute capability >= 8.9 or the interpreter")
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16).to(device)
    w1, w2 = _weights(gen, torch.float32, device)
    (q1, s1), (q2, s2) = quantise_block_weights(w1), quantise_block_weights(w2)
    assert s1.shape == (E, 1, 1) and q1.dtype == torch.float8_e4m3fn
    tw, ids = _routing(gen, device=device)
    out = fused_experts(x, q1, q2, tw, ids, w1_scale=s1, w2_scale=s2)
    ref = torch_fused_moe(x, q1, q2, tw, ids, w1_scale=s1, w2_scale=s2)
    _close(out, ref, 2e-2)
    # the dequantised weights are the fp32 ones to fp8's precision
    assert float((dequantise_blocks(q1, s1, torch.float32) - w1).abs().max()) < 0.07 * float(w1.abs().max())


def test_align_sorts_rows_by_expert_and_pads_each_to_the_block(device, gen):
    _, ids = _routing(gen, tokens=13, device=device)
    sorted_ids, expert_ids, n_padded = moe_align(ids, E, 16)
    rows = ids.reshape(-1).long().cpu()
    s, ex, n = sorted_ids.cpu().long(), expert_ids.cpu().long(), int(n_padded.cpu())
    counts = torch.bincount(rows, minlength=E)
    assert n == int(((counts + 15) // 16 * 16).sum())
    real = s[:n][s[:n] < rows.numel()]
    assert sorted(real.tolist()) == list(range(rows.numel()))  # every routed row exactly once
    for b in range(n // 16):  # each block's rows all go to the block's expert
        blk = s[b * 16:(b + 1) * 16]
        assert (rows[blk[blk < rows.numel()]] == ex[b]).all()


def test_balanced_routing_spreads_tokens_evenly():
    ids = balanced_topk(16, 8, 2)
    assert ids.shape == (16, 2)
    assert (ids[:, 0] != ids[:, 1]).all()
    assert torch.bincount(ids.reshape(-1).long(), minlength=8).tolist() == [4] * 8


def test_fused_moe_is_capture_safe(device, gen):
    x = torch.randn(T, H, generator=gen).to(torch.bfloat16).to(device)
    w1, w2 = _weights(gen, torch.bfloat16, device)
    tw, ids = _routing(gen, device=device)
    assert_capture_safe(lambda: fused_experts(x, w1, w2, tw, ids, num_experts=16, expert_offset=8),
                        "fused_moe (expert parallel)")


@pytest.mark.parametrize("change,match", [
    ("topk", r"top_k=9 with 8 experts; expected 1 <= top_k <= experts"),
    ("w2_hidden", r"w2.shape=\(8, 48, 32\); expected \[E, H=64, I\]"),
    ("w1_inter", r"w1.shape=\(8, 60, 64\); expected \[E, 64, 64\]"),
    ("ids_tokens", r"topk_ids \(12, 2\) and topk_weights \(13, 2\); expected both \[T=13, top_k\]"),
    ("offset", r"expert_offset=6 with 8 local experts of 8"),
    ("scales", r"w1_scale=None; fp8 weights need fp32 block scales"),
])
def test_bad_inputs_are_one_clear_error(change, match, device, gen):
    x = torch.randn(T, H, generator=gen).to(device)
    w1, w2 = _weights(gen, torch.float32, device)
    tw, ids = _routing(gen, device=device)
    kw = {}
    if change == "topk":
        tw, ids = torch.ones(T, 9, device=device), torch.zeros(T, 9, dtype=torch.int32, device=device)
    elif change == "w2_hidden":
        w2 = w2[:, :48]
    elif change == "w1_inter":
        w1 = w1[:, :60]
    elif change == "ids_tokens":
        ids = ids[:12]
    elif change == "offset":
        kw = {"expert_offset": 6}
    elif change == "scales":
        if not fp8_supported(torch.device(device)):
            pytest.skip("fp8 needs compute capability >= 8.9 or the interpreter")
        w1, w2 = w1.to(torch.float8_e4m3fn), w2.to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=match) as err:
        fused_experts(x, w1, w2, tw, ids, **kw)
    assert "\n" not in str(err.value)
