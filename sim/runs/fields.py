"""What the readers of benchmark-client result files share.

- reading a file of one JSON document or of JSON lines;
- numbers and times read with errors that name the file, the run and the field, and times
  converted to seconds by their unit;
- `RunContext`: what the caller knows that a file may not say (the deployment, the engine and
  its version, the concurrency or rate);
- the load of a run (closed loop at a concurrency, or open loop at a rate) and the lengths of
  its requests (its own per-request lengths, fixed lengths, or the means of its totals);
- `finish_run`: the last checks (engine, model, memory) and the MeasuredRun.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from costmodel.errors import ServePlanError
from costmodel.jsonio import json_number, short_repr
from costmodel.specs import load_model
from sim.deployment import Deployment
from sim.runs.aic_silicon import model_preset
from sim.runs.deployments import require_fits
from sim.runs.loads import check_in_flight, choose_load
from sim.runs.types import (
    ENGINES,
    MAX_TOKENS,
    PER_REQUEST,
    MeasuredRun,
    check_context,
    check_measured,
)

# seconds per unit of a time as the tools write it
UNIT_S = {"s": 1.0, "sec": 1.0, "secs": 1.0, "seconds": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
          "μs": 1e-6, "ns": 1e-9}
# benchmark-client backends that speak the OpenAI API to a server of any engine
GENERIC_BACKENDS = ("openai",)


@dataclass(frozen=True)
class RunContext:
    """What the caller gives for a results file: used where the file is silent; a value the
    file also carries must agree with it."""

    deployment: Deployment | None = None
    engine: str | None = None  # vllm | sglang
    engine_version: str | None = None
    concurrency: int | None = None  # closed loop: clients
    rate_rps: float | None = None  # open loop: requests/s
    runs: tuple[int, ...] | None = None  # which runs of the file (numbered from 1); None: all


def selected(docs: list[dict], ctx: RunContext, path: Path) -> list[tuple[str, dict]]:
    """(run id, document) of the runs `ctx` selects: all, or those it numbers (from 1)."""
    if ctx.runs is None:
        return [(str(i + 1), d) for i, d in enumerate(docs)]
    missing = [n for n in ctx.runs if n > len(docs)]
    if missing:
        raise ServePlanError(f"{path}: runs {missing} asked for, but the file holds {len(docs)} "
                             f"run{'s' if len(docs) != 1 else ''}")
    return [(str(n), docs[n - 1]) for n in sorted(set(ctx.runs))]


def read_json_docs(path: Path) -> list[dict]:
    """The JSON objects of a file: one document, or one per line (JSON lines)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ServePlanError(f"{path}: not a readable text file ({e})") from None
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise ServePlanError(f"{path}: line {e.lineno} column {e.colno}: not valid JSON "
                                 f"({e.msg})") from None
        docs = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                docs.append(json.loads(line))
            except json.JSONDecodeError as e2:
                raise ServePlanError(f"{path} line {lineno}: not valid JSON ({e2.msg})") from None
            except (ValueError, RecursionError) as e2:
                raise ServePlanError(f"{path} line {lineno}: not valid JSON ({str(e2)[:80]})") from None
    except (ValueError, RecursionError) as e:  # a number of over 4300 digits; nesting too deep
        raise ServePlanError(f"{path}: not valid JSON ({type(e).__name__}: {str(e)[:80]})") from None
    bad = next((i for i, d in enumerate(docs) if not isinstance(d, dict)), None)
    if bad is not None:
        raise ServePlanError(f"{path}: run {bad + 1} is a JSON {type(docs[bad]).__name__}; expected "
                             "an object of result fields")
    if not docs:
        raise ServePlanError(f"{path}: no runs in the file")
    return docs


