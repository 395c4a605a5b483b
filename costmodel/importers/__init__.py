"""Importers: published GPU measurements -> one tidy "measured rows" DataFrame.

Every importer returns the same native schema, one row per measured quantity (times in
seconds, sizes in elements or bytes as named). Columns (`COLUMNS`, in this order):

| column | type | meaning |
|---|---|---|
| `source` | str | where the row came from (file path relative to the import root) |
| `row_id` | str | stable id of the row inside its source (`<file>:<line>:<op>`) |
| `gpu` | str | GPU preset name (`a100-80g`, `h100-sxm`, ...) |
| `model` | str | model preset, or "" when the row is a bare kernel shape |
| `op` | str | what was timed; one of `OPS` (below) |
| `kernel` | str | kernel / backend named by the source ("" if none) |
| `precision` | str | GEMM compute precision: `bf16`, `fp8` (per-tensor scales), `fp8_block` (128 x 128 block scales); MoE expert weights also `int4`, `mxfp4` |
| `kv_dtype` | str | KV-cache dtype for attention rows: `bf16`, `fp8` |
| `tp`, `pp` | int | parallelism of the model the row belongs to (1 for bare kernels) |
| `m`, `n`, `k` | int | GEMM `C[m,n] = A[m,k] @ W[k,n]`; elementwise ops: `m` tokens, `k` input and `n` output elements per token (bytes moved = m (k + n) x 2) |
| `num_tokens` | int | tokens through the op (per-op rows) |
| `batch_size` | int | sequences (attention and step rows) |
| `prefill_len` | int | new tokens per sequence (prefill attention, prefill steps) |
| `context_len` | int | tokens already cached per sequence (decode context; prefill prefix) |
| `gen_len` | int | tokens each sequence generates in the measured run (step rows; 0 = not given): with `prefill_len` it sizes the KV cache the batch needs |
| `num_heads`, `num_kv_heads`, `head_dim` | int | attention heads per GPU (after TP) and head size |
| `window` | int | sliding-window length in tokens, 0 = full attention |
| `num_gpus` | int | GPUs taking part in a collective |
| `msg_bytes` | float | collective message size in bytes (per GPU input) |
| `routing` | str | MoE rows: how tokens were routed to experts, `balanced` or `power_law_<alpha>` |
| `hidden`, `inter` | int | MoE rows: hidden size and one expert's FFN width (whole model, before `moe_tp`); MLA rows: `hidden` |
| `topk`, `num_experts` | int | MoE rows: experts per token, routed experts in the model |
| `moe_gated` | int | MoE rows: 1 for gated experts (gate and up projections, SiLU-and-mul), 0 for an up projection alone (squared ReLU) |
| `moe_tp`, `moe_ep` | int | MoE rows: tensor- and expert-parallel sizes of the MoE layer (the row is one GPU's share) |
| `q_lora_rank`, `kv_lora_rank`, `qk_nope_dim`, `qk_rope_dim`, `v_head_dim` | int | MLA rows: DeepSeek-style attention dimensions |
| `measured_s` | float | the measured time, seconds |

Ops: GEMMs `gemm`, `qkv_proj`, `o_proj`, `mlp_up_proj`, `mlp_down_proj`, `lm_head`;
elementwise `embedding`, `input_layernorm`, `post_attention_layernorm`, `rope`, `mlp_act`,
`residual_add`; mixture of experts `moe` (one fused-MoE layer on one GPU: `num_tokens` tokens
routed top-`topk` over `num_experts` experts of width `inter`, the GPU's `1/moe_ep` of the
experts and `1/moe_tp` of each expert's width; `precision` the expert weights: `bf16`, `fp8`,
`fp8_block`, `int4`, `mxfp4`); MLA attention modules (projections, norms, RoPE, attention and
output projection of one DeepSeek-style layer) `mla_prefill` (`batch_size` prompts of
`prefill_len` tokens) and `mla_decode` (`batch_size` sequences of `context_len` cached tokens),
`num_heads` per GPU, `precision` the projections' GEMMs; attention `attn_prefill` (a batch of `batch_size` prompts, `prefill_len` new
tokens each over `context_len` cached ones) and `attn_decode` (`batch_size` sequences of
`context_len` cached tokens, one query each); collectives `all_reduce`, `all_gather`,
`reduce_scatter`, `alltoall`, `send_recv`; whole iterations `prefill_step` (prefill of
`batch_size` prompts of `prefill_len` tokens) and `decode_step` (one decode iteration of
`batch_size` sequences at `context_len`).

Formats (`load_measured(path, fmt, gpu=, model=)`): `vidur`, `aiconfigurator`, `splitwise`,
`native` (a CSV with the columns above; only `op` and `measured_s` are required, the rest
default to 0 / "" / 1). Files are read as data only (CSV, Parquet); a file missing columns
raises one ServePlanError naming the file and the columns.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu

GEMM_OPS = ("gemm", "qkv_proj", "o_proj", "mlp_up_proj", "mlp_down_proj", "lm_head")
ELEMENTWISE_OPS = ("embedding", "input_layernorm", "post_attention_layernorm", "rope", "mlp_act",
                   "residual_add")
ATTENTION_OPS = ("attn_prefill", "attn_decode")
MOE_OPS = ("moe",)
MLA_OPS = ("mla_prefill", "mla_decode")
COMM_OPS = ("all_reduce", "all_gather", "reduce_scatter", "alltoall", "send_recv")
STEP_OPS = ("prefill_step", "decode_step")
OPS = GEMM_OPS + ELEMENTWISE_OPS + ATTENTION_OPS + COMM_OPS + STEP_OPS + MOE_OPS + MLA_OPS
FORMATS = ("vidur", "aiconfigurator", "splitwise", "native")

STR_COLUMNS = ("source", "row_id", "gpu", "model", "op", "kernel", "precision", "kv_dtype",
               "routing")
INT_COLUMNS = ("tp", "pp", "m", "n", "k", "num_tokens", "batch_size", "prefill_len",
               "context_len", "gen_len", "num_heads", "num_kv_heads", "head_dim", "window", "num_gpus",
               "hidden", "inter", "topk", "num_experts", "moe_tp", "moe_ep", "moe_gated", "q_lora_rank",
               "kv_lora_rank", "qk_nope_dim", "qk_rope_dim", "v_head_dim")
FLOAT_COLUMNS = ("msg_bytes", "measured_s")
COLUMNS = STR_COLUMNS + INT_COLUMNS + FLOAT_COLUMNS
_DEFAULTS = {"precision": "bf16", "kv_dtype": "bf16", "tp": 1, "pp": 1, "num_gpus": 1,
             "moe_tp": 1, "moe_ep": 1, "moe_gated": 1}


def require_columns(df: pd.DataFrame, needed: Iterable[str], file: str | Path) -> None:
    """One ServePlanError naming the file and every missing column."""
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ServePlanError(f"{file}: missing column(s) {', '.join(missing)}")


def read_table(path: Path) -> pd.DataFrame:
    """CSV or Parquet, read as data only (never pickle)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path)
    except (OSError, ValueError) as e:
        raise ServePlanError(f"cannot read {path}: {e}") from None
    raise ServePlanError(f"{path}: unsupported file type {suffix!r}; expected .csv or .parquet")


