"""Timing one operator or one iteration as the engine runs it: the median of repeated runs.

Inputs rotate: the caller passes several equivalent calls (the same op on different weight
and activation buffers, e.g. one per layer) and they run in turn, so a repeat does not find
the previous repeat's operands in cache (the weights of the layers rotated through are more
than the L2 holds).
- CUDA, `median_s` (default `graph=True`): the calls are captured once in a CUDA graph (each
  call `inner` times, so one replay lasts ~GRAPH_REPLAY_S) and the graph is replayed; the time
  of a call is the median replay / the calls in it. This is how vLLM runs a decode step (one
  full graph) and the pieces of a prefill (piecewise graphs): the GPU's time, without the
  host's launch path, which an eager `do_bench` of a small kernel mostly measures (91.8 us
  eager against 1.8 us in a graph for an RMSNorm of 6 tokens on an H200). Every call is run
  once first, so compilation, autotuning and caches stay out of the capture. A call that
  cannot be captured (a host copy or sync on its path) raises `CaptureError`.
- CUDA, `eager_s`: the same calls launched back to back from Python, timed with CUDA events:
  what an engine without CUDA graphs would see. Eager minus graph is host time, not kernel time.
- `graph=False`: the old eager `triton.testing.do_bench` (L2 flushed between runs).
- CPU: time.perf_counter around each call, after `warmup` untimed calls; the median of at
  least `min_reps` and at most `reps` runs, stopping early once `budget_s` seconds are spent.
  torch runs on `threads` threads (`cpu_threads`). `eager_s` is the same on a CPU.
"""

from __future__ import annotations

import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

GRAPH_REPLAY_S = 1e-3  # a replay long enough that event resolution (~0.5 us) does not matter
MAX_CALLS_PER_GRAPH = 512  # and short enough to capture quickly


class CaptureError(RuntimeError):
    """A call could not be captured in a CUDA graph (a host copy or sync on its path)."""


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
    bench_warmup_ms: float = 25.0  # CUDA eager do_bench's warm-up and measurement windows
    bench_rep_ms: float = 100.0
    graph: bool = True  # CUDA: time replays of a CUDA graph (as the engine runs)
    graph_rep_ms: float = 60.0  # CUDA: replay for this long
    graph_samples: int = 15  # ... in at least this many timed replays

    def median_s(self, calls: Sequence[Callable[[], object]]) -> float:
        """Median seconds of one call, the calls taken in turn (rotating inputs)."""
        if not calls:
            raise ValueError("no calls to time")
        if self.device != "cuda":
            return self._cpu(calls)
        return self._graph(calls) if self.graph else self._cuda(calls)

    def eager_s(self, calls: Sequence[Callable[[], object]]) -> float:
        """Median seconds of one call launched eagerly (the host's launch path included)."""
        if not calls:
            raise ValueError("no calls to time")
        if self.device != "cuda":
            return self._cpu(calls)
        import torch

        for c in calls:
            c()
        torch.cuda.synchronize()
        n = len(calls)
        per_call = self._events(lambda: [c() for c in calls]) / n
        loops = max(1, min(64, math.ceil(GRAPH_REPLAY_S / max(per_call, 1e-7) / n)))
        samples = [self._events(lambda: [c() for _ in range(loops) for c in calls]) / (loops * n)
                   for _ in range(max(3, self.graph_samples // 3))]
        return statistics.median(samples)

    @staticmethod
    def _events(fn: Callable[[], object]) -> float:
        """Seconds of the GPU work `fn` launches, between two CUDA events."""
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) * 1e-3

    def _graph(self, calls: Sequence[Callable[[], object]]) -> float:
        import torch

        for c in calls:  # compile, autotune and fill caches outside the capture
            c()
        torch.cuda.synchronize()
        n = len(calls)
        per_call = self._events(lambda: [c() for c in calls]) / n  # eager: an upper bound
        inner = max(1, min(MAX_CALLS_PER_GRAPH // n, math.ceil(GRAPH_REPLAY_S / max(per_call, 1e-7) / n)))
        side = torch.cuda.Stream()  # warm-up on a side stream, as torch's capture docs advise
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for c in calls:
                c()
        torch.cuda.current_stream().wait_stream(side)
        graph = self._capture(calls, inner)
        # the eager estimate includes host time: a replay of small kernels may be far shorter
        # than GRAPH_REPLAY_S, so capture more calls per replay once the GPU time is known
        t = self._events(graph.replay)
        more = max(1, min(MAX_CALLS_PER_GRAPH // n, math.ceil(inner * GRAPH_REPLAY_S / max(t, 1e-7))))
        if t < GRAPH_REPLAY_S / 2 and more > inner:
            del graph
            inner = more
            graph = self._capture(calls, inner)
        samples: list[float] = []
        spent = 0.0
        while len(samples) < self.graph_samples or spent < self.graph_rep_ms * 1e-3:
            t = self._events(graph.replay)
            samples.append(t)
            spent += t
            if len(samples) >= 10 * self.graph_samples:
                break
        del graph
        return statistics.median(samples) / (inner * n)

    @staticmethod
    def _capture(calls: Sequence[Callable[[], object]], inner: int):
        """A CUDA graph of the calls, each `inner` times, replayed once."""
        import torch

        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                for _ in range(inner):
                    for c in calls:
                        c()
        except RuntimeError as e:
            torch.cuda.synchronize()
            raise CaptureError(f"cannot capture in a CUDA graph: {str(e).splitlines()[0]}") from e
        graph.replay()
        torch.cuda.synchronize()
        return graph

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