def number(d: dict, key: str, where: str, required: bool = True) -> float | None:
    """A finite number >= 0 (or float('inf') where the tools write "inf"); None when absent
    and not required."""
    v = d.get(key)
    if v is None:
        if required:
            raise ServePlanError(f"{where}: missing field {key!r}")
        return None
    if isinstance(v, str) and v.strip().lower() in ("inf", "infinity"):
        return math.inf
    f = json_number(v)
    if f is None or math.isnan(f) or f < 0:
        raise ServePlanError(f"{where}: {key}={short_repr(v)}; expected a number >= 0")
    return f


def whole(d: dict, key: str, where: str, required: bool = True) -> int | None:
    v = number(d, key, where, required)
    if v is None:
        return None
    if not math.isfinite(v) or v != int(v):
        raise ServePlanError(f"{where}: {key}={d[key]!r}; expected a whole number")
    return int(v)


def seconds(value: float, unit, where: str, key: str) -> float:
    factor = UNIT_S.get(str(unit).strip().lower()) if unit is not None else None
    if factor is None:
        raise ServePlanError(f"{where}: {key} has unit {unit!r}; expected one of ms, us, ns, s, sec")
    return value * factor


def completed_requests(d: dict, key: str, where: str) -> int:
    n = whole(d, key, where)
    if n == 0:
        raise ServePlanError(f"{where}: {key}=0: no request completed, so the run measured nothing")
    return n


def engine_of(backend, given: str | None, where: str) -> tuple[str | None, str]:
    """(engine, note) of a run whose client names its `backend`: the engine given, else the one
    the name says (vllm-chat -> vllm, sglang-oai -> sglang: these are API clients, so a given
    engine wins, with a note), else None for no backend or an OpenAI-compatible one
    (`openai-chat`). A backend of an engine not simulated (tgi, trt, lmdeploy, ...) is refused
    unless the engine is given."""
    b = str(backend or "").strip().lower()
    named = next((e for e in ENGINES if b.startswith(e)), None)
    if named is not None:
        if given is not None and given != named:  # vllm/sglang-oai backends are OpenAI clients
            return given, (f"engine {given} as given (the client's backend {backend!r} speaks an "
                           "API, it does not name the server)")
        return named, ""
    if not b or b.startswith(GENERIC_BACKENDS):
        return given, ""
    if given is None:
        raise ServePlanError(f"{where}: backend={backend!r}: the client measured a server of an engine "
                             f"ServePlan does not simulate (it simulates {', '.join(ENGINES)}); if "
                             "one of those served it behind that API, give the engine")
    return given, f"engine {given} as given (the client's backend is {backend!r})"


# --- lengths ---------------------------------------------------------------------------------
def detail_lists(d: dict) -> dict:
    """Where a summary keeps its per-request lists: at the top (vLLM, SGLang's bench_serving)
    or under `details` (SGLang's `benchmark/metrics.py` with `--output-details`)."""
    if d.get("input_lens") is None and d.get("output_lens") is None and isinstance(d.get("details"), dict):
        return d["details"]
    return d


def total_keys(d: dict) -> tuple[str, str]:
    """The names of a summary's prompt and output token totals: `total_input_tokens` (vLLM,
    SGLang's bench_serving) or `total_input` (SGLang's `benchmark/metrics.py`)."""
    return next(((i, o) for i, o in (("total_input_tokens", "total_output_tokens"),
                                     ("total_input", "total_output")) if i in d),
                ("total_input_tokens", "total_output_tokens"))


