"""Decode attention: FA3's varlen tile scheduler walks the whole batch in every CTA, a time per
sequence that the SMs do not share (hand-computed differences of the fixed time)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from costmodel import attention as at
from costmodel.hardware import load_gpu
from costmodel.roofline import Efficiencies, clock_scale


def _cta_part(n_seqs, kv_heads, head_dim, cta_s):
    """Seconds attn_decode_cta_s contributes: decode_attn_time_s with it at `cta_s` minus at 0."""
    gpu = load_gpu("h100-sxm")
    on = dataclasses.replace(Efficiencies(), attn_decode_cta_s=cta_s)
    off = dataclasses.replace(Efficiencies(), attn_decode_cta_s=0.0)
    args = (n_seqs, n_seqs * 4.0, 1, kv_heads * 8, kv_heads, head_dim, gpu)
    scalar = at.decode_attn_time_s(*args, on) - at.decode_attn_time_s(*args, off)
    array = (at.decode_attn_time_s_v(*args, on, 2.0) - at.decode_attn_time_s_v(*args, off, 2.0))
    return scalar, float(np.asarray(array).reshape(-1)[0]), clock_scale(gpu)


@pytest.mark.parametrize("n_seqs,scan", [(512, 1.0), (1024, 0.5)])
def test_scheduler_walk_is_charged_per_sequence(n_seqs, scan):
    """4 keys each: one KV tile, no split (graph: 512 x 1 x 4 x 1.1 / 132 tiles per SM >= 1),
    so CTAs = sequences x KV heads; at head dim 64 each costs 0.75 x attn_decode_cta_s, and
    each sequence `scan` x attn_decode_cta_s more (1 with the split scheduler inside vLLM's
    graph, 0.5 outside): 1 us x (512 x 2 x 0.75 + 512) = 1,280 us; 1024: 2,048 us."""
    scalar, array, cs = _cta_part(n_seqs, 2, 64, 1e-6)
    want = 1e-6 * (n_seqs * 2 * 0.75 + n_seqs * scan) * cs
    assert scalar == pytest.approx(want, rel=1e-9)
    assert array == pytest.approx(scalar, rel=1e-12)


def test_walk_does_not_scale_with_kv_heads():
    """Doubling the KV heads doubles the CTAs' share but not the walk's: 8 vs 4 KV heads at
    256 sequences differ by 256 x 4 x 0.75 x cta_s exactly."""
    a, _, cs = _cta_part(256, 8, 64, 1e-6)
    b, _, _ = _cta_part(256, 4, 64, 1e-6)
    assert a - b == pytest.approx(1e-6 * 256 * 4 * 0.75 * cs, rel=1e-9)
    assert b == pytest.approx(1e-6 * (256 * 4 * 0.75 + 256) * cs, rel=1e-9)
