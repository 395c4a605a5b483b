"""`load_runs(path, fmt, ...)`: the runs of a results file, read by the module of its format.

| format         | file                                                   | deployment       |
|----------------|--------------------------------------------------------|------------------|
| `vllm-bench`   | `vllm bench serve --save-result` JSON (or JSON lines)  | given            |
| `sglang-bench` | SGLang `bench_serving` JSON lines                      | given            |
| `aiperf`       | aiperf / GenAI-Perf `profile_export_*.json`, aiperf CSV | given            |
| `aic-silicon`  | AIConfigurator's silicon CSV                           | in each row      |

A client's file does not say which deployment ran it, and aiperf's not which engine: the
caller gives them (`deployment`: a Deployment, a plan file, or a deployment object or
shorthand as in `sim.runs.deployments`), with the engine version and, for a file that does not
hold its load (aiperf's CSV), the concurrency or rate. `sim.runs.manifest.load_manifest` reads
many files, each with its own.
"""

from __future__ import annotations

from pathlib import Path

from costmodel.errors import ServePlanError
from sim.runs.aic_silicon import read_aic_silicon
from sim.runs.aiperf import read_aiperf
from sim.runs.deployments import deployment_from
from sim.runs.fields import RunContext
from sim.runs.sglang_bench import read_sglang_bench
from sim.runs.types import MAX_CONCURRENCY, RATE_RANGE, MeasuredRun
from sim.runs.vllm_bench import read_vllm_bench

READERS = {"vllm-bench": read_vllm_bench, "sglang-bench": read_sglang_bench, "aiperf": read_aiperf}
RUN_FORMATS = (*READERS, "aic-silicon")


def load_runs(path: str | Path, fmt: str, *, deployment=None, engine: str | None = None,
              engine_version: str | None = None, concurrency: int | None = None,
              rate_rps: float | None = None, runs: tuple[int, ...] | None = None) -> list[MeasuredRun]:
    """Every run in the results file `path` (or those numbered `runs`, from 1, in a file of
    runs appended one per line), read as format `fmt` (one of RUN_FORMATS).

    `deployment` (a Deployment, a plan file path, or a deployment object or shorthand dict)
    and `engine` (vllm | sglang) say what served a client's runs; `engine_version`,
    `concurrency` and `rate_rps` fill in what the file does not say (a value the file holds
    must agree). An aic-silicon file carries all of these in its rows.
    """
    p = Path(path)
    if fmt not in RUN_FORMATS:
        raise ServePlanError(f"run format {fmt!r}; expected one of {', '.join(RUN_FORMATS)}")
    try:
        found, folder = p.is_file(), p.is_dir()
    except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
        found = folder = False
    if not found:
        raise ServePlanError(f"{str(p)[:200]}: " + ("a folder; expected a results file (a folder of "
                             "runs: a manifest lists them)" if folder else "no such results file"))
    if concurrency is not None and (isinstance(concurrency, bool) or not isinstance(concurrency, int)
                                    or not 1 <= concurrency <= MAX_CONCURRENCY):
        raise ServePlanError(f"{p}: concurrency {repr(concurrency)[:40]}; expected a whole number in "
                             f"[1, {MAX_CONCURRENCY:,}]")
    if rate_rps is not None and (isinstance(rate_rps, bool) or not isinstance(rate_rps, (int, float))
                                 or not RATE_RANGE[0] <= rate_rps <= RATE_RANGE[1]):
        raise ServePlanError(f"{p}: rate_rps {repr(rate_rps)[:40]}; expected requests/s in "
                             f"[{RATE_RANGE[0]:g}, {RATE_RANGE[1]:g}]")
    if runs is not None and (not isinstance(runs, (list, tuple)) or not runs or any(
            isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in runs)):
        raise ServePlanError(f"{p}: runs {runs!r}; expected a list of run numbers >= 1 (a file's "
                             "first run is 1)")
    given = {"deployment": deployment, "engine": engine, "engine_version": engine_version,
             "concurrency": concurrency, "rate_rps": rate_rps, "runs": runs}
    if fmt == "aic-silicon":
        extra = sorted(k for k, v in given.items() if v is not None)
        if extra:
            raise ServePlanError(f"{p}: an aic-silicon file names each run's deployment, engine and "
                                 f"load in its rows; {', '.join(extra)} cannot be given")
        return read_aic_silicon(p)
    dep = deployment_from(deployment, where=f"{p.name}: deployment") if deployment is not None else None
    ctx = RunContext(deployment=dep, engine=engine, engine_version=engine_version,
                     concurrency=concurrency, rate_rps=rate_rps,
                     runs=tuple(runs) if runs is not None else None)
    return READERS[fmt](p, ctx)
