"""CalibrationProfile: fitted cost-model parameters per GPU, stored as versioned JSON.

Schema (version 2; version 1 files, which have no "tables", still load):
{
  "schema": "serveplan.calibration",
  "version": 2,
  "created": "2026-11-22T10:00:00Z",
  "source": "free text: what was measured, where",
  "messages": ["h200-sxm: fitted kernel_overhead_s = ... sits at its physical ceiling ..."],
  "gpus": {
    "h100-sxm": {
      "params": {"gemm_compute_eff": 0.74, ...},     # costmodel.roofline.Efficiencies fields
      "residuals": {"n": 812, "mape": 0.061, "p90_abs_rel_err": 0.12, "by_op": {...}},
      "uncertainty_rel": 0.08,                        # relative 1-sigma of step-time predictions
      "sources": {"gemm_compute_eff": "fit: rows of torch:matmul", ...},  # where each value came from
      "latency_interval": {"ttft": [-0.2, 0.15], "tpot": [-0.05, 0.06]},  # held-out engine runs
                                # (means; ttft_p50, tpot_p99, ...: percentiles the runs measured)
      "latency_domain": {"engines": ["sglang"], "tp": [2, 4], "output_tokens": [256, 256], ...},
                                                      # what those runs were (costmodel.run_domain)
      "tables": {"gemm": {...}, "attn_decode": {...}}, # optional: costmodel.tables corrections
      "hardware": {"name": "cpu", "bf16_flops": ...}   # optional: a device measured at run time
    }
  }
}
Every later command accepts `--calibration FILE`; a GPU missing from the file keeps the defaults.
`messages` (fitted parameters at a bound, costmodel.bounds) and `sources` are optional: files
written before they existed load without them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path

from costmodel.arch_defaults import default_efficiencies
from costmodel.efficiencies import PARAM_BOUNDS, Efficiencies
from costmodel.errors import ServePlanError
from costmodel.hardware import ARCHS, HardwareSpec, load_gpu, register_measured
from costmodel.jsonio import json_number, read_json, short_repr
from costmodel.run_domain import parse_domain

# a latency interval's bounds, log(measured / predicted): past e^+-20 no prediction was made
# (and e^709 overflows); real held-out intervals stay within +-2
MAX_LOG_RATIO = 20.0
# latency_interval keys: each metric's mean, and its percentiles where the runs measured them
PROFILE_KEYS = frozenset({"schema", "version", "created", "source", "messages", "gpus"})
GPU_KEYS = frozenset({"params", "residuals", "uncertainty_rel", "sources", "latency_interval",
                      "latency_domain", "tables", "hardware"})
INTERVAL_KEYS = tuple(m if st == "mean" else f"{m}_{st}" for m in ("ttft", "tpot")
                      for st in ("mean", "p50", "p90", "p99"))

SCHEMA = "serveplan.calibration"
VERSION = 2
READS_VERSIONS = (1, 2)


@dataclass
class GpuCalibration:
    params: Efficiencies
    residuals: dict = field(default_factory=dict)
    uncertainty_rel: float = 0.0
    sources: dict[str, str] = field(default_factory=dict)  # parameter -> where its value came from
    # metric (ttft, tpot: means; ttft_p50, ...: percentiles the runs measured) -> [q10, q90] of
    # log(measured / predicted) over engine runs a fit left out (sim.runs.fit): an 80% interval
    # around a prediction
    latency_interval: dict[str, list[float]] = field(default_factory=dict)
    # the engines, models, modes, TP sizes, precisions and mean lengths of those runs: a plan
    # unlike them gets the interval with a line per difference (costmodel.run_domain)
    latency_domain: dict = field(default_factory=dict)


@dataclass
class CalibrationProfile:
    gpus: dict[str, GpuCalibration] = field(default_factory=dict)
    source: str = ""
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    tables: dict = field(default_factory=dict)  # GPU name -> costmodel.tables.MeasuredTables
    hardware: dict = field(default_factory=dict)  # name -> HardwareSpec of a measured device
    messages: list[str] = field(default_factory=list)  # e.g. fitted parameters at a bound

    def calibration_for(self, gpu_name: str) -> GpuCalibration | None:
        """The GPU's entry, found by its preset name or any alias of it (a profile built in this
        process may be keyed `h100` where the cost model asks for `h100-sxm`); None if absent."""
        return _lookup(self.gpus, gpu_name)

    def efficiencies_for(self, gpu_name: str) -> Efficiencies:
        cal = self.calibration_for(gpu_name)
        return cal.params if cal is not None else default_efficiencies(gpu_name)

    def uncertainty_for(self, gpu_name: str) -> float:
        cal = self.calibration_for(gpu_name)
        return cal.uncertainty_rel if cal is not None else 0.0

    def tables_for(self, gpu_name: str):
        return _lookup(self.tables, gpu_name)

    # --- JSON --------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "version": VERSION,
            "created": self.created,
            "source": self.source,
            "messages": list(self.messages),
            "gpus": {name: self._gpu_dict(name, c) for name, c in self.gpus.items()},
        }

    def _gpu_dict(self, name: str, c: GpuCalibration) -> dict:
        d = {"params": c.params.to_dict(), "residuals": c.residuals,
             "uncertainty_rel": c.uncertainty_rel}
        if c.sources:
            d["sources"] = dict(c.sources)
        if c.latency_interval:
            d["latency_interval"] = {k: list(v) for k, v in c.latency_interval.items()}
        if c.latency_domain:
            d["latency_domain"] = {k: list(v) for k, v in c.latency_domain.items()}
        if self.tables.get(name) is not None:
            d["tables"] = self.tables[name].to_dict()
        if self.hardware.get(name) is not None:
            d["hardware"] = asdict(self.hardware[name])
        return d

    def save(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, d: dict, where: str = "calibration") -> CalibrationProfile:
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ServePlanError(f"{where}: not a ServePlan calibration profile (schema must be {SCHEMA!r})")
        if d.get("version") not in READS_VERSIONS:
            raise ServePlanError(f"{where}: calibration version {d.get('version')!r}; this ServePlan reads versions {', '.join(map(str, READS_VERSIONS))}")
        odd = sorted(set(d) - PROFILE_KEYS)
        if odd:  # a misspelt key would be ignored, and what it holds lost without a word
            raise ServePlanError(f"{where}: {odd[0]!r} is not a profile key; expected keys among "
                                 f"{', '.join(sorted(PROFILE_KEYS))}")
        gpus_raw = d.get("gpus")
        if not isinstance(gpus_raw, dict) or not gpus_raw:
            raise ServePlanError(f"{where}: 'gpus' must be a non-empty object of GPU name -> params")
        gpus: dict[str, GpuCalibration] = {}
        tables: dict = {}
        hardware: dict = {}
        for name, entry in gpus_raw.items():
            try:
                if isinstance(entry, dict) and entry.get("hardware") is not None:
                    hw = _hardware(entry["hardware"], f"{where}: gpus.{name}.hardware")
                    if hw.name.strip().lower() != str(name).strip().lower():
                        raise ServePlanError(f"gpus.{name}.hardware.name = {hw.name!r}; a measured "
                                             f"device's entry is keyed by its name")
                    hardware[name] = register_measured(hw)
                gpu = load_gpu(name).name  # unknown names fail with the list of known ones
            except ServePlanError as e:
                msg = str(e)
                raise ServePlanError(msg if msg.startswith(where) else f"{where}: {msg}") from None
            if gpu in gpus:
                other = next(k for k in gpus_raw if k != name and load_gpu(k).name == gpu)
                raise ServePlanError(f"{where}: gpus.{other} and gpus.{name} both name {gpu}; "
                                     "keep one entry per GPU")
            if not isinstance(entry, dict) or not isinstance(entry.get("params"), dict):
                raise ServePlanError(f"{where}: gpus.{name}.params must be an object")
            odd = sorted(set(entry) - GPU_KEYS)
            if odd:
                raise ServePlanError(f"{where}: gpus.{name}.{odd[0]} is not a GPU entry's key; expected "
                                     f"keys among {', '.join(sorted(GPU_KEYS))}")
            params = entry["params"]
            for k, v in params.items():
                if k not in PARAM_BOUNDS:
                    raise ServePlanError(f"{where}: gpus.{name}.params.{k} is not a parameter; known: {', '.join(PARAM_BOUNDS)}")
                lo, hi = PARAM_BOUNDS[k]
                if json_number(v, finite=True) is None or not lo <= v <= hi:
                    raise ServePlanError(f"{where}: gpus.{name}.params.{k} = {short_repr(v)}; expected a number in [{lo}, {hi}]")
            unc = entry.get("uncertainty_rel", 0.0)
            if json_number(unc, finite=True) is None or not 0 <= unc < 10:
                raise ServePlanError(f"{where}: gpus.{name}.uncertainty_rel = {short_repr(unc)}; expected a number in [0, 10)")
            if not isinstance(entry.get("residuals") or {}, dict):
                raise ServePlanError(f"{where}: gpus.{name}.residuals must be an object")
            # parameters a profile leaves out take the GPU's architecture defaults
            eff = replace(default_efficiencies(load_gpu(name)), **{k: float(v) for k, v in params.items()})
            sources = entry.get("sources") or {}
            if not isinstance(sources, dict) or not all(isinstance(v, str) for v in sources.values()):
                raise ServePlanError(f"{where}: gpus.{name}.sources must be an object of parameter -> text")
            li = entry.get("latency_interval") or {}
            odd = [k for k in li if k not in INTERVAL_KEYS] if isinstance(li, dict) else []
            if odd:
                raise ServePlanError(f"{where}: gpus.{name}.latency_interval.{odd[0]}: not a statistic; "
                                     f"expected keys among {', '.join(INTERVAL_KEYS)}")
            alone = [k for k in li if "_" in k and k.split("_")[0] not in li] if isinstance(li, dict) else []
            if alone:
                raise ServePlanError(f"{where}: gpus.{name}.latency_interval.{alone[0]} without "
                                     f"{alone[0].split('_')[0]}: a percentile's interval goes beside "
                                     "its metric's mean interval")
            bad = (next((f": {k} = {short_repr(v)}" for k, v in li.items() if not _interval_ok(v)), "")
                   if isinstance(li, dict) else f" (it is {short_repr(li)})")
            if bad:
                raise ServePlanError(f"{where}: gpus.{name}.latency_interval must map {', '.join(INTERVAL_KEYS)} to "
                                     f"[low, high] log ratios with low <= high, each within +-{MAX_LOG_RATIO:g}{bad}")
            domain = parse_domain(entry.get("latency_domain"), f"{where}: gpus.{name}.latency_domain")
            gpus[gpu] = GpuCalibration(eff, dict(entry.get("residuals") or {}), float(unc), dict(sources),
                                       {k: [float(x) for x in v] for k, v in li.items()}, domain)
            if entry.get("tables") is not None:
                from costmodel.tables import MeasuredTables

                tables[gpu] = MeasuredTables.from_dict(entry["tables"], f"{where}: gpus.{name}.tables")
        messages = d.get("messages") or []
        if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
            raise ServePlanError(f"{where}: 'messages' must be a list of strings")
        return cls(gpus=gpus, source=str(d.get("source", "")), created=str(d.get("created", "")),
                   tables=tables, hardware=hardware, messages=list(messages))

    @classmethod
    def load(cls, path: str | Path) -> CalibrationProfile:
        return cls.from_dict(read_json(path, "calibration file"), str(Path(path)))


def _interval_ok(v) -> bool:
    """[low, high] log ratios, low <= high, each finite and within +-MAX_LOG_RATIO."""
    return (isinstance(v, list) and len(v) == 2
            and all(json_number(x, finite=True) is not None and abs(x) <= MAX_LOG_RATIO for x in v)
            and v[0] <= v[1])


def gpu_key(name: str) -> str:
    """The preset name a GPU name or alias stands for (`h100` -> `h100-sxm`); a name no preset
    or measured device knows stays as written, lower-cased."""
    try:
        return load_gpu(name).name
    except ServePlanError:
        return str(name).strip().lower()


def _lookup(by_gpu: dict, name: str):
    hit = by_gpu.get(name)
    if hit is not None or not by_gpu:
        return hit
    key = gpu_key(name)
    return next((v for k, v in by_gpu.items() if gpu_key(k) == key), None)


def _hardware(d, where: str) -> HardwareSpec:
    """A measured device's HardwareSpec from its JSON object (every field given; numbers finite,
    0 to 1e18, whole where the field is, and the compute, bandwidth and counts plausible)."""
    names = [f.name for f in fields(HardwareSpec)]
    optional = {"arch"}  # profiles written before the field existed lack it
    if not isinstance(d, dict) or not set(names) - optional <= set(d) <= set(names):
        raise ServePlanError(f"{where}: expected an object with the keys {', '.join(names)} "
                             f"({', '.join(sorted(optional))} optional)")
    d = {"arch": "", **d}
    if d["arch"] not in ARCHS:
        raise ServePlanError(f"{where}.arch = {d['arch']!r}; expected one of "
                             f"{', '.join(repr(a) for a in ARCHS)} ('': generic defaults)")
    for f in fields(HardwareSpec):
        v = d[f.name]
        if f.type in ("str",) and not isinstance(v, str):
            raise ServePlanError(f"{where}.{f.name} = {v!r}; expected a string")
        if f.type in ("float", "int") and (json_number(v, finite=True) is None or not 0 <= v <= 1e18):
            raise ServePlanError(f"{where}.{f.name} = {short_repr(v)}; expected a number in [0, 1e18]")
        if f.type == "int" and v != int(v):
            raise ServePlanError(f"{where}.{f.name} = {v!r}; expected a whole number")
    # bf16 FLOP/s from 1e6: `serveplan validate` on a CPU without native bf16 measures about 1e9
    # (torch emulates the matmul); the bound still refuses a peak written in TFLOP/s (989)
    for f, lo, hi in (("bf16_flops", 1e6, 1e18), ("hbm_bw_bytes_s", 1e6, 1e18), ("gpus_per_node", 1, 1024),
                      ("sm_count", 1, 100_000), ("gemm_row_tile", 0, 4096)):
        if not lo <= d[f] <= hi:
            raise ServePlanError(f"{where}.{f} = {d[f]!r}; expected {lo:g} to {hi:g}")
    return HardwareSpec(**{**d, "gpus_per_node": int(d["gpus_per_node"]), "sm_count": int(d["sm_count"])})


def load_calibration(path: str | Path | None) -> CalibrationProfile | None:
    return None if path is None else CalibrationProfile.load(path)
