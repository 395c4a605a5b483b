"""Model architecture specs: presets and Hugging Face `config.json` parsing.

A ModelSpec (costmodel/model_spec.py) holds what the cost model needs of a decoder-only
transformer, dense or mixture of experts; dense presets live here, MoE ones in
costmodel/moe_presets.py, config.json parsing in costmodel/hf_config.py. Nothing is
downloaded: `load_model` takes a preset name or a path to a local `config.json`.
"""

from __future__ import annotations

from pathlib import Path

from costmodel.errors import ServePlanError
from costmodel.hf_config import from_config
from costmodel.model_spec import ModelSpec
from costmodel.moe_presets import MOE_ALIASES, MOE_PRESETS

__all__ = ["MODEL_PRESETS", "ModelSpec", "from_config", "load_model"]


def _llama(name, hf_id, layers, hidden, heads, kv, ffn, vocab, max_pos, tie=False, head_dim=None):
    return ModelSpec(
        name=name,
        num_layers=layers,
        hidden_size=hidden,
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim or hidden // heads,
        intermediate_size=ffn,
        vocab_size=vocab,
        tie_embeddings=tie,
        max_position=max_pos,
        hf_id=hf_id,
    )


# Architecture facts from each model's published config.json.
MODEL_PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        _llama("llama-2-7b", "meta-llama/Llama-2-7b-hf", 32, 4096, 32, 32, 11008, 32000, 4096),
        _llama("llama-2-13b", "meta-llama/Llama-2-13b-hf", 40, 5120, 40, 40, 13824, 32000, 4096),
        _llama("llama-2-70b", "meta-llama/Llama-2-70b-hf", 80, 8192, 64, 8, 28672, 32000, 4096),
        _llama("llama-3-8b", "meta-llama/Meta-Llama-3-8B", 32, 4096, 32, 8, 14336, 128256, 8192),
        _llama("llama-3-70b", "meta-llama/Meta-Llama-3-70B", 80, 8192, 64, 8, 28672, 128256, 8192),
        _llama("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", 32, 4096, 32, 8, 14336, 128256, 131072),
        _llama("llama-3.1-70b", "meta-llama/Llama-3.1-70B-Instruct", 80, 8192, 64, 8, 28672, 128256, 131072),
        _llama("llama-3.1-405b", "meta-llama/Llama-3.1-405B-Instruct", 126, 16384, 128, 8, 53248, 128256, 131072),
        _llama("llama-3.2-1b", "meta-llama/Llama-3.2-1B-Instruct", 16, 2048, 32, 8, 8192, 128256, 131072, tie=True, head_dim=64),
        _llama("llama-3.2-3b", "meta-llama/Llama-3.2-3B-Instruct", 28, 3072, 24, 8, 8192, 128256, 131072, tie=True, head_dim=128),
        _llama("qwen3-0.6b", "Qwen/Qwen3-0.6B", 28, 1024, 16, 8, 3072, 151936, 40960, tie=True, head_dim=128),
        _llama("qwen3-8b", "Qwen/Qwen3-8B", 36, 4096, 32, 8, 12288, 151936, 40960, head_dim=128),
        _llama("qwen3-32b", "Qwen/Qwen3-32B", 64, 5120, 64, 8, 25600, 151936, 40960, head_dim=128),
        _llama("qwen2.5-7b", "Qwen/Qwen2.5-7B-Instruct", 28, 3584, 28, 4, 18944, 152064, 32768),
        _llama("qwen2.5-72b", "Qwen/Qwen2.5-72B-Instruct", 80, 8192, 64, 8, 29568, 152064, 32768),
        _llama("qwen-72b", "Qwen/Qwen-72B", 80, 8192, 64, 64, 24576, 152064, 32768),
        _llama("internlm-20b", "internlm/internlm-20b", 60, 5120, 40, 40, 13824, 103168, 4096),
        _llama("codellama-34b", "codellama/CodeLlama-34b-Instruct-hf", 48, 8192, 64, 8, 22016, 32000, 16384),
        ModelSpec(
            name="phi-2", num_layers=32, hidden_size=2560, num_heads=32, num_kv_heads=32,
            head_dim=80, intermediate_size=10240, vocab_size=51200, gated_mlp=False,
            max_position=2048, hf_id="microsoft/phi-2",
        ),
    ]
}
MODEL_PRESETS.update(MOE_PRESETS)

_ALIASES = {
    "llama2-7b": "llama-2-7b",
    "llama2-70b": "llama-2-70b",
    "llama3-8b": "llama-3-8b",
    "llama3-70b": "llama-3-70b",
    "meta-llama-3-8b": "llama-3-8b",
    "meta-llama-3-70b": "llama-3-70b",
    "llama-2-70b-hf": "llama-2-70b",
    "llama-2-7b-hf": "llama-2-7b",
    "codellama-34b-instruct-hf": "codellama-34b",
    **MOE_ALIASES,
}


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """A preset by lower-case name (or alias), or a path to a config.json / its folder."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    key = str(name_or_path).strip()
    if "\x00" in key:  # os.stat would raise a bare ValueError
        raise ServePlanError(f"model {key!r}: a name or path cannot hold a NUL byte")
    try:
        is_path = Path(key).exists()
    except OSError:  # a name too long for the filesystem is no path
        is_path = False
    low = key.lower().split("/")[-1] if not is_path else None
    if low is not None:
        low = _ALIASES.get(low, low)
        if low in MODEL_PRESETS:
            return MODEL_PRESETS[low]
    p = Path(key)
    if is_path or key.endswith(".json"):
        return from_config(p)
    known = ", ".join(sorted(MODEL_PRESETS))
    raise ServePlanError(f"unknown model {key!r}; known presets: {known}; or a path to a config.json")
