"""aiperf and GenAI-Perf summary exports: one run per file.

Layouts read (ai-dynamo/aiperf and triton-inference-server/perf_analyzer):
- aiperf `profile_export_aiperf.json`, current layout (`aiperf/common/models/export_models.py`,
  `JsonExportData`): one top-level object per metric (`time_to_first_token`,
  `inter_token_latency`, `inter_chunk_latency`, `request_latency`, `input_sequence_length`,
  `output_sequence_length`, `request_count`, `request_throughput`, ...), each a
  `JsonMetricResult` with `unit` and the statistics `avg`, `p1` ... `p99`, `min`, `max`,
  `std`; `input_config.loadgen` holds `concurrency`, `request_rate` (with `arrival_pattern`
  and `arrival_smoothness`, older versions `request_rate_mode`) and `request_count` (read
  where no `request_count` metric is), and `input_config.endpoint.model_names` the model;
- aiperf's config v2 (schema 1.3, `aiperf/config/phases.py`): the load is the profiling phase
  of `input_config.phases` (`type` concurrency, poisson, gamma or constant; `concurrency`,
  `rate`, `smoothness`, `requests`; warmup phases are not measured) and the model
  `input_config.models.items[].name`;
- aiperf's early layout (`aiperf/exporters/json_exporter.py`): the same metrics under
  `records`, keyed by the metric's tag (`ttft` for time to first token);
- aiperf `profile_export_aiperf.csv` (`aiperf/exporters/csv_exporter.py`): a section of
  `Metric,avg,min,max,p1,...,p99,std` rows and one of `Metric,Value` rows, each metric named
  by its header with its unit in parentheses (`Time to First Token (ms)`, `Request Count`);
  the CSV holds no load, so the caller gives the concurrency or rate;
- GenAI-Perf `profile_export_genai_perf.json` (`genai-perf/genai_perf/export_data/
  json_exporter.py`): the same metric objects, and its arguments under `input_config`
  (`concurrency`, `request_rate`; newer versions `perf_analyzer.stimulus`).

Times are converted to seconds by each metric's `unit` (ms, us, ns, s). aiperf's and
GenAI-Perf's `inter_token_latency` is each request's (latency - TTFT) / (output tokens - 1),
averaged over requests: vLLM's TPOT, so it is read as `tpot_*`; `inter_chunk_latency` (the
gaps between streamed chunks) is read as `itl_*` and `request_latency` as `e2e_*`.

Lengths: fixed at the input and output sequence lengths' `avg`; exact when they did not vary
(`min` = `max`), else the means (the run's note says so).
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from costmodel.errors import ServePlanError
from costmodel.jsonio import short_repr
from sim.runs.fields import (
    RunContext,
    check_in_flight,
    choose_load,
    finish_run,
    number,
    one_token_outputs,
    read_json_docs,
    seconds,
)
from sim.runs.types import MAX_REQUESTS, MAX_TOKENS, MeasuredRun

# metric (as the current layout names it) -> our measured metric
TIMES = {"time_to_first_token": "ttft", "inter_token_latency": "tpot",
         "inter_chunk_latency": "itl", "request_latency": "e2e"}
STATS = {"avg": "mean", "p50": "p50", "p90": "p90", "p99": "p99"}
TAG_ALIASES = {"ttft": "time_to_first_token"}  # early aiperf tags
_CSV_NAME = re.compile(r"^\s*(.*?)\s*(?:\(([^)]*)\))?\s*$")
_GROUPED = re.compile(r"^[-+]?\d{1,3}(,\d{3})+(\.\d*)?$")  # a number with thousands separators
# open-loop arrivals as aiperf and GenAI-Perf name them -> the CV of the gaps (gamma's is
# 1 / sqrt(smoothness))
ARRIVAL_CV = {"poisson": 1.0, "gamma": None, "constant": 0.0}
AIPERF, GENAI_PERF = "aiperf", "genai-perf"
# arguments only GenAI-Perf writes flat in input_config (aiperf nests its settings)
GENAI_PERF_ARGS = ("endpoint_type", "synthetic_input_tokens_mean", "output_tokens_mean")
# settings of a load that changed during the run, or held prompts back (aiperf v1 loadgen and
# v2 phases)
UNSTEADY = ("request_rate_ramp_duration", "concurrency_ramp_duration", "rate_ramp",
            "concurrency_ramp", "prefill_concurrency", "prefill_concurrency_ramp_duration",
            "prefill_ramp", "rate_series", "request_rate_series")


def _metrics_of_json(doc: dict) -> dict[str, dict]:
    """{metric: {unit, avg, p50, ...}} from either JSON layout, metric names as now."""
    src = doc["records"] if isinstance(doc.get("records"), dict) else doc
    return {TAG_ALIASES.get(k, k): v for k, v in src.items()
            if isinstance(v, dict) and ("unit" in v or "avg" in v)}


def _metrics_of_csv(path: Path) -> dict[str, dict]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ServePlanError(f"{path}: not a readable CSV ({e})") from None
    out: dict[str, dict] = {}
    header = None
    for row in rows:
        if not row or not any(c.strip() for c in row):
            continue
        if row[0].strip() == "Metric":
            header = [c.strip() for c in row]
            if len(set(header)) != len(header):
                raise ServePlanError(f"{path}: the header {','.join(header)} names a column twice")
            continue
        if header is None or row[0].lstrip().startswith("==="):
            header = None  # GPU telemetry and other sections: not read
            continue
        name, unit = _CSV_NAME.match(row[0]).groups()
        key = name.strip().lower().replace(" ", "_")
        stats: dict = {"unit": (unit or "").strip() or None}
        for col, cell in zip(header[1:], row[1:], strict=False):  # a short row leaves stats out
            cell = cell.strip()
            if not cell or cell.upper() == "N/A":  # GenAI-Perf writes N/A for no value
                continue
            try:  # GenAI-Perf groups thousands: 1,190.16
                stats["avg" if col == "Value" else col] = float(
                    cell.replace(",", "") if _GROUPED.match(cell) else cell)
            except ValueError:
                raise ServePlanError(f"{path}: {row[0]} {col}={cell!r}; expected a number") from None
        out[TAG_ALIASES.get(key, key)] = stats
    if not out:
        raise ServePlanError(f"{path}: no metric rows; an aiperf CSV starts with "
                             "Metric,avg,min,max,p1,...")
    return out


def _stat(metrics: dict, name: str, stat: str, where: str, required: bool = True) -> float | None:
    m = metrics.get(name)
    if m is None or m.get(stat) is None:
        if required:
            raise ServePlanError(f"{where}: missing {name}.{stat}")
        return None
    return number(m, stat, f"{where}: {name}")


def _measured(metrics: dict, where: str) -> dict[str, float]:
    out = {}
    for name, ours in TIMES.items():
        if name not in metrics:
            if ours in ("ttft", "tpot"):
                raise ServePlanError(f"{where}: missing metric {name!r} (a run without streaming "
                                     "measures no TTFT or inter-token latency)")
            continue
        unit = metrics[name].get("unit")
        for stat, s in STATS.items():
            v = _stat(metrics, name, stat, where, required=stat == "avg")
            if v is None:
                continue
            v = seconds(v, unit, where, name)
            if v <= 0:
                raise ServePlanError(f"{where}: {name}.{stat}={v!r}; expected a time > 0")
            out[f"{ours}_{s}_s"] = v
    return out


def _lengths(metrics: dict, where: str) -> tuple[str, str]:
    vals, varied = [], False
    for name in ("input_sequence_length", "output_sequence_length"):
        avg = _stat(metrics, name, "avg", where)
        if not 1 <= avg <= MAX_TOKENS:
            raise ServePlanError(f"{where}: {name}.avg={avg:g}; expected 1 to {MAX_TOKENS:,} tokens")
        lo, hi = (_stat(metrics, name, s, where, required=False) for s in ("min", "max"))
        varied = varied or lo is None or hi is None or lo != hi
        vals.append(round(avg))
    if vals[1] == 1 and varied:  # fixed one-token outputs have no inter-token latency
        raise one_token_outputs(where, "output_sequence_length.avg",
                                _stat(metrics, "output_sequence_length", "avg", where))
    if vals[1] == 1:
        raise ServePlanError(f"{where}: every request made one output token "
                             "(output_sequence_length), which has no inter-token latency, yet the "
                             "file has one; expected the summary of a run with longer outputs")
    note = ("fixed lengths at the means of input_sequence_length and output_sequence_length "
            "(they varied, or the file has no min and max)" if varied else
            "fixed lengths (input and output sequence lengths did not vary)")
    return f"fixed:{vals[0]},{vals[1]}", note


def _profiling_phase(phases: list, where: str) -> dict:
    """The load settings of aiperf's config v2 (`input_config.phases`, `aiperf/config/phases.py`):
    its one profiling phase (warmup phases are not measured), as v1's `loadgen` names them."""
    prof = [p for p in phases if isinstance(p, dict) and (p.get("kind") or p.get("name")) == "profiling"]
    if len(prof) != 1:
        raise ServePlanError(f"{where}: input_config.phases holds {len(prof)} profiling phases; "
                             "expected one (the summary would mix their loads)")
    p = prof[0]
    _steady(p, where, "phases[profiling].")
    kind = str(p.get("type") or "").strip().lower()
    if kind == "concurrency":
        return {"concurrency": p.get("concurrency"), "request_count": p.get("requests")}
    if kind in ARRIVAL_CV:
        return {"request_rate": p.get("rate"), "concurrency": p.get("concurrency"),
                "arrival_pattern": kind, "arrival_smoothness": p.get("smoothness"),
                "request_count": p.get("requests")}
    raise ServePlanError(f"{where}: input_config.phases profiling type={p.get('type')!r}; expected "
                         f"concurrency or a rate with {', '.join(ARRIVAL_CV)} arrivals (user-centric "
                         "and fixed-schedule loads are not replayed)")


