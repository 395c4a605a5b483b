"""Step-time predictions per second for realistic mixed batches (the simulator's hot path).

Batches: Llama-3.1-70B on 4 x H100 (tp=4), each iteration 0-2 prefill chunks of 16-2048 tokens
(half with a cached prefix) plus 0-256 decodes with contexts of 100-8000 tokens, drawn with a
fixed seed. Measured: `CostModel.step_time_s` on a cold cache (first pass over the batches)
and a warm one (second pass), and `CostModel.step(Batch)` with its per-operator breakdown.

Run: `.venv/bin/python benchmarks/costmodel_speed.py`. Prints a table, writes
benchmarks/out/costmodel_speed.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from costmodel.batch import Batch  # noqa: E402
from costmodel.model import CostModel  # noqa: E402

N_BATCHES = 20_000
N_STEP = 2_000


def make_batches(rng: np.random.Generator, n: int) -> list[tuple[list[tuple[int, int]], list[int]]]:
    out = []
    for _ in range(n):
        n_pre = int(rng.integers(0, 3))
        prefill = [(int(rng.integers(16, 2049)), int(rng.integers(0, 4096)) if rng.random() < 0.5 else 0)
                   for _ in range(n_pre)]
        n_dec = int(rng.integers(0 if n_pre else 1, 257))
        ctx = rng.integers(100, 8001, size=n_dec).tolist()
        out.append((prefill, ctx))
    return out


def time_hot(cm: CostModel, batches) -> float:
    args = [(p, len(d), float(sum(d))) for p, d in batches]
    t0 = time.perf_counter()
    for p, n, s in args:
        cm.step_time_s(p, n, s)
    return (time.perf_counter() - t0) / len(args)


def main() -> None:
    rng = np.random.default_rng(0)
    batches = make_batches(rng, N_BATCHES)
    cm = CostModel("llama-3.1-70b", "h100", tp=4)
    cold = time_hot(cm, batches)
    warm = time_hot(cm, batches)
    sub = batches[:N_STEP]
    objs = [Batch(tuple(p), tuple(d)) for p, d in sub]
    t0 = time.perf_counter()
    for b in objs:
        cm.step(b)
    step_s = (time.perf_counter() - t0) / len(objs)
    worst = max(abs(cm.step(b).step_time_s - cm.step_time_s(b.prefill, len(b.decode), sum(b.decode)))
                for b in objs[:200])
    res = {
        "batches": N_BATCHES,
        "hot_cold_us_per_call": cold * 1e6, "hot_cold_calls_per_s": 1 / cold,
        "hot_warm_us_per_call": warm * 1e6, "hot_warm_calls_per_s": 1 / warm,
        "step_us_per_call": step_s * 1e6, "step_calls_per_s": 1 / step_s,
        "warm_speedup_vs_step": step_s / warm,
        "max_abs_diff_step_vs_hot_s": worst,
    }
    print(f"{'path':<40} {'us/call':>9} {'calls/s':>10}")
    print(f"{'step_time_s, cold cache (1st pass)':<40} {cold * 1e6:>9.1f} {1 / cold:>10,.0f}")
    print(f"{'step_time_s, warm cache (2nd pass)':<40} {warm * 1e6:>9.1f} {1 / warm:>10,.0f}")
    print(f"{'step(Batch) with breakdown':<40} {step_s * 1e6:>9.1f} {1 / step_s:>10,.0f}")
    print(f"warm hot path is {step_s / warm:.0f}x faster than step(); max |step - hot| = {worst:.2e} s")
    out = REPO / "benchmarks" / "out" / "costmodel_speed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
