"""The MoE / MLA operator list under TP x EP x attention DP, and the memory plan of MoE replicas."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from costmodel.batch import Batch
from costmodel.errors import ServePlanError
from costmodel.hardware import GiB
from costmodel.memory import memory_plan
from costmodel.model import CostModel
from costmodel.specs import MODEL_PRESETS


def test_bad_parallelism_is_one_clear_error():
    with pytest.raises(ServePlanError, match="ep=3 does not divide qwen3-235b-a22b's 128 experts"):
        CostModel("qwen3-235b-a22b", "h100", tp=4, ep=3)
    with pytest.raises(ServePlanError, match=r"ep=16 does not divide tp x dp = 8"):
        CostModel("qwen3-235b-a22b", "h100", tp=8, ep=16)
    with pytest.raises(ServePlanError, match="llama-3.1-8b is dense"):
        CostModel("llama-3.1-8b", "h100", tp=1, dp=2)


def test_balanced_dp_step_equals_every_rank_running_the_batch():
    cm = CostModel("deepseek-v3", "h200", tp=8, dp=2, ep=16, precision="auto")
    pre = ((512, 0),)
    rank = (pre, 32, 32 * 1500.0, 1)
    assert cm.dp_step_time_s([rank, rank]) == pytest.approx(cm.step_time_s(pre, 32, 32 * 1500.0))
    # an idle rank: the busy one's own work, the experts on half the tokens
    alone = cm.dp_step_time_s([rank, ((), 0, 0.0, 1)])
    assert alone < cm.dp_step_time_s([rank, rank])
    # the MoE layers wait for the slowest rank: a heavier second rank only adds time
    heavy = (((2048, 0),), 32, 32 * 1500.0, 1)
    assert cm.dp_step_time_s([rank, heavy]) > cm.dp_step_time_s([rank, rank])
    assert cm.dp_step_time_s([rank, heavy]) == pytest.approx(cm.dp_step_time_s([heavy, rank]))


@pytest.mark.parametrize("model, kw", [("deepseek-v3", {"tp": 8, "dp": 2, "ep": 16, "precision": "auto"}),
                                       ("qwen3-30b-a3b", {"tp": 1, "dp": 2, "ep": 2})])
def test_dp_steps_take_the_fitted_kernel_speed_scales(model, kw):
    # a balanced DP step is every rank running the batch, calibrated or not: the prefill and
    # decode kernel-speed scales (fitted from engine runs) apply to DP replicas too
    cm = CostModel(model, "h200", **kw)
    cm.eff = replace(cm.eff, prefill_time_scale=1.5, decode_time_scale=2.0)
    pre = ((512, 0),)
    rank = (pre, 32, 32 * 1500.0, 1)
    assert cm.dp_step_time_s([rank, rank]) == pytest.approx(cm.step_time_s(pre, 32, 32 * 1500.0))
    plain = CostModel(model, "h200", **kw)
    assert cm.dp_step_time_s([rank, rank]) > 1.4 * plain.dp_step_time_s([rank, rank])
    dec = ((), 64, 64 * 1500.0, 1)  # decodes only: the decode scale alone
    gpu = [replace(c.eff, host_overhead_s=0.0, host_per_seq_s=0.0) for c in (cm, plain)]
    cm.eff, plain.eff = gpu
    comm = plain._comm_time(64, 64)  # collectives keep their time
    assert cm.dp_step_time_s([dec, dec]) - comm == pytest.approx(2.0 * (plain.dp_step_time_s([dec, dec]) - comm))


def test_moe_operators_present_and_dispatch_only_under_dp():
    names = {o.name for o in CostModel("qwen3-235b-a22b", "h100", tp=8, ep=8).step(Batch((), (1000,) * 8)).ops}
    assert {"moe_router", "moe_experts"} <= names and "moe_dispatch" not in names
    ds = CostModel("deepseek-v3", "h200", tp=1, dp=8, ep=8, precision="auto")
    ops = {o.name: o for o in ds.step(Batch((), (1000,) * 8)).ops}
    assert {"moe_dispatch", "moe_combine", "shared_experts"} <= set(ops)
    assert ops["moe_experts"].count == 58 and ops["mlp_up_proj"].count == 3  # 3 leading dense layers
    # fp8 experts dispatch fp8 tokens and combine bf16: 8 tokens x top-8 x 7168
    assert ops["moe_dispatch"].comm_bytes == 58 * 8 * 8 * 7168
    assert ops["moe_combine"].comm_bytes == 2 * ops["moe_dispatch"].comm_bytes


def test_all_to_all_crossing_nodes_is_slower():
    cm = CostModel("deepseek-v3", "h200", tp=8, dp=2, ep=16, precision="auto")
    assert cm._a2a_time(1e7, 16) > 3 * cm._a2a_time(1e7, 8) > 0
    assert cm._a2a_time(1e7, 1) == 0.0


def test_expert_parallel_and_moe_tp_cost_about_the_same_on_prefill():
    """The same FLOPs either way: EP 8 runs 16 whole experts, MoE TP 8 all 128 in slivers of
    192, and pays for every routed row it does not own. vLLM 0.24's H100 table
    (moe_perf.parquet, Qwen3-235B's shape, 4096 tokens, bf16, balanced) measures 0.653 ms at
    TP 8 and 0.734 ms at EP 8: neither wins by much, TP a little."""
    tp8 = CostModel("qwen3-235b-a22b", "h100", tp=8)
    ep8 = CostModel("qwen3-235b-a22b", "h100", tp=8, ep=8)
    b = Batch(((4096, 0),))
    n = tp8.model.num_moe_layers
    t_tp = next(o.time_s for o in tp8.step(b).ops if o.name == "moe_experts") / n
    t_ep = next(o.time_s for o in ep8.step(b).ops if o.name == "moe_experts") / n
    assert t_tp == pytest.approx(0.653e-3, rel=0.2) and t_ep == pytest.approx(0.734e-3, rel=0.2)
    assert 0.8 < t_ep / t_tp < 1.4


def test_more_tokens_wake_more_experts():
    cm = CostModel("qwen3-30b-a3b", "h100", tp=1)
    t1, t64, t4k = (cm._moe_experts_time(n) for n in (1, 64, 4096))
    assert t1 < t64 < t4k
    # one token reads 8 experts' weights, 64 tokens nearly all 128: memory-bound, about 128/8 x
    assert 6 < t64 / t1 < 16


def test_memory_shards_experts_over_tp_x_dp():
    m = MODEL_PRESETS["deepseek-v3"]
    big = CostModel(m, "h200", tp=8, dp=2, ep=16, precision="auto")
    w = memory_plan(big).weights_bytes
    experts = m.num_moe_layers * m.num_experts * m.mlp_params_per_expert * (1 + 4 / 128 ** 2)
    rest = m.weight_bytes() - experts
    # attention, dense layers and shared experts split 8 ways (MLA's down-projections whole)
    assert experts / 16 + rest / 8 < w < experts / 16 + rest / 8 + 1.5 * GiB
    # EP and MoE-TP hold the same expert bytes per GPU
    q8 = memory_plan(CostModel("qwen3-235b-a22b", "h100", tp=8)).weights_bytes
    assert memory_plan(CostModel("qwen3-235b-a22b", "h100", tp=8, ep=8)).weights_bytes == pytest.approx(q8)


def test_mla_cache_is_whole_on_every_tp_gpu():
    for tp in (1, 8):
        cm = CostModel("deepseek-v3", "h200", tp=tp, precision="auto")
        assert cm.kv_bytes_per_token() == 61 * 576 * 2
    assert CostModel("deepseek-v3", "h200", tp=8, precision="auto", kv_dtype="fp8").kv_bytes_per_token() == 61 * 576


def test_per_part_precision():
    auto = CostModel("gpt-oss-120b", "h100", tp=2, precision="auto")
    assert auto.part_dtype == {"attn": "bf16", "mlp": "bf16", "experts": "mxfp4"}
    assert memory_plan(auto).weights_bytes < 0.55 * memory_plan(CostModel("gpt-oss-120b", "h100", tp=2)).weights_bytes
    # block-fp8 GEMMs run on FP8 tensor cores on Hopper, dequantised on Ampere
    h, a = CostModel("deepseek-v3", "h100", tp=8, precision="auto"), CostModel("deepseek-v3", "a100-80g", tp=8, precision="auto")
    assert h._block_fp8_gemm_time(8192, 7168, 7168) < 0.6 * a._block_fp8_gemm_time(8192, 7168, 7168)


def test_sliding_window_layers_read_less_context():
    gpt = CostModel("gpt-oss-120b", "h100", tp=2, precision="auto")
    full = CostModel(replace(MODEL_PRESETS["gpt-oss-120b"], layer_types=()), "h100", tp=2, precision="auto")
    long_ctx = ((), 64, 64 * 32000.0, 1)
    assert gpt.step_time_s(*long_ctx) < full.step_time_s(*long_ctx)
    t_g, t_f = gpt._attention_time(*long_ctx)[1], full._attention_time(*long_ctx)[1]
    assert t_g == pytest.approx(t_f / 2, rel=0.1)  # half the layers see 128 of 32k keys
    assert gpt._windowed([(300, 50)], 128) == [(128, 50), (128, 128), (44, 128)]


def test_dense_models_keep_their_operator_list():
    ops = [o.name for o in CostModel("llama-3.1-8b", "h100", tp=2).step(Batch(((100, 0),), (500,))).ops]
    assert ops == ["input_layernorm", "qkv_proj", "rope", "o_proj", "attn_allreduce",
                   "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj",
                   "mlp_allreduce", "residual_add", "embedding", "final_norm", "lm_head",
                   "logits_gather", "sampler", "attn_prefill", "attn_decode", "host_overhead"]


def test_grid_prices_like_the_formula():
    """The simulator's path against the vectorised formulas: block-fp8 GEMMs exact (a scalar
    path), the fused MoE exact up to GRID_EXACT tokens and on grid points and within its tile
    steps between them."""
    from costmodel.block_fp8 import block_fp8_gemm_time_s
    from costmodel.moe_kernels import fused_moe_time_s
    from costmodel.moe_layer import GRID, GRID_EXACT

    cm = CostModel("deepseek-v3", "h200", tp=8, precision="auto")
    for m in (1, 7, 333, 4097, 20000):
        exact = block_fp8_gemm_time_s(m=np.array([m]), n=7168, k=2048, gpu=cm.gpu, eff=cm.eff)[0]
        assert cm._block_fp8_gemm_time(m, 7168, 2048) == pytest.approx(exact, rel=1e-12)
    md = cm.model
    ep = CostModel(md, "h200", tp=8, dp=2, ep=16, precision="auto")
    for t in (1, 100, GRID_EXACT, int(GRID[GRID_EXACT + 40]), 5000, 12345):
        exact = fused_moe_time_s(num_tokens=t, hidden=md.hidden_size, inter=md.expert_ffn,
                                 topk=md.experts_per_token, num_experts=md.num_experts,
                                 gpu=ep.gpu, eff=ep.eff, precision=ep.part_dtype["experts"],
                                 tp=ep.moe_tp, ep=ep.ep, gated=md.gated_mlp)
        tol = 1e-12 if t <= GRID_EXACT or t in GRID else 0.06
        assert ep._moe_experts_time(t) == pytest.approx(exact, rel=tol)