def per_request_lengths(d: dict, where: str, completed: int,
                        totals: dict | None = None) -> tuple[list[int], list[int]] | None:
    """The successful requests' (input_lens, output_lens), as vLLM's `--save-detailed` and
    SGLang's `--output-details` write them: one entry per request sent, a failed one with an
    output length of 0 and a non-empty `errors` entry. None when the file has no such lists."""
    if d.get("input_lens") is None and d.get("output_lens") is None:
        return None
    ins, outs, errs = d.get("input_lens"), d.get("output_lens"), d.get("errors")
    for key, v in (("input_lens", ins), ("output_lens", outs)):
        if not isinstance(v, list):
            raise ServePlanError(f"{where}: {key} is {type(v).__name__}; expected a list of token counts")
    if errs is not None and not isinstance(errs, list):
        raise ServePlanError(f"{where}: errors is {type(errs).__name__}; expected a list, one entry per "
                             "request (\"\" for a successful one)")
    if len(ins) != len(outs) or (isinstance(errs, list) and len(errs) != len(ins)):
        raise ServePlanError(f"{where}: input_lens has {len(ins)} requests, output_lens {len(outs)}"
                             + (f", errors {len(errs)}" if isinstance(errs, list) else "")
                             + "; expected one entry per request in each")
    keep_in, keep_out = [], []
    for i, (a, b) in enumerate(zip(ins, outs, strict=True)):
        for key, v in (("input_lens", a), ("output_lens", b)):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_TOKENS:
                raise ServePlanError(f"{where}: {key}[{i}]={str(v)[:40]}; expected a whole number "
                                     f"of tokens (at most {MAX_TOKENS:,})")
        failed = (isinstance(errs, list) and bool(errs[i])) or b == 0
        if not failed:
            if a < 1:
                raise ServePlanError(f"{where}: input_lens[{i}]={a}; a request has >= 1 prompt token")
            keep_in.append(a)
            keep_out.append(b)
    if len(keep_in) != completed:
        raise ServePlanError(f"{where}: input_lens and output_lens hold {len(keep_in)} successful "
                             f"requests but completed={completed}; expected the same")
    # the clients total the successful requests' lengths: lists of another run disagree
    totals = d if totals is None else totals  # the summary's own fields, beside `details`
    for key, kept in zip(total_keys(totals), (keep_in, keep_out), strict=True):
        total = number(totals, key, where, required=False)
        if total is not None and abs(sum(kept) - total) > max(1.0, 0.01 * total):
            raise ServePlanError(f"{where}: the successful requests' lengths sum to {sum(kept):,} but "
                                 f"{key}={total:,.0f}; expected the lists of the run it summarises")
    return keep_in, keep_out


def lengths_workload(ins: list[int], outs: list[int]):
    """(workload, input_lens, output_lens, note) of per-request lengths: fixed when every
    request had the same lengths, else the run's own lengths."""
    if len(set(ins)) == 1 and len(set(outs)) == 1:
        return f"fixed:{ins[0]},{outs[0]}", None, None, "fixed lengths (every request the same)"
    mean_in, mean_out = sum(ins) / len(ins), sum(outs) / len(outs)
    return (f"{PER_REQUEST}:{mean_in:.0f},{mean_out:.0f}", tuple(ins), tuple(outs),
            f"the file's per-request lengths ({len(ins)} requests)")


def one_token_outputs(where: str, what: str, mean_out: float) -> ServePlanError:
    """The error for a run whose mean output length rounds to one token while its client
    measured a TPOT: fixed one-token outputs have none to predict."""
    return ServePlanError(f"{where}: {what} is {mean_out:.3g} tokens per request: fixed lengths at "
                          "that mean give one-token outputs, which have no TPOT, yet the client "
                          "measured one; give the run's per-request lengths (vLLM --save-detailed, "
                          "SGLang --output-details)")


def mean_lengths_workload(d: dict, where: str, completed: int, in_key: str, out_key: str,
                          tpot_measured: bool = False):
    """(workload, None, None, note): fixed lengths at the run's mean prompt and output tokens
    (its totals over `completed` requests), for a file without per-request lengths."""
    tot_in, tot_out = whole(d, in_key, where), whole(d, out_key, where)
    isl, osl = round(tot_in / completed), round(tot_out / completed)
    if isl < 1 or osl < 1:
        raise ServePlanError(f"{where}: {in_key}={tot_in}, {out_key}={tot_out} over {completed} "
                             "requests; expected >= 1 token per request in and out")
    if osl == 1 and tpot_measured:
        raise one_token_outputs(where, f"{out_key} / completed", tot_out / completed)
    return (f"fixed:{isl},{osl}", None, None,
            f"fixed lengths at the means of {in_key} and {out_key} over {completed} requests "
            "(the file has no per-request lengths)")


