"""One calibration profile from run fits (`sim.runs.fit`): the kernel parameters and tables of
the profile the fit started from, the engine parameters the runs fitted, where each value came
from, and the held-out latency intervals that plans report."""

from __future__ import annotations

from costmodel.calibration import CalibrationProfile, GpuCalibration, gpu_key
from costmodel.efficiencies import PARAM_BOUNDS
from costmodel.model_spec import kv_dtype_of
from costmodel.run_domain import model_name, weights_dtype
from sim.runs.fit import REPLAY_PARAMS, RunsFit, runs_tag, search_floor
from sim.runs.loss import weights_text


def profile_of(fits: list[RunsFit], base: CalibrationProfile | None = None,
               source: str = "") -> CalibrationProfile:
    """One profile: `base`'s kernel parameters and tables, the runs' engine parameters, the
    source of each, and the held-out latency intervals."""
    prof = CalibrationProfile(source=source or "engine benchmark runs")
    if base is not None:
        prof.gpus.update(base.gpus)
        prof.tables.update(base.tables)
        prof.hardware.update(base.hardware)
        refit = tuple(f"{runs_tag(f.gpu)}:" for f in fits)  # an earlier run fit's messages go
        prof.messages.extend(m for m in base.messages if not m.startswith(refit))
        prof.source = f"{base.source}; {prof.source}" if base.source else prof.source
    for f in fits:
        tag = runs_tag(f.gpu)
        old = prof.calibration_for(f.gpu)
        for k in [k for k in prof.gpus if gpu_key(k) == f.gpu]:  # the base's entry under an alias
            del prof.gpus[k]
        sources = dict(old.sources) if old else {}
        files = sorted({r.run.source for r in f.rows})
        engines = sorted({r.run.engine for r in f.rows})
        weighted = weights_text(f.weights)
        for n in f.fitted:
            sources[n] = (f"fit: {len(f.rows)} {'/'.join(engines)} runs ({', '.join(files)})"
                          + (f", {weighted} in the loss" if weighted else ""))
        if len(engines) > 1 and f.fitted:
            prof.messages.append(f"{tag}: the runs are of {' and '.join(engines)}, whose engine "
                                 "parameters differ; one set describes them all (calibrate each "
                                 "engine's runs alone for a profile of one engine)")
        for n in f.not_informed:
            why = ("fitted values set aside (they replay the runs worse): kept its starting value"
                   if f.rejected else f"not fitted: {f.held[n]}; kept its starting value"
                   if n in f.held else "not informed by the runs: kept its starting value")
            # a kernel fit's source stays; a default's ("an engine run sets it") no longer holds
            if n not in sources or sources[n].startswith("default"):
                sources[n] = why + (f" ({sources[n]})" if n in sources else "")
        s = f.summary()
        resid = {"runs": len(f.rows), "mape_after": s["after"], "mape_held_out": s["held_out"]}
        prof.gpus[f.gpu] = GpuCalibration(f.params, resid, old.uncertainty_rel if old else 0.0,
                                          sources, dict(f.interval),
                                          run_domain([r.run for r in f.rows]) if f.interval else {})
        for n in f.fitted:
            lo, hi = PARAM_BOUNDS[n]
            v = getattr(f.params, n)
            if n in REPLAY_PARAMS and v == 0.0:  # off: no chunk backlog, no extra memory
                continue
            floor = search_floor(n)
            if v >= hi * (1 - 1e-3):
                prof.messages.append(f"{tag}: {n} = {v:.4g} sits at its upper bound {hi:g}: the "
                                     "runs ask for more than it can give, so part of their error "
                                     "lies in something else")
            elif v <= floor * (1 + 1e-3):
                why = ("the runs want none of it" if lo == 0.0 else
                       "the runs ask for less than it can give, so part of their error lies in "
                       "something else")
                prof.messages.append(f"{tag}: {n} = {v:.4g} sits at the lowest value the fit "
                                     f"searches ({floor:g}; bounds [{lo:g}, {hi:g}]): {why}")
        if f.rejected:
            prof.messages.append(f.rejected)
        else:
            if weighted:
                prof.messages.append(f"{tag}: fitted with {weighted} in the loss: the plain fit "
                                     "replayed that metric worse than the starting values")
            plain = [n for n in f.not_informed if n not in f.held]
            if plain:
                prof.messages.append(f"{tag}: the runs do not inform {', '.join(plain)}; kept at "
                                     "their starting values")
            prof.messages += [f"{tag}: {n} not fitted: {w}; kept at its starting value"
                              for n, w in f.held.items()]
    return prof


def run_domain(runs) -> dict:
    """What the runs behind an interval were (costmodel.run_domain): engines, models, modes,
    TP sizes, precisions and KV-cache dtypes of their pools, and the least and most of their mean lengths."""
    lens = [r.mean_lengths for r in runs]
    pools = [p for r in runs for p in r.deployment.pools]
    return {"engines": sorted({r.engine for r in runs}),
            "models": sorted({model_name(r.deployment.model) for r in runs}),
            "modes": sorted({r.deployment.mode for r in runs}),
            "tp": sorted({int(p.tp) for p in pools}),
            "precisions": sorted({weights_dtype(r.deployment.model, p.precision)
                                  for r in runs for p in r.deployment.pools}),
            "kv_dtypes": sorted({kv_dtype_of(p.kv_dtype) for p in pools}),
            "input_tokens": [min(x for x, _ in lens), max(x for x, _ in lens)],
            "output_tokens": [min(y for _, y in lens), max(y for _, y in lens)]}
