"""The native measured-rows CSV (or Parquet): the schema of `costmodel.importers`, as written
by `serveplan cost eval --out`. Only `op` and `measured_s` are required; a missing `gpu`
column takes `--gpu`. Extra columns (such as `predicted_s`) are ignored.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from costmodel.errors import ServePlanError
from costmodel.importers import OPS, concat, read_table, relname, require_columns, resolve_gpu


def load_native(path: Path, gpu: str | None) -> pd.DataFrame:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in (".csv", ".parquet"))
        if not files:
            raise ServePlanError(f"{path}: no .csv or .parquet files found")
        return concat([_read(f, path, gpu) for f in files])
    return _read(path, path, gpu)


def _read(path: Path, root: Path, gpu: str | None) -> pd.DataFrame:
    df = read_table(path)
    require_columns(df, ("op", "measured_s"), path)
    bad = sorted(set(df["op"].astype(str)) - set(OPS))
    if bad:
        raise ServePlanError(f"{path}: op {bad[:5]} not known; expected one of {', '.join(OPS)}")
    name = relname(path, root)
    if "gpu" not in df.columns or df["gpu"].isna().any() or (df["gpu"].astype(str) == "").any():
        fill = resolve_gpu(gpu, str(path))
        df["gpu"] = df["gpu"].fillna(fill).replace("", fill) if "gpu" in df.columns else fill
    from costmodel.hardware import load_gpu

    df["gpu"] = df["gpu"].map({g: load_gpu(str(g)).name for g in df["gpu"].unique()})
    if "source" not in df.columns:
        df["source"] = name
    if "row_id" not in df.columns:
        df["row_id"] = [f"{name}:{i + 2}:{o}" for i, o in zip(df.index, df["op"], strict=True)]
    out = concat([df])
    if out["measured_s"].isna().any() or (out["measured_s"] <= 0).any():
        raise ServePlanError(f"{path}: measured_s must be a positive number of seconds in every row")
    return out


def write_native(rows: pd.DataFrame, path: str | Path) -> None:
    """Write rows (native schema plus any extra columns, e.g. predicted_s) as CSV."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    rows.to_csv(p, index=False)



