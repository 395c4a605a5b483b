"""Vidur profiling CSVs -> measured rows (native schema).

Layout (as microsoft/vidur publishes it; a folder or any single one of these files):
- `compute/<gpu>/<org>/<model>/mlp.csv`: per-operator times of one layer, columns
  `time_stats.<op>.{min,max,mean,median,std}` in ms against `num_tokens` and
  `num_tensor_parallel_workers`, with the model's shape (`n_head`, `n_kv_head`, `n_embd`,
  `n_expanded_embd`, `vocab_size`, `use_gated_mlp`).
- `compute/<gpu>/attention.csv`: attention prefill / decode times in ms against `batch_size`,
  `kv_cache_size`, `prefill_chunk_size`, `is_prefill`, heads and TP degree.
- `network/<cluster>/all_reduce.csv`, `send_recv.csv`: NCCL times in ms against `size` (bytes),
  `num_workers` and `devices_per_node`.

The median of Vidur's repeated timings is the measured value (robust to the odd slow run).
Every GEMM's shape is computed from the model columns in the file itself, so rows do not need a
model preset; `model` still names the preset when the folder name matches one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.importers import (
    concat,
    files_under,
    read_table,
    relname,
    require_columns,
    resolve_gpu,
)

MS = 1e-3
# Vidur op name -> native op name
_MLP_OPS = {
    "emb": "embedding",
    "input_layernorm": "input_layernorm",
    "attn_pre_proj": "qkv_proj",
    "attn_rope": "rope",
    "attn_post_proj": "o_proj",
    "post_attention_layernorm": "post_attention_layernorm",
    "mlp_up_proj": "mlp_up_proj",
    "mlp_act": "mlp_act",
    "mlp_down_proj": "mlp_down_proj",
    "add": "residual_add",
}
_SHAPE_COLS = ("n_head", "n_kv_head", "n_embd", "n_expanded_embd", "num_tokens",
               "num_tensor_parallel_workers")
_ATTN_COLS = ("n_embd", "n_q_head", "n_kv_head", "num_tensor_parallel_workers", "batch_size",
              "prefill_chunk_size", "kv_cache_size", "is_prefill")
_NET_COLS = ("num_workers", "size", "devices_per_node")
FILE_NAMES = ("mlp.csv", "attention.csv", "all_reduce.csv", "send_recv.csv")


def _model_name(path: Path) -> str:
    """The preset for `.../<org>/<model>/mlp.csv`, else "<org>/<model>"."""
    from costmodel.specs import load_model

    folder = path.parent.name
    try:
        return load_model(folder).name
    except ServePlanError:
        return f"{path.parent.parent.name}/{folder}"


def _median(df: pd.DataFrame, op: str) -> pd.Series:
    return pd.to_numeric(df[f"time_stats.{op}.median"], errors="coerce") * MS


def _gpu_from_path(path: Path, gpu: str | None) -> str:
    """Vidur names the GPU only by folder (`compute/a100/...`); `--gpu` wins when given."""
    if gpu:
        return resolve_gpu(gpu, str(path))
    parts = [p.lower() for p in path.resolve().parts]
    for top in ("compute", "network"):
        if top in parts and parts.index(top) + 1 < len(parts):
            guess = parts[parts.index(top) + 1].split("_")[0]
            if guess == "a100":
                return "a100-80g"  # Vidur's A100 profiles (compute and DGX) are A100-80GB
            try:
                return resolve_gpu(guess, str(path))
            except ServePlanError:
                pass
    return resolve_gpu(None, str(path))


def read_mlp(path: Path, root: Path, gpu: str | None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, _SHAPE_COLS, path)
    ops = [o for o in _MLP_OPS if f"time_stats.{o}.median" in df.columns]
    if not ops:
        raise ServePlanError(f"{path}: missing column(s) time_stats.<op>.median for any of "
                             f"{', '.join(_MLP_OPS)}")
    tp = df["num_tensor_parallel_workers"].astype(int)
    T = df["num_tokens"].astype(int)
    h = df["n_embd"].astype(int)
    heads, kvh = df["n_head"].astype(int), df["n_kv_head"].astype(int)
    hd = h // heads
    q_loc = heads // tp
    kv_loc = np.maximum(1, kvh // tp)  # KV heads replicated when tp > kv heads
    inter = df["n_expanded_embd"].astype(int) // tp
    gated = df["use_gated_mlp"].astype(str).str.lower().isin(("true", "1")) \
        if "use_gated_mlp" in df.columns else pd.Series(True, index=df.index)
    up = np.where(gated, 2, 1)
    # (m, n, k) per op: GEMM shapes, or (tokens, output width, input width) for elementwise ops
    shapes = {
        "embedding": (T, h, h),
        "input_layernorm": (T, h, h),
        "post_attention_layernorm": (T, h, h),
        "qkv_proj": (T, (q_loc + 2 * kv_loc) * hd, h),
        "rope": (T, (q_loc + kv_loc) * hd, (q_loc + kv_loc) * hd),
        "o_proj": (T, h, q_loc * hd),
        "mlp_up_proj": (T, up * inter, h),
        "mlp_act": (T, inter, up * inter),
        "mlp_down_proj": (T, h, inter),
        "residual_add": (T, h, 2 * h),
    }
    name = relname(path, root)
    model = _model_name(path)
    gpu_name = _gpu_from_path(path, gpu)
    frames = []
    for vop in ops:
        op = _MLP_OPS[vop]
        m, n, k = shapes[op]
        frames.append(pd.DataFrame({
            "source": name, "row_id": [f"{name}:{i + 2}:{op}" for i in range(len(df))],
            "gpu": gpu_name, "model": model, "op": op, "tp": tp, "m": m, "n": n, "k": k,
            "num_tokens": T, "measured_s": _median(df, vop),
        }))
    return concat(frames)


def read_attention(path: Path, root: Path, gpu: str | None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, _ATTN_COLS, path)
    tp = df["num_tensor_parallel_workers"].astype(int)
    pre = df["is_prefill"].astype(str).str.lower().isin(("true", "1"))
    heads = df["n_q_head"].astype(int)
    name = relname(path, root)
    frames = []
    for is_pre, op, col in ((True, "attn_prefill", "attn_prefill"), (False, "attn_decode", "attn_decode")):
        sel = df[pre == is_pre]
        if sel.empty:
            continue
        require_columns(sel, (f"time_stats.{col}.median",), path)
        t = tp[sel.index]
        frames.append(pd.DataFrame({
            "source": name, "row_id": [f"{name}:{i + 2}:{op}" for i in sel.index],
            "gpu": _gpu_from_path(path, gpu), "op": op, "kernel": sel.get("attention_backend", ""),
            "tp": t, "batch_size": sel["batch_size"],
            "prefill_len": sel["prefill_chunk_size"] if is_pre else 0,
            "context_len": sel["kv_cache_size"],
            "num_heads": heads[sel.index] // t,
            "num_kv_heads": np.maximum(1, sel["n_kv_head"].astype(int) // t),
            "head_dim": sel["n_embd"].astype(int) // heads[sel.index],
            "measured_s": _median(sel, col),
        }))
    return concat(frames)


def read_network(path: Path, root: Path, gpu: str | None) -> pd.DataFrame:
    df = read_table(path)
    op = "send_recv" if "send_recv" in path.name else "all_reduce"
    require_columns(df, _NET_COLS + (f"time_stats.{op}.median",), path)
    name = relname(path, root)
    n = df["num_workers"].astype(int)
    # the group spans nodes when it has more workers than devices on one node; on Vidur's
    # `*_pairwise_nvlink` clusters only pairs of GPUs share NVLink, so a larger group inside a
    # node runs its ring over PCIe
    internode = n > df["devices_per_node"]
    pairwise = "pairwise_nvlink" in path.parent.name
    kernel = np.where(internode, "nccl-internode",
                      np.where(pairwise & (n > 2), "nccl-pcie", "nccl"))
    return concat([pd.DataFrame({
        "source": name, "row_id": [f"{name}:{i + 2}:{op}" for i in range(len(df))],
        "gpu": _gpu_from_path(path, gpu), "op": op,
        "kernel": kernel,
        "num_gpus": n, "msg_bytes": df["size"].astype(float), "measured_s": _median(df, op),
    })])


def load_vidur(root: Path, gpu: str | None) -> pd.DataFrame:
    files = files_under(root, FILE_NAMES)
    if not files:
        raise ServePlanError(f"{root}: no Vidur profile files ({', '.join(FILE_NAMES)}) found")
    frames = []
    for f in files:
        if f.name == "mlp.csv":
            frames.append(read_mlp(f, root, gpu))
        elif f.name == "attention.csv":
            frames.append(read_attention(f, root, gpu))
        else:
            frames.append(read_network(f, root, gpu))
    return concat(frames)
