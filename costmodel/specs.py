"""Model architecture specs: presets and Hugging Face `config.json` parsing.

A ModelSpec holds what the cost model needs of a decoder-only transformer: layer count,
hidden size, attention heads (query and KV, for GQA), head dim, FFN width (gated or not),
vocabulary, tied embeddings, and MoE routing (experts, top-k). Nothing is downloaded:
`load_model` takes a preset name or a path to a local `config.json`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from costmodel.errors import ServePlanError
from costmodel.jsonio import read_json

_SIZE_LIMITS = {"num_layers": 1024, "hidden_size": 1 << 20, "num_heads": 4096, "num_kv_heads": 4096,
                "head_dim": 4096, "intermediate_size": 1 << 22, "vocab_size": 1 << 24,
                "max_position": 1 << 26}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int  # FFN width of one expert (of the dense MLP when not MoE)
    vocab_size: int
    tie_embeddings: bool = False
    gated_mlp: bool = True  # SwiGLU: gate+up (2 x I) then down; else up then down
    num_experts: int = 0  # 0 = dense
    experts_per_token: int = 0
    max_position: int = 8192
    hf_id: str = ""  # the name to pass to vLLM / SGLang

    def __post_init__(self):
        # sizes far past any published model are typos; zero or negative ones divide by zero
        for key, hi in _SIZE_LIMITS.items():
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
                raise ServePlanError(f"model {self.name!r}: {key}={v!r}; expected an integer in [1, {hi}]")
        e, k = self.num_experts, self.experts_per_token
        if (isinstance(e, bool) or not isinstance(e, int) or not 0 <= e <= 4096
                or isinstance(k, bool) or not isinstance(k, int) or not (0 if e == 0 else 1) <= k <= e):
            raise ServePlanError(f"model {self.name!r}: num_experts={e!r}, experts_per_token={k!r}; "
                                 "expected 0 and 0 (dense) or 1 <= experts_per_token <= num_experts <= 4096")

    # --- derived sizes (parameter counts, not bytes) -------------------------------------
    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    @property
    def attn_params_per_layer(self) -> int:
        # q, k, v projections and the output projection
        return self.hidden_size * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden_size

    @property
    def mlp_params_per_expert(self) -> int:
        up = (2 if self.gated_mlp else 1) * self.intermediate_size
        return self.hidden_size * up + self.intermediate_size * self.hidden_size

    @property
    def mlp_params_per_layer(self) -> int:
        n = max(self.num_experts, 1)
        router = self.hidden_size * self.num_experts
        return n * self.mlp_params_per_expert + router

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)

    @property
    def num_params(self) -> int:
        norms = self.num_layers * 2 * self.hidden_size + self.hidden_size
        per_layer = self.attn_params_per_layer + self.mlp_params_per_layer
        return self.num_layers * per_layer + self.embedding_params + norms

    @property
    def active_params(self) -> int:
        """Parameters touched per token (MoE: only top-k experts)."""
        if not self.is_moe:
            return self.num_params
        inactive = (self.num_experts - self.experts_per_token) * self.mlp_params_per_expert
        return self.num_params - self.num_layers * inactive

    def kv_elems_per_token(self) -> int:
        """K and V elements one token adds to the cache, over all layers."""
        return 2 * self.num_layers * self.kv_dim

    def with_layers(self, num_layers: int) -> ModelSpec:
        return replace(self, num_layers=num_layers, name=f"{self.name}[{num_layers}L]")


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
}


def _require(cfg: dict, key: str, path: Path, *alts: str):
    for k in (key, *alts):
        if k in cfg and cfg[k] is not None:
            return cfg[k]
    raise ServePlanError(f"{path}: config.json has no '{key}' (needed for the cost model)")


def _positive_int(v, key: str, path: Path) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise ServePlanError(f"{path}: '{key}' = {v!r}; expected a positive integer")
    return v


def from_config(path: str | Path) -> ModelSpec:
    """Parse a Hugging Face `config.json` (Llama, Qwen, Mistral/Mixtral, Phi families)."""
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
        ints[key] = _positive_int(_require(cfg, key, path, *alts), key, path)
    heads = ints["num_attention_heads"]
    kv = _positive_int(cfg.get("num_key_value_heads") or heads, "num_key_value_heads", path)
    if heads % kv:
        raise ServePlanError(
            f"{path}: num_attention_heads={heads} is not a multiple of num_key_value_heads={kv}"
        )
    head_dim = _positive_int(
        cfg.get("head_dim") or ints["hidden_size"] // heads, "head_dim", path
    )
    ffn_key = "intermediate_size" if "intermediate_size" in cfg else "n_inner"
    ffn = cfg.get("moe_intermediate_size") or cfg.get(ffn_key) or 4 * ints["hidden_size"]
    ffn = _positive_int(ffn, ffn_key, path)
    experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or 0)
    topk = int(cfg.get("num_experts_per_tok") or (2 if experts else 0))
    act = str(cfg.get("hidden_act") or cfg.get("activation_function") or "silu")
    gated = act in ("silu", "swiglu", "swish") or cfg.get("model_type") in ("llama", "qwen2", "qwen3", "mistral", "mixtral", "qwen3_moe")
    name = cfg.get("_name_or_path") or path.parent.name or "custom"
    return ModelSpec(
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
        num_experts=experts,
        experts_per_token=topk,
        max_position=int(cfg.get("max_position_embeddings") or 8192),
        hf_id=str(cfg.get("_name_or_path") or path.parent),
    )


def load_model(name_or_path: str | ModelSpec) -> ModelSpec:
    """A preset by lower-case name (or alias), or a path to a config.json / its folder."""
    if isinstance(name_or_path, ModelSpec):
        return name_or_path
    key = str(name_or_path).strip()
    if "\x00" in key:  # os.stat would raise a bare ValueError
        raise ServePlanError(f"model {key!r}: a name or path cannot hold a NUL byte")
    low = key.lower().split("/")[-1] if not Path(key).exists() else None
    if low is not None:
        low = _ALIASES.get(low, low)
        if low in MODEL_PRESETS:
            return MODEL_PRESETS[low]
    p = Path(key)
    if p.exists() or key.endswith(".json"):
        return from_config(p)
    known = ", ".join(sorted(MODEL_PRESETS))
    raise ServePlanError(f"unknown model {key!r}; known presets: {known}; or a path to a config.json")