# --- latencies in ms (vLLM and SGLang summaries) ---------------------------------------------
# a summary's statistics, as both clients name them, and the percentile each is
MS_STATS = (("mean", "mean"), ("median", "p50"), ("p50", "p50"), ("p90", "p90"), ("p99", "p99"))


def measured_ms(d: dict, where: str, metrics: dict[str, str]) -> dict[str, float]:
    """MEASURED_KEYS in seconds from `{stat}_{metric}_ms` summary fields; `metrics` maps the
    file's metric names to ours (ttft, tpot, itl, e2e). The mean TTFT and TPOT are required;
    the others are read where present. A client writes 0 for a statistic of no samples (TTFT
    without streaming, TPOT of one-token outputs): a required one that is 0 is an error, an
    optional one is left out."""
    out = {}
    # vLLM writes a metric's fields only when --percentile-metrics names it: without TPOT, the
    # mean E2E and TTFT give it over fixed output lengths (client_summary)
    tpots = [n for n, k in metrics.items() if k == "tpot"]
    no_tpot = not any(f.endswith(f"_{n}_ms") for f in d for n in tpots)
    e2e_mean = no_tpot and any(f"mean_{n}_ms" in d for n, k in metrics.items() if k == "e2e")
    for name, key in metrics.items():
        for stat, ours in MS_STATS:
            field = f"{stat}_{name}_ms"
            mean = stat == "mean" and key in ("ttft", "tpot")
            required = mean and not (key == "tpot" and e2e_mean)
            v = number(d, field, where, required)
            if v is None or (v == 0 and not mean):
                continue
            if not math.isfinite(v):
                raise ServePlanError(f"{where}: {field}={d[field]!r}; expected a finite number of ms")
            if v == 0:
                raise ServePlanError(f"{where}: {field}={d[field]!r}: the client measured no "
                                     f"{key.upper()} (a run without streaming?); expected ms > 0")
            out[f"{key}_{ours}_s"] = v / 1e3
    return out


@dataclass(frozen=True)
class ClientSummary:
    """What vLLM's and SGLang's summaries share (SGLang's client is adapted from vLLM's)."""

    completed: int
    measured: dict[str, float]
    concurrency: int | None
    rate_rps: float | None
    load_note: str
    # (workload, input_lens, output_lens, note): the successful requests' own lengths when
    # listed, else the dataset's (the reader's `dataset_lengths`), else the totals' means
    lengths: tuple


def client_summary(d: dict, where: str, ctx: RunContext, metrics: dict[str, str],
                   dataset_lengths=None, gap_cv: float = 1.0) -> ClientSummary:
    """`completed`, the latencies of `metrics` (measured_ms), the load from `max_concurrency`,
    `request_rate` and `request_throughput` (an open loop's gaps with CV `gap_cv`), and the
    lengths of the run's requests."""
    completed = completed_requests(d, "completed", where)
    measured = measured_ms(d, where, metrics)
    throughput = number(d, "request_throughput", where, required=False)
    details = detail_lists(d)
    listed = details.get("input_lens")
    sent = whole(d, "num_prompts", where, required=False) or (
        len(listed) if isinstance(listed, list) else completed)
    conc, rate, note = choose_load(
        ctx, where, whole(d, "max_concurrency", where, required=False),
        number(d, "request_rate", where, required=False), throughput,
        "max_concurrency, request_rate", number(d, "max_concurrent_requests", where, required=False),
        sent, gap_cv)
    lists = per_request_lengths(details, where, completed, totals=d)
    if lists is not None and max(lists[1]) == 1 and "tpot_mean_s" in measured:
        raise ServePlanError(f"{where}: every request in output_lens made one token, which has no "
                             "TPOT, yet the file has one; expected the lists of the run it summarises")
    if lists is not None:
        lengths = lengths_workload(*lists)
    else:
        lengths = (dataset_lengths(d, where) if dataset_lengths else None) or mean_lengths_workload(
            d, where, completed, *total_keys(d), tpot_measured="tpot_mean_s" in measured)
    out_total = number(d, total_keys(d)[1], where, required=False)
    if "tpot_mean_s" not in measured:
        lengths = _tpot_from_e2e(measured, lengths, where, [n for n, k in metrics.items() if k == "tpot"],
                                 None if lists is not None else (out_total, completed))
    if conc is not None and throughput and completed >= 2 * conc:
        check_in_flight(where, measured, conc, throughput, completed, out_total)
    return ClientSummary(completed, measured, conc, rate, note, lengths)


