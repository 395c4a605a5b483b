"""Mixture-of-experts presets, each from its published config.json (Hugging Face ids in hf_id).

Published totals these reproduce (tests/costmodel/test_moe_specs.py): DeepSeek-V3/R1 671B total
and 37B active (the main model; the 14B multi-token-prediction module is not served), Kimi-K2
1.04T / 32B, Qwen3-235B-A22B 235B / 22B, Qwen3-30B-A3B 30.5B / 3.3B, gpt-oss-120b 116.8B / 5.1B
and gpt-oss-20b 20.9B / 3.6B (OpenAI counts the unembedding but not the embedding as active),
Mixtral-8x7B 46.7B / 12.9B.
"""

from __future__ import annotations

from costmodel.model_spec import ModelSpec

FP8_BLOCK = (("attn", "fp8_block"), ("mlp", "fp8_block"), ("experts", "fp8_block"))


def _deepseek(name, hf_id, experts, heads, dense_layers, vocab, max_pos):
    """DeepSeek-V3 architecture: MLA, 1 shared + routed experts of width 2048, top-8."""
    return ModelSpec(
        name=name, hf_id=hf_id, num_layers=61, hidden_size=7168, num_heads=heads,
        num_kv_heads=heads, head_dim=192, intermediate_size=18432, vocab_size=vocab,
        num_experts=experts, experts_per_token=8, moe_intermediate_size=2048,
        num_shared_experts=1, first_dense_layers=dense_layers, router="sigmoid",
        q_lora_rank=1536, kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
        v_head_dim=128, max_position=max_pos, weight_dtypes=FP8_BLOCK,
    )


def _qwen3_moe(name, hf_id, layers, hidden, heads, ffn, moe_ffn):
    return ModelSpec(
        name=name, hf_id=hf_id, num_layers=layers, hidden_size=hidden, num_heads=heads,
        num_kv_heads=4, head_dim=128, intermediate_size=ffn, vocab_size=151936,
        num_experts=128, experts_per_token=8, moe_intermediate_size=moe_ffn, max_position=40960,
    )


def _gpt_oss(name, hf_id, layers, experts):
    """gpt-oss: MXFP4 experts, attention alternating a 128-token sliding window and full
    context (first layer sliding), a learned sink per head, biased projections."""
    return ModelSpec(
        name=name, hf_id=hf_id, num_layers=layers, hidden_size=2880, num_heads=64,
        num_kv_heads=8, head_dim=64, intermediate_size=2880, vocab_size=201088,
        num_experts=experts, experts_per_token=4, max_position=131072,
        layer_types=tuple("sliding" if i % 2 == 0 else "full" for i in range(layers)),
        sliding_window=128, attention_sinks=True, attn_bias=True,
        weight_dtypes=(("experts", "mxfp4"),),
    )


MOE_PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        _deepseek("deepseek-v3", "deepseek-ai/DeepSeek-V3", 256, 128, 3, 129280, 163840),
        _deepseek("deepseek-r1", "deepseek-ai/DeepSeek-R1", 256, 128, 3, 129280, 163840),
        _deepseek("kimi-k2", "moonshotai/Kimi-K2-Instruct", 384, 64, 1, 163840, 131072),
        _qwen3_moe("qwen3-30b-a3b", "Qwen/Qwen3-30B-A3B", 48, 2048, 32, 6144, 768),
        _qwen3_moe("qwen3-235b-a22b", "Qwen/Qwen3-235B-A22B", 94, 4096, 64, 12288, 1536),
        _gpt_oss("gpt-oss-20b", "openai/gpt-oss-20b", 24, 32),
        _gpt_oss("gpt-oss-120b", "openai/gpt-oss-120b", 36, 128),
        ModelSpec(
            name="mixtral-8x7b", num_layers=32, hidden_size=4096, num_heads=32, num_kv_heads=8,
            head_dim=128, intermediate_size=14336, vocab_size=32000, num_experts=8,
            experts_per_token=2, max_position=32768, hf_id="mistralai/Mixtral-8x7B-Instruct-v0.1",
        ),
        ModelSpec(
            name="mixtral-8x22b", num_layers=56, hidden_size=6144, num_heads=48, num_kv_heads=8,
            head_dim=128, intermediate_size=16384, vocab_size=32768, num_experts=8,
            experts_per_token=2, max_position=65536, hf_id="mistralai/Mixtral-8x22B-Instruct-v0.1",
        ),
    ]
}

MOE_ALIASES = {"deepseek-v3-0324": "deepseek-v3", "kimi-k2-instruct": "kimi-k2", "mixtral": "mixtral-8x7b",
               "mixtral-8x7b-instruct-v0.1": "mixtral-8x7b", "qwen3-235b": "qwen3-235b-a22b",
               "qwen3-30b": "qwen3-30b-a3b"}
