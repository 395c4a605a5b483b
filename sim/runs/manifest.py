"""A run manifest: which results files to read, and what served each (YAML or JSON).

    defaults:                   # optional: every entry's values unless it gives its own
      engine: vllm
      engine_version: 0.12.0
      deployment: {model: llama-3.1-8b, gpu: h100, tp: 1}
    runs:
      - file: vllm/c16.json     # relative to the manifest
        format: vllm-bench
      - file: sglang/runs.jsonl
        format: sglang-bench
        engine: sglang
        runs: [2, 3]                              # its second and third runs
        deployment: plans/qwen-tp2.json          # a plan file (relative to the manifest)
      - file: aiperf/c32/profile_export_aiperf.csv
        format: aiperf
        concurrency: 32                           # the CSV does not hold its load
        deployment: {model: qwen3-32b, pools: [{role: colocated, gpu: h100, tp: 2}]}

An entry's keys: `file` and `format` (RUN_FORMATS), and what `load_runs` takes: `deployment`
(a plan file path, an inline deployment object, or the shorthand `model`, `gpu`, `tp`, `pp`,
`precision`, `kv_dtype`, `max_num_seqs`, `max_num_batched_tokens`, ...), `engine`,
`engine_version`, `concurrency`, `rate_rps`, and `runs`: which runs of a file of appended
runs the entry reads (numbered from 1; all when left out), so that runs on different
deployments in one file each get their own. An `aic-silicon` entry takes only `file` and
`format`. YAML is read with PyYAML's safe loader; a `.json` manifest as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from costmodel.errors import ServePlanError
from sim.runs.deployments import deployment_from
from sim.runs.load import RUN_FORMATS, load_runs
from sim.runs.types import MeasuredRun

ENTRY_KEYS = ("file", "format", "deployment", "engine", "engine_version", "concurrency", "rate_rps",
              "runs")
DEFAULT_KEYS = ENTRY_KEYS[1:-1]


def _read(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ServePlanError(f"cannot read run manifest {path}: {getattr(e, 'strerror', None) or e}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ServePlanError(f"{path}: line {e.lineno} column {e.colno}: not valid JSON "
                                 f"({e.msg})") from None
        except (ValueError, RecursionError) as e:  # an int past Python's limit; deep nesting
            raise ServePlanError(f"{path}: not valid JSON ({type(e).__name__})") from None
    import yaml  # only a YAML manifest needs PyYAML

    try:
        return yaml.safe_load(text)
    except (ValueError, RecursionError) as e:  # an int past Python's limit; deep nesting
        raise ServePlanError(f"{path}: not valid YAML ({type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f"line {mark.line + 1} column {mark.column + 1}: " if mark is not None else ""
        raise ServePlanError(f"{path}: {at}not valid YAML ({getattr(e, 'problem', None) or e})") from None


def _keys(d, allowed: tuple[str, ...], where: str) -> dict:
    if not isinstance(d, dict):
        raise ServePlanError(f"{where}: expected a mapping of {', '.join(allowed)}, got "
                             f"{type(d).__name__}")
    unknown = sorted(set(d) - set(allowed))
    if unknown:
        raise ServePlanError(f"{where}: unknown keys {unknown}; expected {', '.join(allowed)}")
    return d


def load_manifest(path: str | Path) -> list[MeasuredRun]:
    """Every run of every results file the manifest at `path` lists (module doc), in order."""
    p = Path(path)
    doc = _read(p)
    if not isinstance(doc, dict) or not isinstance(doc.get("runs"), list) or not doc["runs"]:
        raise ServePlanError(f"{p}: a run manifest is a mapping with a non-empty list 'runs' (and "
                             "optional 'defaults')")
    _keys(doc, ("defaults", "runs"), str(p))
    defaults = _keys(doc.get("defaults") or {}, DEFAULT_KEYS, f"{p}: defaults")
    runs: list[MeasuredRun] = []
    seen: dict[tuple[Path, str], int] = {}  # (file, run id) -> the entry that read it
    for i, raw in enumerate(doc["runs"], 1):
        where = f"{p}: runs[{i}]"
        raw = _keys(raw, ENTRY_KEYS, where)
        fmt = raw.get("format", defaults.get("format"))
        # an aic-silicon file describes its own runs: the defaults do not apply to it
        entry = {**raw, "format": fmt} if fmt == "aic-silicon" else {**defaults, **raw}
        if not isinstance(entry.get("file"), str) or not entry["file"].strip():
            raise ServePlanError(f"{where}: 'file' must name a results file")
        if fmt not in RUN_FORMATS:
            raise ServePlanError(f"{where} ({entry['file']}): format {fmt!r}; expected one of "
                                 f"{', '.join(RUN_FORMATS)}")
        f = Path(entry["file"]).expanduser()
        f = f if f.is_absolute() else p.parent / f
        dep = entry.get("deployment")
        if dep is not None:
            at = f"{where} ({entry['file']}): deployment"
            try:
                dep = deployment_from(dep, base_dir=p.parent, where=at)
            except ServePlanError as e:  # a plan file's own errors do not say which entry named it
                raise ServePlanError(str(e) if str(e).startswith(where) else f"{at}: {e}") from None
        version = _version(entry.get("engine_version"), where)
        try:
            read = load_runs(f, fmt, deployment=dep, engine=entry.get("engine"),
                             engine_version=version, concurrency=entry.get("concurrency"),
                             rate_rps=entry.get("rate_rps"), runs=entry.get("runs"))
        except ServePlanError as e:
            raise ServePlanError(f"{where}: {e}") from None
        for r in read:  # one measurement fitted twice would weigh double, and leak when left out
            key = (f.resolve(), r.run_id)
            if key in seen:
                raise ServePlanError(f"{where} ({entry['file']}): run {r.run_id} is read by "
                                     f"runs[{seen[key]}] too; expected each run once (a file of runs "
                                     "on several deployments: give each entry its `runs`)")
            seen[key] = i
        runs.extend(read)
    return runs


def _version(v, where: str) -> str | None:
    """An engine version as text. YAML and JSON read an unquoted `0.10` as the number 0.1, whose
    trailing zero is lost: a fractional number is refused (quote it); a whole one is its text."""
    if v is None or isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ServePlanError(f"{where}: engine_version {v!r}; expected a version string")
    if isinstance(v, float) and not v.is_integer():
        raise ServePlanError(f"{where}: engine_version {v!r} was read as a number, which may have "
                             "lost a trailing zero (0.10 reads 0.1); quote it as the engine prints "
                             'it, as engine_version: "0.10.1"')
    return str(int(v))
