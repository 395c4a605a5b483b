"""Splitwise `perf_model.csv` -> measured rows (native schema).

Each measured row (`model, hardware, prompt_size, batch_size, token_size, prompt_time,
token_time, tensor_parallel`; times in ms) yields two rows:
- `prefill_step`: the prefill of `batch_size` prompts of `prompt_size` tokens (`prompt_time`);
- `decode_step`: one decode iteration of `batch_size` sequences at the mean context over the
  generation, `prompt_size + (token_size - 1) / 2` tokens, rounded (`token_time`).
Both carry `prefill_len = prompt_size` and `gen_len = token_size`: the run held `batch_size`
sequences of up to `prompt_size + token_size` tokens in its KV cache (`measured.kv_fit_mask`).
The GPU comes from `hardware` when it names a preset, else `--gpu`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.hardware import load_gpu
from costmodel.importers import concat, read_table, relname, require_columns, resolve_gpu

MS = 1e-3
COLUMNS = ("model", "prompt_size", "batch_size", "token_size", "prompt_time", "token_time",
           "tensor_parallel")


def _model(name: str) -> str:
    from costmodel.specs import load_model

    try:
        return load_model(name).name
    except ServePlanError:
        return str(name)  # kept; rows of a model with no preset are skipped at prediction


def _gpus(df: pd.DataFrame, gpu: str | None, path: Path) -> pd.Series:
    if gpu:
        return pd.Series(resolve_gpu(gpu, str(path)), index=df.index)
    if "hardware" not in df.columns:
        return pd.Series(resolve_gpu(None, str(path)), index=df.index)
    names = {}
    for h in df["hardware"].unique():
        try:
            names[h] = load_gpu(str(h)).name
        except ServePlanError:
            names[h] = resolve_gpu(None, f"{path} (hardware {h!r})")
    return df["hardware"].map(names)


def load_splitwise(path: Path, gpu: str | None) -> pd.DataFrame:
    if path.is_dir():
        files = sorted(path.rglob("perf_model*.csv"))
        if not files:
            raise ServePlanError(f"{path}: no Splitwise perf_model*.csv found")
        return concat([_read(f, path, gpu) for f in files])
    return _read(path, path, gpu)


def _read(path: Path, root: Path, gpu: str | None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, COLUMNS, path)
    name = relname(path, root)
    models = df["model"].map({m: _model(m) for m in df["model"].unique()})
    common = {"source": name, "gpu": _gpus(df, gpu, path), "model": models,
              "tp": df["tensor_parallel"], "batch_size": df["batch_size"],
              "gen_len": df["token_size"]}
    ctx = (df["prompt_size"] + (df["token_size"] - 1) / 2).round()
    prefill = pd.DataFrame({**common, "op": "prefill_step",
                            "row_id": [f"{name}:{i + 2}:prefill_step" for i in df.index],
                            "prefill_len": df["prompt_size"],
                            "measured_s": df["prompt_time"].astype(float) * MS})
    decode = pd.DataFrame({**common, "op": "decode_step",
                           "row_id": [f"{name}:{i + 2}:decode_step" for i in df.index],
                           "prefill_len": df["prompt_size"], "context_len": ctx,
                           "measured_s": df["token_time"].astype(float) * MS})
    return concat([prefill, decode])