def _steady(settings: dict, where: str, prefix: str = "") -> None:
    """Refuse a load that changed as the run went (a ramp, a rate series) or held prompts back
    (a prefill concurrency): a replay runs one steady load."""
    for k in UNSTEADY:
        if settings.get(k) not in (None, False, 0, [], {}):
            raise ServePlanError(f"{where}: input_config {prefix}{k}={short_repr(settings[k])}: the "
                                 "load was not one steady concurrency or rate, which is what a replay "
                                 "runs")


def _load(doc: dict, where: str) -> tuple[dict, str | None, str | None]:
    """The settings that hold the load, the model the run named, and the tool (aiperf,
    genai-perf, or None when the file does not say) whose defaults fill what the settings
    leave out."""
    cfg = doc.get("input_config") if isinstance(doc.get("input_config"), dict) else {}
    pa = cfg.get("perf_analyzer")
    stimulus = pa.get("stimulus") if isinstance(pa, dict) else None
    # aiperf: input_config.loadgen (v1) or .phases (v2); GenAI-Perf: perf_analyzer.stimulus
    # (newer) or its flat args
    if isinstance(cfg.get("phases"), list):
        load, tool = _profiling_phase(cfg["phases"], where), AIPERF
    elif isinstance(cfg.get("loadgen"), dict):
        load, tool = cfg["loadgen"], AIPERF
    elif isinstance(pa, dict) or any(k in cfg for k in GENAI_PERF_ARGS):
        load, tool = (stimulus if isinstance(stimulus, dict) else cfg), GENAI_PERF
    else:  # an aiperf CSV, or a JSON without its settings
        load, tool = cfg, None
    _steady(load, where)
    endpoint = cfg.get("endpoint") if isinstance(cfg.get("endpoint"), dict) else {}
    models = cfg.get("models") if isinstance(cfg.get("models"), dict) else {}
    items = [m.get("name") for m in models.get("items") or () if isinstance(m, dict)]
    names = endpoint.get("model_names") or cfg.get("model_names") or cfg.get("model") or items
    model = names[0] if isinstance(names, list) and names else names
    return load, model if isinstance(model, str) else None, tool