def tidy(df: pd.DataFrame) -> pd.DataFrame:
    """Fill defaults, fix dtypes and column order of a frame in the native schema."""
    out = pd.DataFrame(index=df.index)
    for c in COLUMNS:
        if c in df.columns:
            out[c] = df[c]
        else:
            out[c] = _DEFAULTS.get(c, "" if c in STR_COLUMNS else 0)
    for c in STR_COLUMNS:
        out[c] = out[c].astype(object).where(out[c].notna(), "").astype(str)
    for c in INT_COLUMNS:
        out[c] = pd.to_numeric(out[c], errors="coerce").fillna(_DEFAULTS.get(c, 0)).astype("int64")
    for c in FLOAT_COLUMNS:
        out[c] = pd.to_numeric(out[c], errors="coerce").astype("float64")
    return out.reset_index(drop=True)


def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return tidy(pd.DataFrame(columns=list(COLUMNS)))
    return tidy(pd.concat(frames, ignore_index=True))


def resolve_gpu(gpu: str | None, where: str) -> str:
    if not gpu:
        raise ServePlanError(f"{where}: the data does not name its GPU; pass --gpu (e.g. a100-80g)")
    return load_gpu(gpu).name


def load_measured(path: str | Path, fmt: str, gpu: str | None = None,
                  model: str | None = None) -> pd.DataFrame:
    """Read measurements in format `fmt` from a file or a folder laid out as the source ships it.

    `gpu` names the GPU where the data does not; `model` keeps only that model's rows (and is
    the model of rows that name none). Returns the native schema (see module docstring).
    """
    p = Path(path)
    if not p.exists():
        raise ServePlanError(f"--measured {p}: no such file or folder")
    if fmt not in FORMATS:
        raise ServePlanError(f"format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "vidur":
        from costmodel.importers.vidur import load_vidur as loader
    elif fmt == "aiconfigurator":
        from costmodel.importers.aiconfigurator import load_aiconfigurator as loader
    elif fmt == "splitwise":
        from costmodel.importers.splitwise import load_splitwise as loader
    else:
        from costmodel.importers.native import load_native as loader
    rows = loader(p, gpu)
    notes = list(rows.attrs.get("notes", []))
    if model:
        from costmodel.specs import load_model

        name = load_model(model).name
        rows.loc[rows["model"] == "", "model"] = name
        rows = rows[rows["model"] == name].reset_index(drop=True)
    if rows.empty:
        raise ServePlanError(f"--measured {p} ({fmt}): no measured rows found"
                             + (f" for model {model}" if model else ""))
    rows.attrs["notes"] = notes  # what the importer left out, and why (printed by the CLI)
    return rows


def files_under(root: Path, names: Iterable[str]) -> list[Path]:
    """Files under `root` (or `root` itself) whose name is one of `names`, sorted."""
    names = set(names)
    if root.is_file():
        return [root] if root.name in names else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.name in names)


def relname(p: Path, root: Path) -> str:
    return p.name if root.is_file() else str(p.relative_to(root))
