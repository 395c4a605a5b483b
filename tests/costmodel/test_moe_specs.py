"""MoE / MLA / sliding-window model specs: published totals, config.json parsing, bad input.

References (each model's card or technical report):
- DeepSeek-V3 (arXiv 2412.19437): 671B total, 37B activated per token; MLA caches 512 + 64
  elements per token per layer (70,272 bytes in bf16 over 61 layers).
- Kimi-K2 (moonshotai/Kimi-K2-Instruct card): 1T total, 32B activated.
- Qwen3 (Qwen3 technical report): Qwen3-235B-A22B 235B / 22B, Qwen3-30B-A3B 30.5B / 3.3B.
- gpt-oss model card (OpenAI, 2025-08): gpt-oss-120b 116.83B / 5.13B, gpt-oss-20b 20.91B /
  3.61B; checkpoints of ~60.8 GiB and ~12.8 GiB with MXFP4 experts.
- Mixtral of Experts (arXiv 2401.04088): 46.7B total, 12.9B active.
"""

from __future__ import annotations

import json

import pytest

from costmodel.errors import ServePlanError
from costmodel.hardware import GiB
from costmodel.model_spec import ModelSpec
from costmodel.specs import MODEL_PRESETS, load_model

PUBLISHED = {  # name: (total params, active params, relative tolerance)
    "deepseek-v3": (671e9, 37e9, 0.02),
    "deepseek-r1": (671e9, 37e9, 0.02),
    "kimi-k2": (1.04e12, 32e9, 0.03),
    "qwen3-235b-a22b": (235e9, 22e9, 0.025),
    "qwen3-30b-a3b": (30.5e9, 3.3e9, 0.02),
    "gpt-oss-120b": (116.83e9, 5.13e9, 0.01),
    "gpt-oss-20b": (20.91e9, 3.61e9, 0.01),
    "mixtral-8x7b": (46.7e9, 12.9e9, 0.015),  # Mistral counts the embedding lookup as active
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_parameter_totals(name):
    total, active, rel = PUBLISHED[name]
    m = MODEL_PRESETS[name]
    assert m.num_params == pytest.approx(total, rel=rel)
    # OpenAI counts the unembedding but not the input embedding (a row lookup) as active
    lookup = m.vocab_size * m.hidden_size if name.startswith("gpt-oss") else 0
    assert m.active_params - lookup == pytest.approx(active, rel=rel)


def test_weight_bytes_follow_per_part_precision():
    # gpt-oss: MXFP4 experts (4.25 bits), bf16 attention and embeddings: the published checkpoints
    assert MODEL_PRESETS["gpt-oss-120b"].weight_bytes() / GiB == pytest.approx(60.8, rel=0.02)
    assert MODEL_PRESETS["gpt-oss-20b"].weight_bytes() / GiB == pytest.approx(12.8, rel=0.02)
    # DeepSeek-V3: block-fp8 everywhere but embeddings / LM head (2 x 0.93B in bf16)
    ds = MODEL_PRESETS["deepseek-v3"]
    emb = 2 * 129280 * 7168
    assert ds.weight_bytes() == pytest.approx((ds.num_params - emb) * (1 + 4 / 128 ** 2) + emb * 2, rel=1e-3)
    # Qwen3-235B-A22B is a bf16 checkpoint
    q = MODEL_PRESETS["qwen3-235b-a22b"]
    assert q.weight_bytes() == pytest.approx(2 * q.num_params)


def test_kv_elements_per_token():
    # MLA: the latent (512) and the rope key (64) once per layer, not K and V per head
    assert MODEL_PRESETS["deepseek-v3"].kv_elems_per_token() == 61 * (512 + 64)
    assert MODEL_PRESETS["deepseek-v3"].kv_elems_per_token() * 2 == 70272
    # GQA: 94 layers x 2 x 4 KV heads x 128
    assert MODEL_PRESETS["qwen3-235b-a22b"].kv_elems_per_token() == 94 * 2 * 4 * 128
    # gpt-oss: only the 18 full-attention layers grow with the context (sliding ones keep 128)
    g = MODEL_PRESETS["gpt-oss-120b"]
    assert g.num_sliding_layers == 18 and g.sliding_window == 128 and g.attention_sinks
    assert g.kv_elems_per_token() == 18 * 2 * 8 * 64


def test_moe_fields_of_presets():
    ds = MODEL_PRESETS["deepseek-v3"]
    assert (ds.num_experts, ds.experts_per_token, ds.expert_ffn, ds.num_shared_experts,
            ds.first_dense_layers, ds.router) == (256, 8, 2048, 1, 3, "sigmoid")
    assert (ds.q_lora_rank, ds.kv_lora_rank, ds.qk_rope_head_dim, ds.qk_nope_head_dim,
            ds.v_head_dim) == (1536, 512, 64, 128, 128)
    assert ds.dtype_of("experts") == "fp8_block"
    k2 = MODEL_PRESETS["kimi-k2"]
    assert (k2.num_experts, k2.num_heads, k2.first_dense_layers) == (384, 64, 1)
    assert MODEL_PRESETS["gpt-oss-120b"].dtype_of("experts") == "mxfp4"
    assert MODEL_PRESETS["gpt-oss-120b"].dtype_of("attn") == "bf16"
    assert load_model("Qwen/Qwen3-235B-A22B") is MODEL_PRESETS["qwen3-235b-a22b"]
    assert load_model("mixtral") is MODEL_PRESETS["mixtral-8x7b"]


DEEPSEEK_V3 = {  # deepseek-ai/DeepSeek-V3 config.json, as published (MTP and rope-scaling keys kept)
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "hidden_act": "silu",
    "hidden_size": 7168, "intermediate_size": 18432, "moe_intermediate_size": 2048,
    "num_hidden_layers": 61, "num_attention_heads": 128, "num_key_value_heads": 128,
    "n_shared_experts": 1, "n_routed_experts": 256, "num_experts_per_tok": 8, "ep_size": 1,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536, "qk_rope_head_dim": 64,
    "v_head_dim": 128, "qk_nope_head_dim": 128, "topk_method": "noaux_tc", "n_group": 8,
    "topk_group": 4, "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "num_nextn_predict_layers": 1, "vocab_size": 129280,
    "max_position_embeddings": 163840, "tie_word_embeddings": False,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]},
}
QWEN3_235B = {
    "architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 12288, "moe_intermediate_size": 1536,
    "num_hidden_layers": 94, "num_attention_heads": 64, "num_key_value_heads": 4, "head_dim": 128,
    "num_experts": 128, "num_experts_per_tok": 8, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "norm_topk_prob": True, "output_router_logits": False, "router_aux_loss_coef": 0.001,
    "vocab_size": 151936, "max_position_embeddings": 40960, "tie_word_embeddings": False,
}
GPT_OSS_120B = {
    "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_act": "silu",
    "hidden_size": 2880, "intermediate_size": 2880, "num_hidden_layers": 36,
    "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 64,
    "num_local_experts": 128, "experts_per_token": 4, "num_experts_per_tok": 4,
    "sliding_window": 128, "attention_bias": True, "swiglu_limit": 7.0,
    "layer_types": ["sliding_attention", "full_attention"] * 18, "output_router_logits": False,
    "router_aux_loss_coef": 0.9, "vocab_size": 201088, "max_position_embeddings": 131072,
    "tie_word_embeddings": False,
    "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]},
}
_SKIP = {"name", "hf_id", "max_position"}