def _count_ok(count: float | None, what: str, where: str) -> None:
    if count is not None and (not 1 <= count <= MAX_REQUESTS or count != int(count)):
        raise ServePlanError(f"{where}: {what}={count:g}; expected a whole number of requests, 1 "
                             f"to {MAX_REQUESTS:,}")


def _arrivals(load: dict, where: str, tool: str) -> tuple[str, float]:
    """(note, CV of the gaps) of an open loop's arrivals. aiperf names them in `arrival_pattern`
    (older versions `request_rate_mode`) with `arrival_smoothness` for gamma (vLLM's
    burstiness: CV 1 / sqrt(smoothness); a smoothness with no pattern is gamma, as aiperf
    reads it); GenAI-Perf in `request_distribution`. Left out, aiperf sends Poisson arrivals
    and perf_analyzer (GenAI-Perf's load generator) evenly spaced ones."""
    key = next((k for k in ("arrival_pattern", "request_rate_mode", "request_distribution")
                if load.get(k) is not None), None)
    smooth = number(load, "arrival_smoothness", f"{where}: input_config", required=False)
    if key is not None:
        mode = str(load[key]).strip().lower()
    elif smooth is not None:
        mode, key = "gamma", "arrival_smoothness"
    elif tool == GENAI_PERF:
        return ("evenly spaced arrivals (perf_analyzer's default request distribution; the file "
                "names none)"), 0.0
    elif tool == AIPERF:
        return "Poisson arrivals (aiperf's default; the file names no arrival_pattern)", 1.0
    else:
        return ("Poisson arrivals, as aiperf sends by default (the file says neither which tool "
                "wrote it nor its arrival pattern)"), 1.0
    if mode not in ARRIVAL_CV:
        raise ServePlanError(f"{where}: input_config {key}={load[key]!r} with a request rate; "
                             f"expected one of {', '.join(ARRIVAL_CV)}")
    if mode != "gamma":
        return ("evenly spaced arrivals" if mode == "constant" else ""), ARRIVAL_CV[mode]
    smooth = 1.0 if smooth is None else smooth
    if not 0 < smooth < math.inf:
        raise ServePlanError(f"{where}: input_config arrival_smoothness={smooth:g}; expected a gamma "
                             "shape > 0 (1: Poisson)")
    cv = 1.0 / math.sqrt(smooth)
    return f"gamma arrivals, smoothness {smooth:g} (CV {cv:.3g})", cv


