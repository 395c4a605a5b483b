"""Why expert and attention-data parallelism won or lost, for `--explain` (MoE models only).

A replica's MoE layout is one of three kinds: experts tensor-parallel over the TP group (TP),
experts split whole over the TP group (EP), or attention in dp data-parallel ranks with the
experts split over all tp x dp GPUs (DP+EP). `moe_why` compares the best of each kind for the
winner's role(s): the simulator-verified goodput per GPU where an option of that kind was
verified, else the screen's per-GPU capacity, and names the operator whose time differs most
between the winner's layout and the best other kind's on one decode step at the workload's
mean context (the mechanism behind the numbers: expert weights read, all-to-all, attention).
"""

from __future__ import annotations

from costmodel.batch import Batch
from planner.verify import failure_reason
from sim.engine import cost_model_for

SHORT = {"tp": "TP", "ep": "EP", "dp": "DP+EP"}
KINDS = {"tp": "experts tensor-parallel (TP)", "ep": "expert parallel inside TP (EP)",
         "dp": "attention data parallel + expert parallel (DP+EP)"}


def kind_of(pool) -> str:
    return "dp" if pool.dp > 1 else "ep" if pool.ep > 1 else "tp"


def _layout(pool) -> str:
    return f"tp={pool.tp}" + (f" ep={pool.ep}" if pool.ep > 1 else "") + (f" dp={pool.dp}" if pool.dp > 1 else "")


def _decode_ms(pool, model, calibration, batch: int, ctx: int) -> tuple[float, dict[str, float]]:
    """One decode step of `batch` sequences over the replica (batch / dp per rank) at context
    `ctx`: ms and ms per operator."""
    cm = cost_model_for(pool, model, calibration)
    br = cm.step(Batch((), (ctx,) * max(1, batch // pool.dp)))
    return br.step_time_s * 1e3, {o.name: o.time_s * 1e3 for o in br.ops}


def moe_why(model, cands, options, win_unit, calibration=None, ctx_tokens: int = 2048) -> dict:
    """{"summary": one sentence per role, "kinds": per role and kind, the best screened and
    verified per-GPU numbers}."""
    verified: dict[tuple[str, str], tuple[float, object]] = {}
    failed: dict[tuple[str, str], tuple[float, object, str]] = {}  # lowest failed load per GPU
    for o in options:
        for p, _ in o.unit:
            key = (p.role, kind_of(p))
            if o.goodput > 0 and o.per_gpu > verified.get(key, (0.0, None))[0]:
                verified[key] = (o.per_gpu, p)
            bad = o.bisection.lowest_fail
            if o.goodput <= 0 and bad is not None and key not in failed:
                why = failure_reason(bad, o.slo) if o.slo is not None else "the SLO"
                failed[key] = (bad.load / o.unit_gpus, p, why)
    out, lines = {}, []
    for pool, _ in win_unit:
        role, win_kind = pool.role, kind_of(pool)
        best: dict[str, object] = {}
        for c in cands:
            if c.role != role:
                continue
            k = kind_of(c.pool)
            if k not in best or c.capacity_rps / c.gpus > best[k].capacity_rps / best[k].gpus:
                best[k] = c
        rows = {}
        for k in KINDS:
            if k not in best:
                rows[k] = {"fits": False}
                continue
            c = best[k]
            v, f = verified.get((role, k)), failed.get((role, k))
            rows[k] = {"fits": True, "layout": _layout(v[1] if v else c.pool),
                       "screened_per_gpu": c.capacity_rps / c.gpus, "verified_per_gpu": v[0] if v else None,
                       "failed_per_gpu": f[0] if f and not v else None, "failed_on": f[2] if f and not v else None}
        out[role] = rows
        parts = []
        for k, r in rows.items():
            if not r["fits"]:
                parts.append(f"{SHORT[k]}: no layout holds the weights and KV")
                continue
            if r["verified_per_gpu"] is not None:
                num = f"{r['verified_per_gpu']:.3g} req/s per GPU verified"
            elif r["failed_per_gpu"] is not None:
                num = (f"screened at {r['screened_per_gpu']:.3g} req/s per GPU, but missed {r['failed_on']} "
                       f"in simulation at {r['failed_per_gpu']:.3g} and was dropped")
            else:
                num = f"{r['screened_per_gpu']:.3g} req/s per GPU screened (not shortlisted)"
            parts.append(f"{SHORT[k]} ({r['layout']}) {num}")
        line = f"{role}: the plan uses {KINDS[win_kind]}, {_layout(pool)}; best of each kind: " + "; ".join(parts)
        others = [best[k] for k in best if k != win_kind]
        if others:
            rival = max(others, key=lambda c: c.capacity_rps / c.gpus)
            b = 64
            t_w, ops_w = _decode_ms(pool, model, calibration, b, ctx_tokens)
            t_r, ops_r = _decode_ms(rival.pool, model, calibration, b, ctx_tokens)
            names = (set(ops_w) | set(ops_r)) - {"host_overhead"}  # the GPU's work
            op = max(names, key=lambda n: abs(ops_w.get(n, 0.0) - ops_r.get(n, 0.0)))
            line += (f". A decode step of {b} sequences per replica at {ctx_tokens} tokens of context takes "
                     f"{t_w:.1f} ms under {_layout(pool)} ({pool.replica_gpus} GPUs) vs {t_r:.1f} ms under "
                     f"{_layout(rival.pool)} ({rival.pool.replica_gpus} GPUs); {op} differs most "
                     f"({ops_w.get(op, 0.0):.1f} vs {ops_r.get(op, 0.0):.1f} ms)")
        lines.append(line)
    return {"summary": lines, "kinds": out}
