"""AIConfigurator tables -> measured rows (native schema).

Layout (ai-dynamo/aiconfigurator's `systems/data/<gpu>/...`; a folder or any one file):
- `gemm/<framework>/<version>/gemm_perf.parquet`: `gemm_dtype` (bfloat16 | fp8 | fp8_block),
  `m`, `n`, `k`, `latency` (ms), `kernel_source`.
- `attention/.../context_attention_perf.parquet`: prefill of `batch_size` prompts of `isl`
  tokens; `generation_attention_perf.parquet`: one decode step of `batch_size` sequences whose
  cache holds `isl + step` tokens. Both give `num_heads`, `num_key_value_heads` (per GPU),
  `head_dim`, `kv_cache_dtype`, `window_size`, `latency` (ms).
- `moe/<framework>/<version>/moe_perf.parquet`: one fused-MoE layer on one GPU, `num_tokens`,
  `hidden_size`, `inter_size` (the whole expert's FFN width), `topk`, `num_experts`,
  `moe_tp_size`, `moe_ep_size` (the GPU holds `1/moe_ep` of the experts and `1/moe_tp` of each
  one's width), `distribution` (`balanced`, `power_law_<alpha>`), `moe_dtype` (`bfloat16`,
  `fp8`, `fp8_block`, `int4_wo`, `w4a16_mxfp4`), `kernel_source`, `latency` (ms) -> op `moe`.
- `mla/<framework>/<version>/mla_{context,generation}_module_perf.parquet`: one DeepSeek-style
  MLA attention module (projections + attention + output), `num_heads` per GPU, `batch_size`,
  `isl` (context: prompt tokens) and `step` (generation: cached tokens), `kv_cache_dtype`,
  `gemm_type` (the projections: `bfloat16`, `fp8_block`), `architecture` (the MLA dimensions
  come from it: `MLA_DIMS`) -> ops `mla_prefill`, `mla_decode`.
- `comm/nccl/.../nccl_perf.{parquet,csv}` and `comm/vllm/.../custom_allreduce_perf.*`:
  `op_name`, `num_gpus`, `message_size` (elements of `nccl_dtype` / `allreduce_dtype`),
  `latency` (ms).
Tables may also be CSV (`.csv`, or `.txt` as older AIConfigurator releases ship them); where a
folder holds both a `.parquet` and a CSV of one table, the Parquet file is read. The GPU of each
row comes from the `device` column when it names a known GPU, else `--gpu`, else the system
folder the table sits in (`h200_sxm`, ... as AIConfigurator names them; said in a note).
Rows of a GEMM or KV-cache dtype the cost model cannot price (nvfp4, int4 weight-only, ...
anything outside `_DTYPE`) are left out and counted in `rows.attrs["notes"]`, which `cost eval`
and `calibrate` print; a table holding only such rows is an error naming its dtypes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.importers import concat, read_table, relname, require_columns, resolve_gpu

MS = 1e-3
TABLES = ("gemm_perf", "context_attention_perf", "generation_attention_perf", "nccl_perf",
          "custom_allreduce_perf", "moe_perf", "mla_context_module_perf",
          "mla_generation_module_perf")
_DTYPE = {"bfloat16": "bf16", "float16": "bf16", "half": "bf16", "fp8": "fp8",
          "fp8_block": "fp8_block", "float8_e4m3fn": "fp8", "int8": "fp8"}
_MOE_DTYPE = {"bfloat16": "bf16", "float16": "bf16", "fp8": "fp8", "fp8_block": "fp8_block",
              "int4_wo": "int4", "w4a16_mxfp4": "mxfp4"}
# MoE shapes (hidden, inter, experts, top-k) of models whose experts are not gated (an up
# projection and squared ReLU, no gate): NVIDIA's Nemotron-3 Nano and Super. The tables do not
# say; these rows are a third cheaper than a gated expert of the same width.
NON_GATED_MOE = {(2688, 1856, 128, 6), (2048, 5120, 512, 22), (1024, 2688, 512, 22)}
# MLA dimensions per architecture (the `config.json` of each): hidden, q LoRA rank, KV LoRA rank,
# qk nope and rope head dims, v head dim
MLA_DIMS = {
    "DeepseekV3ForCausalLM": (7168, 1536, 512, 128, 64, 128),
    "DeepseekV2ForCausalLM": (5120, 1536, 512, 128, 64, 128),
    "KimiK2ForCausalLM": (7168, 1536, 512, 128, 64, 128),
}
_ELEM_BYTES = {"half": 2, "bfloat16": 2, "float16": 2, "float": 4, "float32": 4, "int8": 1,
               "fp8": 1}
# substrings of CUDA device names -> presets, most specific first; None: a GPU with no preset
# that a shorter key would otherwise misname (an L40 is not an L4, a GB200 not a B200)
_DEVICES = (
    ("h100 pcie", "h100-pcie"), ("h100", "h100-sxm"), ("h200", "h200-sxm"), ("gh200", "h200-sxm"),
    ("gb200", None), ("gb300", None), ("b200", "b200"), ("a100-sxm4-40gb", "a100-40g"),
    ("a100-pcie-40gb", "a100-40g"), ("a100", "a100-80g"), ("l40s", "l40s"), ("l40", None),
    ("l4", "l4"), ("a10g", "a10g"), ("mi300x", "mi300x"),
)
# AIConfigurator's system folders (systems/data/<system>/) -> presets
_SYSTEMS = {"a100_sxm": "a100-80g", "h100_sxm": "h100-sxm", "h200_sxm": "h200-sxm",
            "b200_sxm": "b200", "l40s": "l40s"}


def device_to_gpu(device: str) -> str | None:
    """`NVIDIA H100 80GB HBM3` -> `h100-sxm`; None when the name matches no preset."""
    d = str(device).lower()
    for key, name in _DEVICES:
        if key in d:
            return name
    return None


def _system_gpu(path: Path) -> tuple[str, str] | None:
    """(folder, preset) of the nearest enclosing AIConfigurator system folder, if any."""
    for part in reversed(path.parts[:-1]):
        if part.lower() in _SYSTEMS:
            return part, _SYSTEMS[part.lower()]
    return None


def _gpu_column(df: pd.DataFrame, gpu: str | None, path: Path,
                notes: list[str] | None = None) -> pd.Series:
    if "device" in df.columns:
        names = {d: device_to_gpu(d) for d in df["device"].unique()}
        if all(names.values()):
            return df["device"].map(names)
    if not gpu and (found := _system_gpu(path)) is not None:
        folder, gpu = found
        if notes is not None:
            note = f"GPU {gpu} from the system folder {folder!r} (the tables name no known device)"
            if note not in notes:
                notes.append(note)
    return pd.Series(resolve_gpu(gpu, str(path)), index=df.index)


def _base(df: pd.DataFrame, path: Path, root: Path, gpu: str | None, op,
          notes: list[str] | None = None) -> dict:
    name = relname(path, root)
    ops = op if isinstance(op, pd.Series) else pd.Series(op, index=df.index)
    return {"source": name,
            "row_id": [f"{name}:{i}:{o}" for i, o in zip(df.index, ops, strict=True)],
            "gpu": _gpu_column(df, gpu, path, notes), "op": ops,
            "kernel": df.get("kernel_source", ""), "measured_s": df["latency"].astype(float) * MS}


def _known(df: pd.DataFrame, col: str, path: Path, notes: list[str]) -> pd.DataFrame:
    """Rows whose `col` dtype the model prices; the rest counted in `notes`."""
    vals = df[col].astype(str)
    ok = vals.isin(list(_DTYPE))
    if not ok.any():
        raise ServePlanError(f"{path}: {col} {sorted(set(vals))}; expected one of {sorted(_DTYPE)}")
    if not ok.all():
        left = vals[~ok].value_counts()
        notes.append(f"{path.name}: left out {int((~ok).sum())} rows of {col} "
                     + ", ".join(f"{k} ({v})" for k, v in left.items())
                     + f" (the cost model prices {', '.join(sorted(set(_DTYPE.values())))})")
    return df[ok].reset_index(drop=True)


def read_gemm(path: Path, root: Path, gpu: str | None, notes: list[str] | None = None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ("gemm_dtype", "m", "n", "k", "latency"), path)
    df = _known(df, "gemm_dtype", path, notes if notes is not None else [])
    return concat([pd.DataFrame({**_base(df, path, root, gpu, "gemm", notes),
                                 "precision": df["gemm_dtype"].map(_DTYPE),
                                 "m": df["m"], "n": df["n"], "k": df["k"]})])


def read_attention(path: Path, root: Path, gpu: str | None,
                   notes: list[str] | None = None) -> pd.DataFrame:
    df = read_table(path)
    prefill = path.stem.startswith("context")
    need = ("batch_size", "isl", "num_heads", "num_key_value_heads", "head_dim", "latency")
    require_columns(df, need + (() if prefill else ("step",)), path)
    if "kv_cache_dtype" in df:
        df = _known(df, "kv_cache_dtype", path, notes if notes is not None else [])
    kv = df["kv_cache_dtype"].map(_DTYPE).fillna("bf16") if "kv_cache_dtype" in df else "bf16"
    cols = {**_base(df, path, root, gpu, "attn_prefill" if prefill else "attn_decode", notes),
            "kv_dtype": kv, "batch_size": df["batch_size"], "num_heads": df["num_heads"],
            "num_kv_heads": df["num_key_value_heads"], "head_dim": df["head_dim"],
            "window": df["window_size"] if "window_size" in df else 0}
    if prefill:
        cols.update(prefill_len=df["isl"], context_len=0)
    else:
        cols.update(context_len=df["isl"] + df["step"])
    return concat([pd.DataFrame(cols)])


def read_comm(path: Path, root: Path, gpu: str | None,
              notes: list[str] | None = None) -> pd.DataFrame:
    df = read_table(path)
    dtype_col = "nccl_dtype" if "nccl_dtype" in df.columns else "allreduce_dtype"
    require_columns(df, ("num_gpus", "message_size", "latency", dtype_col), path)
    op = df["op_name"].astype(str) if "op_name" in df.columns else pd.Series("all_reduce", index=df.index)
    elem = df[dtype_col].map(_ELEM_BYTES)
    if elem.isna().any():
        bad = sorted(set(df.loc[elem.isna(), dtype_col]))
        raise ServePlanError(f"{path}: {dtype_col} {bad}; expected one of {sorted(_ELEM_BYTES)}")
    base = _base(df, path, root, gpu, op, notes)
    if "backend" in df.columns:
        base["kernel"] = df["backend"]
    return concat([pd.DataFrame({**base, "num_gpus": df["num_gpus"],
                                 "msg_bytes": df["message_size"].astype(float) * elem})])


def read_moe(path: Path, root: Path, gpu: str | None, notes: list[str] | None = None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ("moe_dtype", "num_tokens", "hidden_size", "inter_size", "topk",
                         "num_experts", "moe_tp_size", "moe_ep_size", "latency"), path)
    vals = df["moe_dtype"].astype(str)
    ok = vals.isin(list(_MOE_DTYPE))
    if not ok.any():
        raise ServePlanError(f"{path}: moe_dtype {sorted(set(vals))}; expected one of {sorted(_MOE_DTYPE)}")
    if not ok.all() and notes is not None:
        left = vals[~ok].value_counts()
        notes.append(f"{path.name}: left out {int((~ok).sum())} rows of moe_dtype "
                     + ", ".join(f"{k} ({v})" for k, v in left.items())
                     + f" (the cost model prices {', '.join(sorted(_MOE_DTYPE))})")
    df = df[ok].reset_index(drop=True)
    routing = df["distribution"].astype(str) if "distribution" in df else "balanced"
    shape = zip(df["hidden_size"], df["inter_size"], df["num_experts"], df["topk"], strict=True)
    gated = [0 if s in NON_GATED_MOE else 1 for s in shape]
    return concat([pd.DataFrame({**_base(df, path, root, gpu, "moe", notes),
                                 "precision": df["moe_dtype"].map(_MOE_DTYPE),
                                 "num_tokens": df["num_tokens"], "hidden": df["hidden_size"],
                                 "inter": df["inter_size"], "topk": df["topk"],
                                 "num_experts": df["num_experts"], "moe_tp": df["moe_tp_size"],
                                 "moe_ep": df["moe_ep_size"], "moe_gated": gated,
                                 "routing": routing})])


def read_mla(path: Path, root: Path, gpu: str | None, notes: list[str] | None = None) -> pd.DataFrame:
    df = read_table(path)
    prefill = "context" in path.stem
    require_columns(df, ("num_heads", "batch_size", "isl", "architecture", "latency")
                    + (() if prefill else ("step",)), path)
    arch = df["architecture"].astype(str)
    known = arch.isin(list(MLA_DIMS))
    if not known.any():
        raise ServePlanError(f"{path}: architecture {sorted(set(arch))}; MLA dimensions known for "
                             f"{', '.join(sorted(MLA_DIMS))}")
    if not known.all() and notes is not None:
        left = arch[~known].value_counts()
        notes.append(f"{path.name}: left out {int((~known).sum())} rows of architecture "
                     + ", ".join(f"{k} ({v})" for k, v in left.items())
                     + f" (MLA dimensions known for {', '.join(sorted(MLA_DIMS))})")
    df = df[known].reset_index(drop=True)
    if "kv_cache_dtype" in df:
        df = _known(df, "kv_cache_dtype", path, notes if notes is not None else [])
    if "gemm_type" in df:
        df = _known(df, "gemm_type", path, notes if notes is not None else [])
        arch = df["architecture"].astype(str)
    dims = np.array([MLA_DIMS[a] for a in arch], dtype=np.int64).reshape(-1, 6)
    cols = {**_base(df, path, root, gpu, "mla_prefill" if prefill else "mla_decode", notes),
            "precision": df["gemm_type"].map(_DTYPE) if "gemm_type" in df else "bf16",
            "kv_dtype": df["kv_cache_dtype"].map(_DTYPE) if "kv_cache_dtype" in df else "bf16",
            "batch_size": df["batch_size"], "num_heads": df["num_heads"],
            "num_kv_heads": 1, "hidden": dims[:, 0], "q_lora_rank": dims[:, 1],
            "kv_lora_rank": dims[:, 2], "qk_nope_dim": dims[:, 3], "qk_rope_dim": dims[:, 4],
            "v_head_dim": dims[:, 5]}
    if prefill:
        cols.update(prefill_len=df["isl"], context_len=0)
    else:  # one new token per sequence over `step` cached ones
        cols.update(prefill_len=df["isl"], context_len=df["step"])
    return concat([pd.DataFrame(cols)])


def _table_files(root: Path) -> list[Path]:
    if root.is_file():
        if root.stem not in TABLES:
            raise ServePlanError(f"{root}: not an AIConfigurator table; expected one of "
                                 f"{', '.join(t + '.parquet' for t in TABLES)} (or .csv / .txt)")
        return [root]
    found = [p for p in root.rglob("*") if p.is_file() and p.stem in TABLES
             and p.suffix.lower() in (".parquet", ".csv", ".txt")]
    # a CSV beside a Parquet copy of the same table is the same data: read the Parquet only
    keep = [p for p in found if not (p.suffix.lower() != ".parquet" and p.with_suffix(".parquet").exists())]
    # and a .txt beside a .csv of the same table: read the .csv
    keep = [p for p in keep if not (p.suffix.lower() == ".txt" and p.with_suffix(".csv").exists())]
    return sorted(keep)


def load_aiconfigurator(root: Path, gpu: str | None) -> pd.DataFrame:
    files = _table_files(root)
    if not files:
        raise ServePlanError(f"{root}: no AIConfigurator tables ({', '.join(TABLES)}) found")
    frames: list[pd.DataFrame] = []
    notes: list[str] = []
    for f in files:
        if f.stem == "gemm_perf":
            frames.append(read_gemm(f, root, gpu, notes))
        elif f.stem == "moe_perf":
            frames.append(read_moe(f, root, gpu, notes))
        elif f.stem.startswith("mla_"):
            frames.append(read_mla(f, root, gpu, notes))
        elif "attention" in f.stem:
            frames.append(read_attention(f, root, gpu, notes))
        else:
            frames.append(read_comm(f, root, gpu, notes))
    out = concat(frames)
    out = out[np.isfinite(out["measured_s"])].reset_index(drop=True)
    out.attrs["notes"] = notes
    return out