def _write(tmp_path, cfg):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    return str(p)


@pytest.mark.parametrize("cfg,preset", [(DEEPSEEK_V3, "deepseek-v3"), (QWEN3_235B, "qwen3-235b-a22b"),
                                        (GPT_OSS_120B, "gpt-oss-120b")])
def test_config_json_matches_preset(tmp_path, cfg, preset):
    spec = load_model(_write(tmp_path, cfg))
    ref = MODEL_PRESETS[preset]
    for f in ModelSpec.__dataclass_fields__:
        if f not in _SKIP:
            assert getattr(spec, f) == getattr(ref, f), f


def test_top_k_above_expert_count_is_refused(tmp_path):
    with pytest.raises(ServePlanError, match=r"num_experts_per_tok=300 is more than the 256 experts"):
        load_model(_write(tmp_path, {**DEEPSEEK_V3, "num_experts_per_tok": 300}))
    with pytest.raises(ServePlanError, match="experts_per_token=9"):
        ModelSpec("x", 2, 64, 4, 4, 16, 128, 100, num_experts=8, experts_per_token=9)


def test_unknown_moe_key_is_named(tmp_path):
    with pytest.raises(ServePlanError, match=r"unknown mixture-of-experts key\(s\) 'expert_capacity_factor'"):
        load_model(_write(tmp_path, {**QWEN3_235B, "expert_capacity_factor": 1.25}))


def test_unsupported_moe_architecture_is_refused(tmp_path):
    cfg = {**QWEN3_235B, "architectures": ["FooMoeForCausalLM"]}
    with pytest.raises(ServePlanError, match="supported: DeepseekV3ForCausalLM"):
        load_model(_write(tmp_path, cfg))


def test_interleaved_moe_layers_are_refused(tmp_path):
    with pytest.raises(ServePlanError, match="decoder_sparse_step"):
        load_model(_write(tmp_path, {**QWEN3_235B, "decoder_sparse_step": 2}))