def _tpot_from_e2e(measured: dict, lengths: tuple, where: str, names: list[str],
                   out_total: tuple | None) -> tuple:
    """Set the mean TPOT of a file without TPOT fields from its mean E2E and TTFT: exact when
    every request made the same number of tokens, each one's (E2E - TTFT) / (OSL - 1) then
    averaging to (mean E2E - mean TTFT) / (OSL - 1). `lengths` gains a note; varied outputs
    are refused (a mean of ratios is no ratio of means). Without per-request lists, the
    outputs are alike only when the output total is OSL x completed (`out_total`: that total
    and the completed count)."""
    field = f"mean_{names[0]}_ms" if names else "mean_tpot_ms"
    if "e2e_mean_s" not in measured:
        raise ServePlanError(f"{where}: missing field {field!r} (and no mean E2E to take it from)")
    workload, ins, outs, note = lengths
    kind, _, body = workload.partition(":")
    osl = int(body.split(",")[1]) if kind == "fixed" else 0
    if out_total is not None and osl and out_total[0] != osl * out_total[1]:
        osl = -1  # fixed at a rounded mean: the outputs varied
    if osl < 2:
        raise ServePlanError(f"{where}: missing field {field!r}; the mean E2E and TTFT give it only "
                             "for fixed output lengths of 2 or more tokens, and these "
                             + ("are one token" if osl == 1 else "vary"))
    tpot = (measured["e2e_mean_s"] - measured["ttft_mean_s"]) / (osl - 1)
    if not tpot > 0:
        raise ServePlanError(f"{where}: mean E2E {measured['e2e_mean_s'] * 1e3:.4g} ms is not above "
                             f"mean TTFT {measured['ttft_mean_s'] * 1e3:.4g} ms; expected a longer E2E")
    measured["tpot_mean_s"] = tpot
    return workload, ins, outs, (f"{note}; mean TPOT {tpot * 1e3:.4g} ms from the mean E2E and TTFT "
                                 f"over {osl - 1} tokens (the file has no {field})")


# --- the run ---------------------------------------------------------------------------------
def _check_model(dep: Deployment, named: str | None, where: str) -> None:
    """A file that names its model (an HF id) must name the deployment's; a served name that is
    no known model (an alias) is not checked."""
    if not named:
        return
    try:
        mine = model_preset(named)
    except ServePlanError:
        return
    theirs = load_model(dep.model).name
    if mine != theirs:
        raise ServePlanError(f"{where}: the file ran model {named!r} ({mine}) but the deployment "
                             f"given is {theirs}")


