"""Timing one operator or one iteration: the median of repeated runs, caches kept cold.

Inputs rotate: the caller passes several equivalent calls (the same op on different weight
and activation buffers, e.g. one per layer) and they run in turn, so a repeat does not find
the previous repeat's operands in cache.
- CUDA: `triton.testing.do_bench` (warm-up, then the median of ~100 ms of runs; it also
  flushes L2 between runs). Every call runs once first, so compilation and autotuning stay
  out of the measurement.
- CPU: time.perf_counter around each call, after `warmup` untimed calls; the median of at
  least `min_reps` and at most `reps` runs, stopping early once `budget_s` seconds are spent.
  torch runs on `threads` threads (`cpu_threads`).
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@contextmanager
def cpu_threads(n: int) -> Iterator[None]:
    """Run torch on `n` CPU threads inside the block, then restore the previous count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class Timer:
    device: str  # "cuda" | "cpu"
    warmup: int = 1
    min_reps: int = 3
    reps: int = 7
    budget_s: float = 0.3  # CPU: stop repeating after this much measured time
    bench_warmup_ms: float = 25.0  # CUDA: do_bench's warm-up and measurement windows
    bench_rep_ms: float = 100.0

    def median_s(self, calls: Sequence[Callable[[], object]]) -> float:
        """Median seconds of one call, the calls taken in turn (rotating inputs)."""
        if not calls:
            raise ValueError("no calls to time")
        if self.device == "cuda":
            return self._cuda(calls)
        return self._cpu(calls)

    def _cuda(self, calls: Sequence[Callable[[], object]]) -> float:
        import torch
        import triton.testing

        for c in calls:  # compile and autotune outside the measurement
            c()
        torch.cuda.synchronize()
        it = itertools.cycle(calls)
        ms = triton.testing.do_bench(lambda: next(it)(), warmup=self.bench_warmup_ms,
                                     rep=self.bench_rep_ms, return_mode="median")
        return float(ms) * 1e-3

    def _cpu(self, calls: Sequence[Callable[[], object]]) -> float:
        for i in range(max(self.warmup, 0)):
            calls[i % len(calls)]()
        times: list[float] = []
        for i in range(self.reps):
            call = calls[i % len(calls)]
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
            if len(times) >= self.min_reps and sum(times) > self.budget_s:
                break
        return statistics.median(times)
