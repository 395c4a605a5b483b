"""Planner quality and speed: the fast search (screen + MILP + verification) against exhaustive
simulation of the same space, and the wall time of a large plan.

For each scenario both searches run with the same space, workload, SLO and seed:
- quality: the plan's simulated goodput per GPU (the rate its whole deployment is simulated at
  and meets the SLO, from the unit's goodput found by bisection, divided by the GPUs it uses)
  against the best found by exhaustive simulation (target: within 3%), or, for the cost
  objective, the plan's dollars per hour against the exhaustive one (the deployment sized for the
  target and simulated at it; target: at most 3% more);
- speed: fast wall time / exhaustive wall time (target: at most 5%).
Scenarios: Llama-3.1-8B on 8 H100 (Azure conversation trace); Llama-3.1-70B on 16 H100 with a
tight TPOT SLO; Llama-3.1-70B on a priced A100 + H100 fleet, cost objective; speculative
decoding winning (small batches, tight TPOT, a good draft) and losing (large batches, weak
n-gram acceptance); disaggregation winning (long prompts, tight TPOT) and losing (short prompts,
long answers). Every scenario searches the same base space (both modes, TP 1-8, token budgets
2048 and 8192); the speculative ones add k in 0..8 and adaptive. `spec-wins-narrow` and
`spec-loses-narrow` repeat them in the narrower space earlier runs used (colocated only, token
budget 8192); they run only when named in --only. Then Llama-3.1-70B on 64 H100 with the
default space, fast search only (target under 10 s).

    .venv/bin/python benchmarks/planner_quality.py [--only NAME,...] [--no-exhaustive] [--workers 2]

Prints a table and writes benchmarks/out/planner_quality.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
AZ = "azure-conv"


def scenarios():
    from planner.space import SearchSpace

    base = dict(tps=(1, 2, 4, 8), pps=(1,), max_num_seqs=(None,), max_num_batched_tokens=(2048, 8192),
                prefill_batched_tokens=(8192,), spec_ks=(0,), spec_adaptive=False)
    # the speculative space: the base space plus k in 0..8 and adaptive (on colocated
    # replicas and on a disaggregated plan's decode pool)
    spec = dict(base, spec_ks=tuple(range(9)), spec_adaptive=True)
    # the narrower space the first runs used (colocated only, one token budget): --narrow-spec
    narrow = dict(spec, modes=("colocated",), max_num_batched_tokens=(8192,))
    spec_wins = dict(model="llama-3.1-70b", gpus="h100:8", workload="fixed:512,256", ttft_slo_s=1.0,
                     tpot_slo_s=0.02, spec_method="draft", draft_model="llama-3.2-1b",
                     spec_acceptance=0.8, kv_dtype="bf16")
    spec_loses = dict(model="llama-3.1-8b", gpus="h100:8", workload=AZ, ttft_slo_s=1.0, tpot_slo_s=0.1,
                      spec_method="draft", draft_model="llama-3.2-1b", spec_acceptance=0.5,
                      kv_dtype="bf16")
    return [
        ("8b-8xh100-azure", "Llama-3.1-8B, 8 H100, Azure conversation trace",
         dict(model="llama-3.1-8b", gpus="h100:8", workload=AZ, ttft_slo_s=1.0, tpot_slo_s=0.04),
         SearchSpace(**base)),
        ("70b-16xh100-tight-tpot", "Llama-3.1-70B, 16 H100, Azure conv, TPOT 25 ms",
         dict(model="llama-3.1-70b", gpus="h100:16", workload=AZ, ttft_slo_s=1.0, tpot_slo_s=0.025),
         SearchSpace(**base)),
        ("70b-mixed-cost", "Llama-3.1-70B, 8 H100 @ $4.90 + 16 A100 @ $2.00, 10 req/s, cost",
         dict(model="llama-3.1-70b", gpus="h100:8@4.9,a100:16@2.0", workload=AZ, rate=10.0,
              ttft_slo_s=1.5, tpot_slo_s=0.08, objective="cost", kv_dtype="fp8"),
         SearchSpace(**base)),
        ("spec-wins", "Llama-3.1-70B, 8 H100, 512/256 tokens, TPOT 20 ms, 1B draft a=0.8",
         spec_wins, SearchSpace(**spec)),
        ("spec-loses", "Llama-3.1-8B, 8 H100, Azure conv, TPOT 100 ms (large batches), 1B draft a=0.5",
         spec_loses, SearchSpace(**spec)),
        ("spec-wins-narrow", "spec-wins in the narrow space (colocated, token budget 8192)",
         spec_wins, SearchSpace(**narrow)),
        ("spec-loses-narrow", "spec-loses in the narrow space (colocated, token budget 8192)",
         spec_loses, SearchSpace(**narrow)),
        ("disagg-wins", "Llama-3.1-70B, 16 H100, 4096/256 tokens, TPOT 30 ms",
         dict(model="llama-3.1-70b", gpus="h100:16", workload="fixed:4096,256", ttft_slo_s=2.0,
              tpot_slo_s=0.03),
         SearchSpace(**base)),
        ("disagg-loses", "Llama-3.1-8B, 8 H100, 128/1024 tokens, TPOT 30 ms",
         dict(model="llama-3.1-8b", gpus="h100:8", workload="fixed:128,1024", ttft_slo_s=0.5,
              tpot_slo_s=0.03),
         SearchSpace(**base)),
    ]


def describe(p) -> str:
    out = []
    for pool in p.deployment["pools"]:
        s = pool["spec"]
        spec = ""
        if s["method"] != "none" and (s["num_speculative_tokens"] or s["adaptive"]):
            spec = f" {s['method']}:" + ("adaptive" if s["adaptive"] or not s["num_speculative_tokens"]
                                         else f"k{s['num_speculative_tokens']}")
        out.append(f"{pool['replicas']}x{pool['role'][:3]} {pool['gpu']} tp{pool['tp']} "
                   f"mbt{pool['max_num_batched_tokens']} kv-{pool['kv_dtype']}{spec}")
    return " + ".join(out)


def summary(p) -> dict:
    cap = p.capacity
    return {
        "deployment": describe(p), "mode": p.deployment["mode"], "feasible": p.feasible,
        "binding": p.binding, "unit": cap["unit"], "unit_goodput": cap["unit_goodput"],
        "goodput_per_gpu": cap["goodput_per_gpu"], "gpus": p.predicted.gpus,
        "cost_per_hour_usd": p.predicted.cost_per_hour_usd,
        "operating_rate_rps": p.simulation["rate_rps"],
        "deployment_goodput_per_gpu": (p.simulation["rate_rps"] or 0) / max(p.predicted.gpus, 1),
        "slo_attainment": p.predicted.slo_attainment, "wall_s": p.search["wall_s"],
        "simulated": p.search["simulated"], "candidates": p.search["candidates"],
        "spec_in_plan": any(pl["spec"]["method"] != "none" and (pl["spec"]["num_speculative_tokens"]
                                                                 or pl["spec"]["adaptive"])
                            for pl in p.deployment["pools"]),
    }


def run(only: set[str] | None, exhaustive: bool, workers: int) -> dict:
    from planner import plan

    rows = []
    for name, title, args, space in scenarios():
        if (only and name not in only) or (not only and name.endswith("-narrow")):
            continue
        print(f"== {name}: {title}", file=sys.stderr, flush=True)
        fast = plan(**args, space=space, workers=workers)
        row = {"scenario": name, "title": title, "objective": args.get("objective", "goodput"),
               "space": asdict(space), "fast": summary(fast)}
        print(f"   fast: {row['fast']['deployment']} ({row['fast']['wall_s']:.1f} s)", file=sys.stderr, flush=True)
        if exhaustive:
            t = time.perf_counter()
            ex = plan(**args, space=space, workers=workers, exhaustive=True,
                      progress=lambda m: print("   " + m, file=sys.stderr, flush=True) if "exhaustive" in m else None)
            row["exhaustive"] = summary(ex)
            row["exhaustive"]["wall_s"] = time.perf_counter() - t
            f, e = row["fast"], row["exhaustive"]
            if row["objective"] == "cost":
                row["quality_ratio"] = e["cost_per_hour_usd"] / f["cost_per_hour_usd"]
                row["quality_met"] = f["cost_per_hour_usd"] <= 1.03 * e["cost_per_hour_usd"]
            else:
                key = "deployment_goodput_per_gpu"
                row["quality_ratio"] = f[key] / e[key] if e[key] else None
                row["quality_met"] = row["quality_ratio"] is not None and row["quality_ratio"] >= 0.97
            row["wall_ratio"] = f["wall_s"] / e["wall_s"]
            row["speed_met"] = row["wall_ratio"] <= 0.05
            print(f"   exhaustive: {e['deployment']} ({e['wall_s']:.0f} s); quality {row['quality_ratio']:.3f}, "
                  f"wall ratio {row['wall_ratio']:.3%}", file=sys.stderr, flush=True)
        rows.append(row)
    big = []
    if not only or "70b-64xh100" in only:
        for rate in (None, 8.0):
            args = dict(model="llama-3.1-70b", gpus="h100:64", workload=AZ, ttft_slo_s=1.0,
                        tpot_slo_s=0.05, rate=rate)
            t = time.perf_counter()
            p = plan(**args, workers=workers)
            wall = time.perf_counter() - t
            big.append({"rate_rps": rate, "wall_s": wall, "under_10s": wall < 10.0,
                        "plan": summary(p), "search": p.search})
            print(f"== 70B on 64 H100 (rate {rate}): {wall:.1f} s, {describe(p)}", file=sys.stderr, flush=True)
    return {"scenarios": rows, "large": big, "machine": platform.platform(), "workers": workers}


def print_table(res: dict) -> None:
    print(f"{'scenario':24} {'fast plan':58} {'metric':>10} {'exhaustive':>10} {'ratio':>6} "
          f"{'fast s':>7} {'exh. s':>7} {'wall %':>7}")
    for r in res["scenarios"]:
        f, e = r["fast"], r.get("exhaustive")
        key = "cost_per_hour_usd" if r["objective"] == "cost" else "deployment_goodput_per_gpu"
        em = f"{e[key]:.3f}" if e else "-"
        ratio = f"{r['quality_ratio']:.3f}" if e and r.get("quality_ratio") is not None else "-"
        ew = f"{e['wall_s']:.0f}" if e else "-"
        wr = f"{r['wall_ratio']:.2%}" if e else "-"
        print(f"{r['scenario']:24} {f['deployment'][:58]:58} {f[key]:>10.3f} {em:>10} {ratio:>6} "
              f"{f['wall_s']:>7.1f} {ew:>7} {wr:>7}")
    for b in res["large"]:
        print(f"70B on 64 H100, rate {b['rate_rps']}: {b['wall_s']:.1f} s (< 10 s: {b['under_10s']}), "
              f"{b['plan']['deployment']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="comma-separated scenario names (and/or 70b-64xh100)")
    ap.add_argument("--no-exhaustive", action="store_true")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    only = {s for s in a.only.split(",") if s} or None
    res = run(only, not a.no_exhaustive, a.workers)
    OUT.mkdir(parents=True, exist_ok=True)
    name = "planner_quality.json" if not only else f"planner_quality_{'_'.join(sorted(only))}.json"
    (OUT / name).write_text(json.dumps(res, indent=2, default=str) + "\n")
    print_table(res)


if __name__ == "__main__":
    main()
