"""ModelSpec from a Hugging Face `config.json`.

Dense families (Llama, Qwen, Mistral, Phi, GPT-2-style names) and four mixture-of-experts
architectures: DeepseekV3ForCausalLM (MLA, shared experts, leading dense layers; Kimi-K2 uses
it too), Qwen3MoeForCausalLM, MixtralForCausalLM and GptOssForCausalLM (sliding-window layers,
sinks, MXFP4 experts). A config whose MoE keys this parser does not know is refused with the
key named: a silently wrong expert count would give a wrong plan.
"""

from __future__ import annotations

from pathlib import Path

from costmodel.errors import ServePlanError
from costmodel.jsonio import read_json
from costmodel.model_spec import ModelSpec

MOE_ARCHS = ("DeepseekV3ForCausalLM", "Qwen3MoeForCausalLM", "MixtralForCausalLM", "GptOssForCausalLM")
# keys about experts and routing that the parser reads or knows to leave out (training-only
# losses, routing-group limits that do not change the work done, the checkpoint's own EP size)
KNOWN_MOE_KEYS = frozenset({
    "num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok",
    "experts_per_token", "moe_intermediate_size", "n_shared_experts", "first_k_dense_replace",
    "moe_layer_freq", "decoder_sparse_step", "mlp_only_layers", "scoring_func", "topk_method",
    "n_group", "topk_group", "norm_topk_prob", "routed_scaling_factor", "output_router_logits",
    "router_aux_loss_coef", "router_jitter_noise", "aux_loss_alpha", "seq_aux", "ep_size",
    "swiglu_limit", "moe_router_dtype",
})
_MOE_WORDS = ("expert", "moe", "router", "routed", "topk")


def _require(cfg: dict, key: str, path: Path, *alts: str):
    for k in (key, *alts):
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    raise ServePlanError(f"{path}: config.json has no '{key}' (needed for the cost model)")


def _int(v, key: str, path: Path, zero_ok: bool = False) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
        raise ServePlanError(f"{path}: '{key}' = {v!r}; expected a {'non-negative' if zero_ok else 'positive'} integer")
    return v


def _check_moe_keys(cfg: dict, path: Path) -> None:
    unknown = sorted(k for k in cfg if any(w in k.lower() for w in _MOE_WORDS) and k not in KNOWN_MOE_KEYS)
    if unknown:
        raise ServePlanError(f"{path}: unknown mixture-of-experts key(s) {', '.join(map(repr, unknown))}; "
                             f"ServePlan reads {', '.join(sorted(KNOWN_MOE_KEYS))}")


def _weight_dtypes(cfg: dict, path: Path) -> tuple[tuple[str, str], ...]:
    """Per-part checkpoint precision from `quantization_config` (fp8 with 128 x 128 blocks,
    per-tensor fp8, MXFP4 experts); none = bf16."""
    q = cfg.get("quantization_config")
    if not q:
        return ()
    if not isinstance(q, dict):
        raise ServePlanError(f"{path}: 'quantization_config' must be an object")
    method = str(q.get("quant_method", "")).lower()
    if method == "fp8":
        dt = "fp8_block" if q.get("weight_block_size") else "fp8"
        return (("attn", dt), ("mlp", dt), ("experts", dt))
    if method == "mxfp4":
        return (("experts", "mxfp4"),)
    if method in ("awq", "gptq"):
        return (("attn", "int4"), ("mlp", "int4"), ("experts", "int4"))
    raise ServePlanError(f"{path}: quantization method {method!r}; expected fp8, mxfp4, awq or gptq (or none)")


