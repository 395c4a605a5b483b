"""`load_runs(path, fmt)`: the runs of a results file, read by the module of its format.

Apart from `MeasuredRun` (sim/runs/types.py), which every format module imports: this module
imports them, so no format module and the type import each other.
"""

from __future__ import annotations

from pathlib import Path

from costmodel.errors import ServePlanError
from sim.runs.aic_silicon import read_aic_silicon
from sim.runs.types import MeasuredRun

RUN_FORMATS = ("aic-silicon",)


def load_runs(path: str | Path, fmt: str) -> list[MeasuredRun]:
    """Every run in the results file `path`, read as format `fmt` (one of RUN_FORMATS)."""
    p = Path(path)
    if fmt not in RUN_FORMATS:
        raise ServePlanError(f"run format {fmt!r}; expected one of {', '.join(RUN_FORMATS)}")
    if not p.is_file():
        raise ServePlanError(f"{p}: no such results file")
    return read_aic_silicon(p)
