"""FLOP and byte counts of one iteration against hand computation, and the hot path's equality."""

from __future__ import annotations

import pytest

from costmodel.batch import Batch
from costmodel.model import CostModel

# tiny_model: 2 layers, hidden 64, 4 query heads and 2 KV heads of 16, gated FFN 128, vocab 1000.
# Batch: one 8-token prefill chunk (no cached prefix) + 2 decodes at contexts 10 and 20:
# T = 8 + 2 = 10 tokens, 3 sequences need logits. Hand counts (x 2 layers where per layer):
#   qkv_proj  n = (4 + 2*2) * 16 = 128:  2 * 10 * 128 * 64 = 163,840 per layer -> 327,680
#   o_proj    2 * 10 * 64 * 64 = 81,920 per layer                               -> 163,840
#   mlp_up    n = 2 * 128 = 256:  2 * 10 * 256 * 64 = 327,680 per layer         -> 655,360
#   mlp_down  2 * 10 * 64 * 128 = 163,840 per layer                             -> 327,680
#   lm_head   2 * 3 * 1000 * 64                                                 =  384,000
#   attn_prefill: causal pairs 8 * (0 + 9/2) = 36; 4 * 4 heads * 16 * 36 = 9,216 -> 18,432
#   attn_decode:  4 * 4 heads * 16 * (10 + 20) = 7,680 per layer                -> 15,360


def _ops(cm: CostModel, batch: Batch) -> dict:
    return {o.name: o for o in cm.step(batch).ops}


def test_flops_match_hand_count(tiny_model, toy_gpu):
    cm = CostModel(tiny_model, toy_gpu)
    ops = _ops(cm, Batch(prefill=((8, 0),), decode=(10, 20)))
    assert ops["qkv_proj"].flops == 327_680
    assert ops["o_proj"].flops == 163_840
    assert ops["mlp_up_proj"].flops == 655_360
    assert ops["mlp_down_proj"].flops == 327_680
    assert ops["lm_head"].flops == 384_000
    assert ops["attn_prefill"].flops == pytest.approx(18_432)
    # decode: 4 * 4 heads * 16 head dim * 30 cached tokens = 7,680 per layer, 2 layers
    assert ops["attn_decode"].flops == pytest.approx(15_360)
    # the four projections are 2 x parameters x tokens: (8192 + 4096 + 16384 + 8192) x 2 x 2 x 10
    proj = sum(ops[n].flops for n in ("qkv_proj", "o_proj", "mlp_up_proj", "mlp_down_proj"))
    assert proj == 36_864 * 2 * 2 * 10


def test_bytes_match_hand_count(tiny_model, toy_gpu):
    cm = CostModel(tiny_model, toy_gpu)
    ops = _ops(cm, Batch(prefill=((8, 0),), decode=(10, 20)))
    # qkv weights 128 x 64 bf16 = 16,384 B; activations in + out 10 x (64 + 128) x 2 = 3,840 B
    assert ops["qkv_proj"].bytes == 2 * (16_384 + 3_840)
    # RMSNorm reads and writes 10 x 64 bf16 and reads its 64 weights: 2,560 + 128 per layer
    assert ops["input_layernorm"].bytes == 2 * (10 * 64 * 2 * 2 + 64 * 2)
    # decode attention reads K and V: 30 tokens x 2 x 2 KV heads x 16 x 2 B = 3,840 per layer
    assert ops["attn_decode"].bytes == 2 * 3_840
    # prefill attention reads the chunk's own K and V: 8 x 2 x 2 x 16 x 2 = 1,024 per layer
    assert ops["attn_prefill"].bytes == 2 * 1_024


def test_tp_splits_heads_and_adds_allreduces(tiny_model, toy_gpu):
    cm = CostModel(tiny_model, toy_gpu, tp=2)
    ops = _ops(cm, Batch(prefill=((8, 0),)))
    # per GPU: 2 query heads and 1 KV head of 16 -> qkv n = (2 + 2) * 16 = 64
    assert ops["qkv_proj"].flops == 2 * 8 * 64 * 64 * 2
    # two all-reduces per layer of T x hidden bf16 = 8 x 64 x 2 = 1,024 B
    assert ops["attn_allreduce"].comm_bytes == 1_024 * 2
    assert ops["mlp_allreduce"].comm_bytes == 1_024 * 2


@pytest.mark.parametrize("prefill,decode", [
    (((8, 0),), (10, 20)),
    (((300, 0), (17, 1024)), ()),
    ((), tuple(range(100, 3300, 100))),
])
def test_hot_path_equals_step(tiny_model, toy_gpu, prefill, decode):
    cm = CostModel(tiny_model, toy_gpu)
    b = Batch(prefill=prefill, decode=decode)
    br = cm.step(b)
    assert cm.step_time_s(prefill, len(decode), sum(decode)) == pytest.approx(br.step_time_s, rel=1e-12)
    assert sum(o.time_s for o in br.ops) == pytest.approx(br.step_time_s, rel=1e-12)


def test_real_model_hot_path_equals_step():
    cm = CostModel("llama-3.1-70b", "h100", tp=4)
    b = Batch(prefill=((2048, 0),), decode=(1500,) * 64)
    assert cm.step_time_s(b.prefill, 64, 64 * 1500) == pytest.approx(cm.step(b).step_time_s, rel=1e-12)