def read_aiperf(path: Path, ctx: RunContext) -> list[MeasuredRun]:
    if path.suffix.lower() == ".csv":
        metrics, doc = _metrics_of_csv(path), {}
    else:
        docs = read_json_docs(path)
        if len(docs) != 1:
            raise ServePlanError(f"{path}: {len(docs)} JSON objects; an aiperf or GenAI-Perf export "
                                 "holds one run")
        doc = docs[0]
        metrics = _metrics_of_json(doc)
    where = f"{path.name} run 1"
    if ctx.runs is not None and set(ctx.runs) != {1}:
        raise ServePlanError(f"{path}: runs {list(ctx.runs)} asked for, but an aiperf export holds one run")
    count = _stat(metrics, "request_count", "avg", where, required=False)
    if count is not None and count < 1:
        raise ServePlanError(f"{where}: request_count={count:g}: no request completed, so the run "
                             "measured nothing")
    _count_ok(count, "request_count", where)
    measured = _measured(metrics, where)
    workload, len_note = _lengths(metrics, where)
    load, model, tool = _load(doc, where)
    conc = number(load, "concurrency", f"{where}: input_config", required=False)
    if conc is not None and (not math.isfinite(conc) or conc != int(conc) or conc < 1):
        raise ServePlanError(f"{where}: input_config concurrency={conc!r}; expected a whole number >= 1")
    if count is None:  # no completed count: the requests the run was set to send
        count = number(load, "request_count", f"{where}: input_config", required=False) or None
        _count_ok(count, "input_config request_count", where)
    throughput = _stat(metrics, "request_throughput", "avg", where, required=False)
    file_rate = number(load, "request_rate", f"{where}: input_config", required=False)
    open_loop = ctx.rate_rps is not None or (file_rate is not None and math.isfinite(file_rate))
    arrivals_note, cv = _arrivals(load, where, tool) if open_loop else ("", 1.0)
    conc, rate, load_note = choose_load(
        ctx, where, int(conc) if conc is not None else None, file_rate,
        throughput, "input_config concurrency, request_rate",
        sent=int(count) if count is not None else None, gap_cv=cv)
    if conc is not None and throughput and count is not None and count >= 2 * conc:
        check_in_flight(where, measured, conc, throughput, int(count),
                        hint="Do the metrics' units match their values?")
    if rate is None:
        cv = 1.0
    else:
        load_note = "; ".join(n for n in (load_note, arrivals_note) if n)
    return [finish_run(ctx, "aiperf", path, "1", backend=None, default_engine=None,
                       version_in_file=None, model_in_file=model, workload=workload,
                       concurrency=conc, rate_rps=rate, burstiness_cv=cv,
                       num_requests=int(count) if count is not None else None, measured=measured,
                       notes=(load_note, len_note))]