def _check_server(dep: Deployment, where: str, server: dict[str, object], spec_used: str | None) -> None:
    """What the file says of the server against the deployment given: its parallelism
    (`server` maps a field, as `server_info.tp_size`, to its value; checked on a deployment of
    one pool) and whether it decoded speculatively (`spec_used` names the field that says so)."""
    pools = dep.pools
    if len(pools) == 1:
        for field, v in server.items():
            if v is None:
                continue
            # SGLang's --tp spans the attention-DP ranks too (--tp tp*dp --dp dp --enable-dp-attention)
            tp = field.endswith("tp_size")
            mine = pools[0].tp * pools[0].dp if tp else pools[0].pp
            if isinstance(v, bool) or not isinstance(v, int):
                raise ServePlanError(f"{where}: {field}={v!r}; expected a whole number")
            if v != mine:
                raise ServePlanError(f"{where}: {field}={v!r} but the deployment given runs "
                                     f"{'tp x dp' if tp else 'pp'}={mine} (a file of runs on several "
                                     "deployments: a manifest entry per deployment, each with its `runs`)")
    if spec_used and not any(p.spec.enabled for p in pools if p.role != "prefill"):
        raise ServePlanError(f"{where}: {spec_used}: the run decoded speculatively, but the deployment "
                             "given does not; give a plan whose pool sets its spec (method, draft "
                             "tokens, acceptance)")


def finish_run(ctx: RunContext, fmt: str, path: Path, run_id: str, *, backend: str | None,
               default_engine: str | None, version_in_file: str | None, model_in_file: str | None,
               workload: str, concurrency: int | None, rate_rps: float | None,
               num_requests: int | None, measured: dict[str, float], burstiness_cv: float = 1.0,
               input_lens=None, output_lens=None, notes: tuple[str, ...] = (),
               server: dict | None = None, spec_used: str | None = None) -> MeasuredRun:
    """The MeasuredRun of one run read from `path`, after its last checks: an engine (given,
    named by the file's `backend`, or the format's own), the deployment given, and what the file
    says of the server agreeing with it (the model it names, its engine version, parallelism
    and speculative decoding), and the deployment holding the run's largest request in GPU
    memory."""
    where = f"{path.name} run {run_id}"
    check_measured(measured, where, num_requests)
    notes = list(notes)
    engine, engine_note = engine_of(backend, ctx.engine, where)
    notes.append(engine_note)
    if engine is None and default_engine is not None:
        engine = default_engine
        notes.append(f"engine {engine} (the file does not say which engine served it)")
    if engine is None:
        raise ServePlanError(f"{where}: {fmt} files do not say which engine served them; give the "
                             f"engine (one of {', '.join(ENGINES)})")
    dep = ctx.deployment
    if dep is None:
        raise ServePlanError(f"{where}: {fmt} files do not say which deployment served them; give "
                             "the deployment (a plan file, --model/--gpu/--tp, or a manifest entry)")
    _check_model(dep, model_in_file, where)
    _check_server(dep, where, server or {}, spec_used)
    if ctx.engine_version is not None and version_in_file and str(version_in_file) != ctx.engine_version:
        raise ServePlanError(f"{where}: the file's server ran {engine} {version_in_file} but engine "
                             f"version {ctx.engine_version} was given")
    version = ctx.engine_version if ctx.engine_version is not None else (version_in_file or "")
    try:
        run = MeasuredRun(source=path.name, run_id=run_id, engine=engine,
                          engine_version=str(version), deployment=dep, workload=workload,
                          concurrency=concurrency, rate_rps=rate_rps, num_requests=num_requests,
                          measured=measured,
                          burstiness_cv=burstiness_cv if rate_rps is not None else 1.0,
                          input_lens=input_lens, output_lens=output_lens,
                          note="; ".join(n for n in notes if n))
        w = run.to_workload()  # the simulator's own checks of the lengths and the load
    except ServePlanError as e:
        raise ServePlanError(str(e) if where in str(e) else f"{where}: {e}") from None
    p = w.length_params
    if w.lengths == "trace":
        biggest = int((w.trace.input_len + w.trace.output_len).max())
    elif w.lengths == "uniform":
        biggest = int(p[1] + p[3])
    else:
        biggest = int(p[0] + p[1])
    check_context(dep.model, biggest, where, "its longest request holds")
    require_fits(dep, biggest, where)
    return run
