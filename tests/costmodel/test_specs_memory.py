"""ModelSpec from config.json, name errors, and the memory plan of known deployments."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from costmodel.errors import DoesNotFitError, ServePlanError
from costmodel.hardware import load_gpu
from costmodel.memory import memory_plan, require_fit
from costmodel.model import CostModel
from costmodel.specs import MODEL_PRESETS, load_model

ARCH_FIELDS = [f.name for f in fields(MODEL_PRESETS["llama-3.1-8b"])
               if f.name not in ("name", "hf_id", "max_position")]

LLAMA_31_8B = {  # as published in meta-llama/Llama-3.1-8B-Instruct's config.json
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "rope_theta": 500000.0,
}
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "hidden_act": "silu",
    "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 32000,
    "num_local_experts": 8, "num_experts_per_tok": 2, "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
}


@pytest.mark.parametrize("cfg,preset", [(LLAMA_31_8B, "llama-3.1-8b"), (MIXTRAL_8X7B, "mixtral-8x7b")])
def test_config_json_matches_preset(tmp_path, cfg, preset):
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    spec = load_model(str(p))
    ref = MODEL_PRESETS[preset]
    for f in ARCH_FIELDS:
        assert getattr(spec, f) == getattr(ref, f), f


def test_malformed_config_names_line_and_column(tmp_path):
    p = tmp_path / "config.json"
    p.write_text('{\n  "hidden_size": 4096,\n  "num_hidden_layers": ,\n}\n')
    with pytest.raises(ServePlanError, match=r"line 3 column 24"):
        load_model(str(p))


def test_config_missing_key_is_named(tmp_path):
    cfg = dict(LLAMA_31_8B)
    del cfg["num_attention_heads"]
    p = tmp_path / "config.json"
    p.write_text(json.dumps(cfg))
    with pytest.raises(ServePlanError, match="num_attention_heads"):
        load_model(str(p))


def test_unknown_names_list_known_ones():
    with pytest.raises(ServePlanError, match="llama-3.1-70b") as e:
        load_model("llama-9-1t")
    assert "llama-9-1t" in str(e.value)
    with pytest.raises(ServePlanError, match="h100-sxm") as e:
        load_gpu("z100")
    assert "z100" in str(e.value)


def test_weights_per_gpu_llama_70b_tp4():
    cm = CostModel("llama-3.1-70b", "h100", tp=4)
    plan = memory_plan(cm)
    assert plan.weights_bytes == pytest.approx(70.6e9 * 2 / 4, rel=0.02)
    # KV per token per GPU: 80 layers x 2 (K, V) x 2 KV heads x 128 x 2 B = 81,920 B
    assert plan.kv_bytes_per_token == 80 * 2 * 2 * 128 * 2
    assert plan.kv_capacity_tokens == plan.kv_blocks * plan.block_size > 0


def test_does_not_fit_says_need_and_have():
    cm = CostModel("llama-3.1-405b", "a100-80g", tp=1)
    plan = memory_plan(cm)
    with pytest.raises(DoesNotFitError, match=r"does not fit: needs \d+\.\d GiB per GPU") as e:
        require_fit(plan, cm)
    assert e.value.need_bytes > e.value.have_bytes
    assert "but has" in str(e.value)
