"""Simulator speed and memory: how fast `sim.simulate` runs the cases the planner will run.

1. Throughput: the Azure conversation trace (replayed in order, rescaled to a target rate) on
   8 replicas of Llama-3.1-8B on H100 (vLLM defaults), 100,000 requests; simulated requests and
   engine iterations per wall second. Target: under 30 s wall on the 2-core dev machine.
2. Memory: a 1,000,000-request run in a fresh subprocess; peak RSS from resource.getrusage.
   Target: under 2 GB (per-request state lives only while in flight; finished requests leave
   a few numeric columns, ~60 bytes each).

    .venv/bin/python benchmarks/sim_speed.py [--requests 100000] [--rates 64,128] [--memory-requests 1000000]

Prints a table and writes benchmarks/out/sim_speed.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out"
REPO = Path(__file__).resolve().parents[1]

MEMORY_CHILD = r"""
import json, resource, sys, time
from sim import Deployment, PoolConfig, parse_workload, simulate
n, rate = int(sys.argv[1]), float(sys.argv[2])
dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100", replicas=8),))
t = time.perf_counter()
m = simulate(dep, parse_workload("azure-conv", rate=rate), num_requests=n, seed=0).metrics
wall = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
print(json.dumps({"requests": n, "rate_rps": rate, "wall_s": wall, "peak_rss_bytes": rss,
                  "iterations": m.iterations, "num_completed": m.num_completed}))
"""


def run_speed(n: int, rate: float) -> dict:
    from sim import Deployment, PoolConfig, parse_workload, simulate

    dep = Deployment(model="llama-3.1-8b", pools=(PoolConfig(role="colocated", gpu="h100", replicas=8),))
    wl = parse_workload("azure-conv", rate=rate)
    t = time.perf_counter()
    m = simulate(dep, wl, num_requests=n, seed=0).metrics
    wall = time.perf_counter() - t
    return {"requests": n, "rate_rps": rate, "wall_s": wall, "requests_per_s": n / wall,
            "iterations": m.iterations, "iterations_per_s": m.iterations / wall,
            "sim_duration_s": m.sim_duration_s, "ttft_p90_s": m.ttft_p90_s, "tpot_p90_s": m.tpot_p90_s,
            "kv_peak_fraction": m.kv_peak_fraction, "preemptions": m.preemptions,
            "under_30s": wall < 30.0}


def run_memory(n: int, rate: float) -> dict:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n), str(rate)], cwd=REPO,
                       capture_output=True, text=True, check=True)
    d = json.loads(r.stdout.strip().splitlines()[-1])
    d["under_2gb"] = d["peak_rss_bytes"] < 2e9
    return d


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=100_000)
    ap.add_argument("--rates", default="64,128", help="comma-separated target rates (req/s)")
    ap.add_argument("--memory-requests", type=int, default=1_000_000, help="0 skips the memory run")
    ap.add_argument("--memory-rate", type=float, default=128.0)
    args = ap.parse_args()
    speed = [run_speed(args.requests, float(r)) for r in args.rates.split(",")]
    mem = run_memory(args.memory_requests, args.memory_rate) if args.memory_requests else None

    from rich.console import Console
    from rich.table import Table

    t = Table(title="sim_speed: Azure conv trace, 8 x Llama-3.1-8B on H100")
    for col in ("requests", "rate req/s", "wall s", "sim req/s", "iterations", "iter/s",
                "sim time s", "TTFT p90 ms", "TPOT p90 ms", "< 30 s"):
        t.add_column(col, justify="right")
    for s in speed:
        t.add_row(f"{s['requests']:,}", f"{s['rate_rps']:g}", f"{s['wall_s']:.1f}",
                  f"{s['requests_per_s']:,.0f}", f"{s['iterations']:,}", f"{s['iterations_per_s']:,.0f}",
                  f"{s['sim_duration_s']:,.0f}", f"{s['ttft_p90_s'] * 1e3:.0f}",
                  f"{s['tpot_p90_s'] * 1e3:.1f}", "yes" if s["under_30s"] else "NO")
    c = Console(width=160)
    c.print(t)
    if mem:
        c.print(f"memory: {mem['requests']:,} requests at {mem['rate_rps']:g} req/s: peak RSS "
                f"{mem['peak_rss_bytes'] / 1e9:.2f} GB in {mem['wall_s']:.0f} s wall "
                f"({'under' if mem['under_2gb'] else 'OVER'} 2 GB)")
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "sim_speed", "date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
           "machine": platform.machine(), "speed": speed, "memory": mem}
    (OUT / "sim_speed.json").write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
