"""Fused-MoE, router, shared-expert and EP all-to-all times (costmodel.moe_kernels): routing
counts worked by hand, the closed-form rank adjustment against the collector's one-at-a-time
loop, shapes that must cost more or less, scalar and array forms, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from costmodel.arch_defaults import arch_efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.moe_kernels import (
    _fill_rows,
    _power_law_counts,
    ep_alltoall_time_s,
    fused_moe_time_s,
    moe_kernel_family,
    moe_routing_stats,
    router_time_s,
    shared_experts_time_s,
)

H100 = load_gpu("h100")
EFF = arch_efficiencies("hopper")
QWEN3_235B = dict(hidden=4096, inter=1536, topk=8, num_experts=128)


def test_balanced_routing_by_hand():
    # 1 token, 8 experts, top-2: stride ceil(8 / 2) = 4, picks experts 0 and 4; EP 2 holds 0-3
    s = moe_routing_stats(num_tokens=1, num_experts=8, topk=2, ep=2)
    assert (s.rows, s.active) == (1.0, 1.0)
    assert s.padded[0] == 16.0  # one row padded to a 16-row tile
    assert s.blocks[0] == 2.0  # two experts hold a row, each one tile, on all ranks
    # 8 tokens: token i picks i and i + 4 (mod 8): every expert twice, rank 0 holds 4 of them
    s = moe_routing_stats(num_tokens=8, num_experts=8, topk=2, ep=2)
    assert (s.rows, s.active) == (8.0, 4.0)
    assert moe_routing_stats(num_tokens=8, num_experts=8, topk=2).rows == 16.0


def _balanced_counts_by_token(t, e, k):
    """The pattern token by token: ids (base_i + j * stride) % E, each expert once per token."""
    stride = -(-e // k)
    counts = np.zeros(e, dtype=np.int64)
    for i in range(t):
        base = i if t >= stride else (i * stride) // t
        for x in {(base + j * stride) % e for j in range(k)}:
            counts[x] += 1
    return counts


def test_balanced_counts_closed_form_matches_token_by_token():
    from costmodel.moe_kernels import _balanced_counts

    shapes = [(t, e, k) for e, k in ((8, 2), (6, 4), (10, 4), (128, 8), (256, 8), (60, 7), (32, 32))
              for t in (1, 2, 3, 5, 7, 31, 32, 33, 64, 100, 257, 1000)]
    for t, e, k in shapes:
        got, want = _balanced_counts(t, e, k), _balanced_counts_by_token(t, e, k)
        assert np.array_equal(got, want), (t, e, k, got, want)
    assert len(shapes) == 84


def _fill_slow(v, units, cap):
    v = v.copy()
    for _ in range(abs(units)):
        if units > 0:
            ok = np.flatnonzero(v < cap)
            if ok.size == 0:
                break
            v[ok[np.argmin(v[ok])]] += 1
        else:
            ok = np.flatnonzero(v > 0)
            v[ok[np.argmax(v[ok])]] -= 1
    return v


def test_fill_matches_the_collectors_loop():
    rng = np.random.default_rng(3)
    for _ in range(200):
        v = rng.integers(0, 20, size=rng.integers(1, 12))
        units = int(rng.integers(-int(v.sum()), 40))
        got, want = _fill_rows(v[None, :], [units], 25)[0], _fill_slow(v, units, 25)
        assert np.array_equal(got, want), (v, units)  # the same expert gets each unit


def test_filling_many_rows_at_once_matches_one_row_at_a_time():
    """Rows of one call fill (or drain) independently, each by its own units, values above the
    cap included (they take nothing)."""
    rng = np.random.default_rng(4)
    draws = 0
    for _ in range(100):
        v = rng.integers(0, 30, size=(int(rng.integers(1, 6)), int(rng.integers(1, 10))))
        units = rng.integers(-v.sum(axis=1), 40)
        got = _fill_rows(v, units, 25)
        for row, u, g in zip(v, units, got, strict=True):
            assert np.array_equal(g, _fill_slow(row, int(u), 25)), (row, u, g)
            draws += 1
    assert draws > 250


@pytest.mark.parametrize("t, e, k, ep", [(1, 128, 8, 8), (16, 128, 8, 1), (4096, 256, 8, 16),
                                         (3, 512, 22, 64)])
def test_power_law_draws_keep_every_routed_row(t, e, k, ep):
    rng = np.random.default_rng(0)
    locals_, everyones = _power_law_counts(t, e, k, ep, 1.2, rng, draws=5)
    assert locals_.shape == (5, e // ep) and everyones.shape == (5, e)
    for local, everyone in zip(locals_, everyones, strict=True):
        assert everyone.sum() == t * k and everyone.max() <= t and everyone.min() >= 0
        assert local.sum() == everyone.reshape(ep, -1).sum(1).max()


def test_skewed_routing_is_deterministic_and_loads_the_busiest_rank_more():
    kw = dict(num_tokens=4096, num_experts=128, topk=8, ep=8)
    a = moe_routing_stats(**kw, routing="power_law_1.2")
    assert a == moe_routing_stats(**kw, routing="power_law_1.2")
    assert a.rows > moe_routing_stats(**kw).rows  # balanced: 4096 x 8 / 8 rows per rank


def test_fused_moe_grows_with_tokens_and_shrinks_with_ep():
    t = [fused_moe_time_s(num_tokens=n, gpu=H100, eff=EFF, **QWEN3_235B) for n in (1, 8, 64, 1024, 8192)]
    assert all(b > a for a, b in zip(t, t[1:], strict=False))
    # 16 tokens x top-8 touch all 128 experts: the weights (4.8 GB bf16) at HBM speed, ~1.5 ms
    assert 1.2e-3 < fused_moe_time_s(num_tokens=16, gpu=H100, eff=EFF, **QWEN3_235B) < 2.0e-3
    ep = [fused_moe_time_s(num_tokens=64, ep=e, gpu=H100, eff=EFF, **QWEN3_235B) for e in (1, 2, 8)]
    assert ep[0] > ep[1] > ep[2]
    fp8 = fused_moe_time_s(num_tokens=64, precision="fp8_block", gpu=H100, eff=EFF, **QWEN3_235B)
    assert fp8 < ep[0]  # half the weight bytes in the weight-bound regime


def test_non_gated_experts_cost_less():
    kw = dict(num_tokens=64, gpu=H100, eff=EFF, **QWEN3_235B)
    assert fused_moe_time_s(**kw, gated=False) < 0.8 * fused_moe_time_s(**kw)


def test_array_form_equals_scalars():
    n = np.array([1, 32, 512, 4096])
    arr = fused_moe_time_s(num_tokens=n, gpu=H100, eff=EFF, ep=4, routing="power_law_1.01",
                           precision="mxfp4", **QWEN3_235B)
    one = [fused_moe_time_s(num_tokens=int(x), gpu=H100, eff=EFF, ep=4, routing="power_law_1.01",
                            precision="mxfp4", **QWEN3_235B) for x in n]
    assert np.allclose(arr, one, rtol=1e-12)
    assert fused_moe_time_s(num_tokens=0, gpu=H100, eff=EFF, **QWEN3_235B) == 0.0


def test_kernel_families():
    assert moe_kernel_family("bf16") == "triton"
    assert moe_kernel_family("fp8") == "cutlass_fp8"
    assert moe_kernel_family("fp8_block", "vllm_fp8moe_flashinfer_cutlass_flashinferexperts") == "cutlass"
    assert moe_kernel_family("fp8_block", "vllm_fp8moe_triton_tritonexperts") == "triton_fp8"
    assert moe_kernel_family("mxfp4", "vllm_gptossmxfp4moe_triton_oaitritonmxfp4expertsmonolithic") == "oai"
    assert moe_kernel_family("int4", "marlin") == "marlin"


@pytest.mark.parametrize("kw, says", [
    (dict(topk=9, num_experts=8), "top-k 9 with 8 experts"),
    (dict(num_experts=128, ep=3), "expert-parallel size 3 does not divide 128 experts"),
    (dict(num_experts=128, tp=5), "tensor-parallel size 5 does not divide"),
    (dict(num_experts=128, precision="fp4"), "MoE precision 'fp4'"),
    (dict(num_experts=128, routing="zipf"), "MoE routing 'zipf'"),
])
def test_bad_input_says_what_is_accepted(kw, says):
    args = {**QWEN3_235B, **kw}
    with pytest.raises(ServePlanError, match=says):
        fused_moe_time_s(num_tokens=4, gpu=H100, eff=EFF, **args)


def test_router_shared_experts_and_alltoall():
    r = router_time_s(num_tokens=256, hidden=7168, num_experts=256, gpu=H100, eff=EFF)
    assert 0 < r < 50e-6
    s1 = shared_experts_time_s(num_tokens=256, hidden=7168, inter=2048, gpu=H100, eff=EFF)
    s8 = shared_experts_time_s(num_tokens=256, hidden=7168, inter=2048, tp=8, gpu=H100, eff=EFF)
    assert s8 < s1
    sb = shared_experts_time_s(num_tokens=256, hidden=7168, inter=2048, precision="fp8_block",
                               gpu=H100, eff=EFF)
    assert sb < s1 < shared_experts_time_s(num_tokens=256, hidden=7168, inter=2048,
                                           precision="fp8_block", graph=False, gpu=H100, eff=EFF)
    assert ep_alltoall_time_s(num_tokens=256, hidden=7168, topk=8, ep=1, gpu=H100, eff=EFF) == 0.0
    nv = ep_alltoall_time_s(num_tokens=256, hidden=7168, topk=8, ep=8, gpu=H100, eff=EFF)
    net = ep_alltoall_time_s(num_tokens=256, hidden=7168, topk=8, ep=16, gpu=H100, eff=EFF)
    assert 0 < nv < net  # 16 ranks cross the NIC (50 GB/s) instead of NVLink
    # 256 tokens x 7168 x 2 bytes to ~7 of 8 ranks, 7/8 remote, twice: ~45 MB / (450 GB/s x eff)
    assert 40e-6 < nv < 300e-6


def test_array_calls_keep_routing_per_input_and_each_row_is_its_own_scalar_call(monkeypatch):
    """A fit predicts the same rows at every step: the per-row routing arrays are kept per input.
    A changed routing, precision or token count is a new input, and every row still equals the
    scalar call of its own shape."""
    from costmodel import moe_kernels

    monkeypatch.setattr(moe_kernels, "_ROUTING_ARRAYS", {})
    tokens = np.array([1, 16, 300, 4096, 16])
    routing = np.array(["balanced", "power_law_1.2", "power_law_1.01", "power_law_1.2", "balanced"], dtype=object)
    prec = np.array(["bf16", "fp8", "fp8_block", "bf16", "fp8"], dtype=object)

    def call(t=tokens, r=routing, p=prec):
        return fused_moe_time_s(num_tokens=t, gpu=H100, eff=EFF, ep=np.array([1, 2, 8, 8, 1]),
                                routing=r, precision=p, **QWEN3_235B)

    def scalar(j, t=tokens, r=routing, p=prec):
        return fused_moe_time_s(num_tokens=int(t[j]), gpu=H100, eff=EFF, ep=[1, 2, 8, 8, 1][j],
                                routing=str(r[j]), precision=str(p[j]), **QWEN3_235B)

    first = call()
    assert np.array_equal(call(), first) and len(moe_kernels._ROUTING_ARRAYS) == 1
    np.testing.assert_allclose(first, [scalar(j) for j in range(5)], rtol=1e-12)
    for kw in ({"r": np.array(["power_law_1.2"] * 5, dtype=object)}, {"p": np.array(["bf16"] * 5, dtype=object)},
               {"t": tokens * 2}):
        got = call(**kw)
        np.testing.assert_allclose(got, [scalar(j, **kw) for j in range(5)], rtol=1e-12)
        assert not np.array_equal(got, first)
    assert len(moe_kernels._ROUTING_ARRAYS) == 4
    for a in moe_kernels._ROUTING_ARRAYS.values():
        assert not any(x.flags.writeable for x in a)
