"""The torch MLA module: the absorbed path (W_UK folded into the query, W_UV into the output,
attention over the latent cache) computes what the up-projected attention computes, for a
decode step and a k + 1 verify step, and a prefill equals the absorbed path over its own cache.
fp32 on the CPU, tolerance 1e-4 relative to the output's scale."""

from __future__ import annotations

import pytest
import torch

from validate.capture import assert_capture_safe
from validate.mla_reference import MLADims, MLAModule

DIMS = MLADims(hidden=64, num_heads=4, q_lora_rank=24, kv_lora_rank=32, qk_nope_dim=16,
               qk_rope_dim=8, v_head_dim=16)


def _close(a, b, rel=1e-4):
    err = float((a - b).abs().max())
    assert err <= rel * float(b.abs().max()), err


@pytest.mark.parametrize("q_len", [1, 3])
@pytest.mark.parametrize("q_lora", [24, 0])
def test_absorbed_decode_equals_up_projected_attention(q_len, q_lora):
    d = MLADims(**{**DIMS.__dict__, "q_lora_rank": q_lora})
    m = MLAModule(d, dtype=torch.float32, seed=1)
    B, ctx = 3, 21
    gen = torch.Generator().manual_seed(2)
    cache = torch.randn(B, ctx, d.latent, generator=gen)
    x = torch.randn(B * q_len, d.hidden, generator=gen)
    pos = torch.arange(ctx - q_len, ctx).repeat(B)
    c1, c2 = cache.clone(), cache.clone()
    out = m.absorbed(x, c1, q_len, pos)
    ref = m.naive_decode(x, c2, q_len, pos)
    assert out.shape == (B * q_len, d.hidden)
    _close(out, ref)
    assert torch.equal(c1, c2)  # both wrote the new tokens' latents


def test_prefill_equals_the_absorbed_path_over_its_own_latents():
    m = MLAModule(DIMS, dtype=torch.float32, seed=3)
    n, L = 2, 7
    x = torch.randn(n * L, DIMS.hidden, generator=torch.Generator().manual_seed(4))
    pos = torch.arange(L).repeat(n)
    pre = m.prefill(x, n, pos)
    cache = torch.zeros(n, L, DIMS.latent)
    _close(m.absorbed(x, cache, L, pos), pre)


def test_mla_module_is_capture_safe():
    m = MLAModule(DIMS, dtype=torch.float32)
    cache = torch.zeros(2, 9, DIMS.latent)
    x = torch.randn(2, DIMS.hidden)
    pos = torch.tensor([8, 8])
    xp = torch.randn(10, DIMS.hidden)
    pp = torch.arange(5).repeat(2)
    assert_capture_safe(lambda: m.absorbed(x, cache, 1, pos), "mla absorbed")
    assert_capture_safe(lambda: m.prefill(xp, 2, pp), "mla prefill")