def _moe_fields(cfg: dict, path: Path, arch: str, layers: int) -> dict:
    """The MoE and MLA fields of a mixture-of-experts config."""
    _check_moe_keys(cfg, path)
    experts = _int(_require(cfg, "num_experts", path, "n_routed_experts", "num_local_experts"),
                   "num_experts", path)
    topk = _int(_require(cfg, "num_experts_per_tok", path, "experts_per_token"), "num_experts_per_tok", path)
    if topk > experts:
        raise ServePlanError(f"{path}: num_experts_per_tok={topk} is more than the {experts} experts; "
                             f"expected 1..{experts}")
    out = {"num_experts": experts, "experts_per_token": topk}
    if cfg.get("moe_intermediate_size"):
        out["moe_intermediate_size"] = _int(cfg["moe_intermediate_size"], "moe_intermediate_size", path)
    if int(cfg.get("moe_layer_freq", 1) or 1) != 1 or int(cfg.get("decoder_sparse_step", 1) or 1) != 1:
        raise ServePlanError(f"{path}: MoE on every other layer (moe_layer_freq / decoder_sparse_step > 1) "
                             "is not supported; expected 1")
    dense_first = _int(cfg.get("first_k_dense_replace", 0) or 0, "first_k_dense_replace", path, zero_ok=True)
    only = cfg.get("mlp_only_layers") or []
    if only:
        if not isinstance(only, list) or sorted(only) != list(range(len(only))):
            raise ServePlanError(f"{path}: mlp_only_layers={only!r}; only leading dense layers "
                                 "(0, 1, ..., n-1) are supported")
        dense_first = len(only)
    if dense_first > layers:
        raise ServePlanError(f"{path}: {dense_first} leading dense layers but {layers} layers")
    out["first_dense_layers"] = dense_first
    out["num_shared_experts"] = _int(cfg.get("n_shared_experts", 0) or 0, "n_shared_experts", path, zero_ok=True)
    out["router"] = "sigmoid" if cfg.get("scoring_func") == "sigmoid" else "softmax"
    if arch == "DeepseekV3ForCausalLM":
        for key in ("kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim"):
            out[key] = _int(_require(cfg, key, path), key, path)
        out["q_lora_rank"] = _int(cfg.get("q_lora_rank") or 0, "q_lora_rank", path, zero_ok=True)
        out["head_dim"] = out["qk_nope_head_dim"] + out["qk_rope_head_dim"]
    if arch == "GptOssForCausalLM":
        kinds = cfg.get("layer_types") or ["sliding_attention" if i % 2 == 0 else "full_attention"
                                           for i in range(layers)]
        bad = [k for k in kinds if k not in ("sliding_attention", "full_attention")]
        if len(kinds) != layers or bad:
            raise ServePlanError(f"{path}: layer_types must list sliding_attention or full_attention "
                                 f"for each of the {layers} layers")
        out["layer_types"] = tuple("sliding" if k == "sliding_attention" else "full" for k in kinds)
        out["sliding_window"] = _int(_require(cfg, "sliding_window", path), "sliding_window", path)
        out["attention_sinks"] = True
        out["attn_bias"] = bool(cfg.get("attention_bias", True))
    return out


def from_config(path: str | Path) -> ModelSpec:
    """Parse a Hugging Face `config.json` (dense Llama/Qwen/Mistral/Phi families, and the MoE
    architectures of MOE_ARCHS)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    cfg = read_json(path, "model config")
    if not isinstance(cfg, dict):
        raise ServePlanError(f"{path}: expected a JSON object, got {type(cfg).__name__}")
    if "text_config" in cfg and isinstance(cfg["text_config"], dict):
        cfg = {**cfg, **cfg["text_config"]}
    ints = {}
    for key, alts in [
        ("num_hidden_layers", ("n_layer", "num_layers")),
        ("hidden_size", ("n_embd", "d_model")),
        ("num_attention_heads", ("n_head",)),
        ("vocab_size", ()),
    ]:
        ints[key] = _int(_require(cfg, key, path, *alts), key, path)
    heads = ints["num_attention_heads"]
    kv = _int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads", path)
    if heads % kv:
        raise ServePlanError(
            f"{path}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}"
        )
    head_dim = _int(cfg.get("head_dim") or ints["hidden_size"] // heads, "head_dim", path)
    archs = cfg.get("architectures") or []
    arch = next((a for a in archs if a in MOE_ARCHS), None) if isinstance(archs, list) else None
    has_experts = any(cfg.get(k) for k in ("num_local_experts", "num_experts", "n_routed_experts"))
    if has_experts and arch is None:
        raise ServePlanError(f"{path}: a mixture of experts of architecture {archs!r}; "
                             f"supported: {', '.join(MOE_ARCHS)}")
    moe = _moe_fields(cfg, path, arch, ints["num_hidden_layers"]) if arch else {}
    ffn_key = "intermediate_size" if "intermediate_size" in cfg else "n_inner"
    ffn = cfg.get(ffn_key) or 4 * ints["hidden_size"]
    ffn = _int(ffn, ffn_key, path)
    act = str(cfg.get("hidden_act") or cfg.get("activation_function") or "silu")
    gated = act in ("silu", "swiglu", "swish") or cfg.get("model_type") in (
        "llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe", "deepseek_v3", "gpt_oss", "kimi_k2")
    name = cfg.get("_name_or_path") or path.parent.name or "custom"
    fields = dict(
        name=str(name).lower(),
        num_layers=ints["num_hidden_layers"],
        hidden_size=ints["hidden_size"],
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=ffn,
        vocab_size=ints["vocab_size"],
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        gated_mlp=gated,
        max_position=int(cfg.get("max_position_embeddings") or 8192),
        hf_id=str(cfg.get("_name_or_path") or path.parent),
        weight_dtypes=_weight_dtypes(cfg, path),
    )
    fields.update(moe)
    try:
        return ModelSpec(**fields)
    except ServePlanError as e:
        raise ServePlanError(f"{path}: {e}") from None
