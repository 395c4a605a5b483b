"""A 200-configuration sweep's wall time with 1 worker and with all workers (and on Ray).

Usage: .venv/bin/python benchmarks/sweep_scaling.py [--configs 200] [--requests 400] [--ray]
Point it at an existing Ray cluster with RAY_ADDRESS=ray://head:10001 (or auto) and --ray.
Prints a table and writes benchmarks/out/sweep_scaling.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

from sim.deployment import Deployment, PoolConfig
from sim.sweep import make_executor, sweep
from sim.workload import parse_workload


def configs(n: int) -> list[Deployment]:
    grid = itertools.product([1, 2, 4], [1, 2, 3, 4], [32, 64, 128, 256, 512], ["auto", "fp8"],
                             ["bf16", "fp8"])
    out = []
    for tp, rep, seqs, kv, prec in grid:
        out.append(Deployment("llama-3.1-8b", (PoolConfig("colocated", "h100", tp=tp, replicas=rep,
                                                           max_num_seqs=seqs, kv_dtype=kv,
                                                           precision=prec),)))
        if len(out) == n:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", type=int, default=200)
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--ray", action="store_true", help="also run on Ray (local, or RAY_ADDRESS)")
    args = ap.parse_args()
    deps = configs(args.configs)
    wl = parse_workload("azure-conv", rate=6.0)
    ncpu = os.cpu_count() or 1
    rows = []
    ref = None
    runs = [("local", 1), ("local", ncpu)] + ([("ray", ncpu)] if args.ray else [])
    for backend, workers in runs:
        ex = make_executor(backend, workers)
        t0 = time.perf_counter()
        df = sweep(deps, wl, num_requests=args.requests, seed=0, executor=ex)
        wall = time.perf_counter() - t0
        same = None
        cols = ["ttft_p90_s", "tpot_p90_s", "throughput_tok_s"]
        if ref is None:
            ref = df
        else:  # exact equality, row by row (seeds travel with the tasks)
            diff = (ref[cols].astype(float) - df[cols].astype(float)).abs().to_numpy()
            same = int((diff > 0).any(axis=1).sum()) == 0
        rows.append({"backend": backend, "workers": workers, "configs": len(deps),
                     "requests_per_sim": args.requests, "wall_s": wall,
                     "sims_per_s": len(deps) / wall, "failed": int(df["error"].notna().sum()),
                     "identical_to_first": same})
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_1_worker"] = base / r["wall_s"]
    print(f"{'backend':8} {'workers':>7} {'configs':>7} {'wall s':>8} {'sims/s':>7} {'speedup':>8} {'failed':>6} identical")
    for r in rows:
        print(f"{r['backend']:8} {r['workers']:>7} {r['configs']:>7} {r['wall_s']:>8.1f} {r['sims_per_s']:>7.2f} "
              f"{r['speedup_vs_1_worker']:>8.2f} {r['failed']:>6} {r['identical_to_first']}")
    out = Path(__file__).parent / "out" / "sweep_scaling.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"cpus": ncpu, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
