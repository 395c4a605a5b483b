"""Where a calibration's latency interval was measured, and how a plan differs from it.

The interval of a run fit (`sim.runs.fit`) comes from runs the fit left out and predicted, so it
says how well the fit predicts runs like those: their engines, models, modes, tensor-parallel
sizes, weight and KV-cache dtypes and mean request lengths (`GpuCalibration.latency_domain`,
`sim.runs.profile.run_domain`). A plan unlike them still gets the interval, and one line per
difference (`outside`): held-out runs never tested the fit there.

Measured (benchmarks/RESULTS.md, 2026-12-07): SGLang 0.5.1 serving Qwen3-32B on H100, 17 runs
fitted at TP 2 and 4 with 256 output tokens. Their TTFT and TPOT intervals covered 3 and 5 of
the 9 runs at TP 8, where the fit made TTFT worse than no fit (MAPE 9.7% -> 16.8%), and 14 and
22 of the 34 runs at TP 2 and 4 with 128 or 512 output tokens. Concurrency was a smaller
matter: fitted at 16 and 64 clients, 7 and 8 of the 9 runs at 128 clients fell inside.
"""

from __future__ import annotations

from costmodel.errors import ServePlanError
from costmodel.jsonio import json_number, short_repr
from costmodel.model_spec import kv_dtype_of
from costmodel.specs import load_model

SETS = ("engines", "models", "modes", "tp", "precisions", "kv_dtypes")
RANGES = ("input_tokens", "output_tokens")  # [least, most] of the runs' mean lengths
MAX_TOKENS = 1e7
LENGTH_TOL = 0.1  # a plan's mean length within 10% of the runs' range is inside it


def parse_domain(d, where: str) -> dict:
    """A profile's `latency_domain` object, checked; {} when absent."""
    if d is None:
        return {}
    if not isinstance(d, dict) or not set(d) <= set(SETS + RANGES):
        raise ServePlanError(f"{where}: expected an object with keys among {', '.join(SETS + RANGES)}")
    out: dict = {}
    for k, v in d.items():
        if k in SETS:
            whole = k == "tp"
            ok = isinstance(v, list) and 0 < len(v) <= 1000 and all(
                (isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 1_000_000) if whole
                else (isinstance(x, str) and 0 < len(x) <= 1000) for x in v)
            if not ok:
                raise ServePlanError(f"{where}.{k} = {short_repr(v)}; expected a non-empty list of "
                                     + ("whole numbers >= 1" if whole else "names"))
            out[k] = sorted(set(v))
        else:
            ok = isinstance(v, list) and len(v) == 2 and all(
                json_number(x, finite=True) is not None and 0 < x <= MAX_TOKENS for x in v) and v[0] <= v[1]
            if not ok:
                raise ServePlanError(f"{where}.{k} = {short_repr(v)}; expected [least, most] mean "
                                     f"tokens, 0 < least <= most <= {MAX_TOKENS:g}")
            out[k] = [float(v[0]), float(v[1])]
    return out


def model_name(model: str) -> str:
    """The preset name a model is known by (`Qwen/Qwen3-32B` -> qwen3-32b), so that runs and
    plans naming one model differently match; a name no preset or config resolves stays as
    written, lower-cased."""
    try:
        return load_model(model).name
    except ServePlanError:
        return str(model).strip().lower()


def weights_dtype(model: str, precision: str) -> str:
    """A pool's weight precision as it runs: `auto` is each part as the checkpoint publishes
    it (its dtypes joined by "/", as `bf16` or `bf16/mxfp4`)."""
    if precision != "auto":
        return precision
    try:
        m = load_model(model)
    except ServePlanError:
        return precision
    return "/".join(sorted(set(dict(m.weight_dtypes).values()) or {"bf16"}))


def span_text(lo: float, hi: float) -> str:
    """A range of mean token counts as the lines print it: `256`, or `1024-2048`."""
    return f"{lo:.0f}" if lo == hi else f"{lo:.0f}-{hi:.0f}"


def _names(values) -> str:
    return ", ".join(str(v) for v in values)


def outside(domain: dict, *, engine: str, model: str, mode: str, pools, input_tokens: float,
            output_tokens: float) -> list[str]:
    """How a plan differs from the runs of `domain`, one line each; [] when it is like them.
    `pools`: (role, tp, pp, speculative decoding on, precision, KV dtype) of the pools whose
    GPU `domain` belongs to. Runs calibrate only without pipeline parallelism and speculative
    decoding (`sim.runs.fit`), so a pool with either is unlike any of them."""
    lines = []
    for key, value, what in (("engines", engine, "engine"), ("models", model_name(model), "model"),
                             ("modes", mode, "mode")):
        if key in domain and str(value).strip().lower() not in {str(x).lower() for x in domain[key]}:
            lines.append(f"{what} {value}; the runs: {_names(domain[key])}")
    for role, tp, pp, spec, precision, kv in pools:
        if "tp" in domain and tp not in domain["tp"]:
            lines.append(f"TP {tp} ({role}); the runs: TP {_names(domain['tp'])}")
        if pp > 1:
            lines.append(f"PP {pp} ({role}); the runs: none (runs calibrate without it)")
        if spec:
            lines.append(f"speculative decoding ({role}); the runs: none (runs calibrate without it)")
        w = weights_dtype(model, precision)
        if "precisions" in domain and w not in domain["precisions"]:
            lines.append(f"precision {w} ({role}); the runs: {_names(domain['precisions'])}")
        if "kv_dtypes" in domain and kv_dtype_of(kv) not in domain["kv_dtypes"]:
            lines.append(f"KV cache {kv_dtype_of(kv)} ({role}); the runs: {_names(domain['kv_dtypes'])}")
    for key, value, what in (("input_tokens", input_tokens, "prompt"),
                             ("output_tokens", output_tokens, "output")):
        if key in domain:
            lo, hi = domain[key]
            if not lo * (1 - LENGTH_TOL) <= value <= hi * (1 + LENGTH_TOL):
                lines.append(f"mean {what} {value:.0f} tokens; the runs: {span_text(lo, hi)}")
    return list(dict.fromkeys(lines))
