"""Autotuning with short timing windows, shared by the kernels that autotune on a GPU.

`triton.autotune` times each config of a new key with `do_bench` (by default 25 ms of warm-up
and 100 ms of runs, per config). A validate run meets dozens of new shapes, so the kernels
here time each config for 5 + 25 ms instead, and key their tuning on bucketed sizes (a power of
two of the rows, the batch, the keys), so that the many batch sizes of a serving run share
one tuning. Configs whose pipeline stages cannot fit in shared memory are pruned before they
are compiled (`smem_prune`). Tuning happens on a kernel's first launch of a key, before any
CUDA-graph capture (the timer runs every call once first), and never under the interpreter.

SERVEPLAN_AUTOTUNE=first (read when a kernel module is imported) keeps only the first config
that fits: a correctness run (the compiled test suite in `benchmarks/gpu_check.py`) then
compiles one config per kernel instead of every candidate.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import triton

SMEM_BYTES = 200 * 1024  # what a config's pipeline may use (Hopper: 227 KB per block)


def quick_bench(fn, quantiles=None):
    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


def first_only() -> bool:
    return os.environ.get("SERVEPLAN_AUTOTUNE", "").strip().lower() == "first"


def smem_prune(bytes_of: Callable[[dict, dict], float]):
    """An early-config-prune hook dropping configs whose shared memory, `bytes_of(config
    kwargs with num_stages, the launch's named args)`, exceeds SMEM_BYTES (keeping the
    smallest if none fits), and all but the first with SERVEPLAN_AUTOTUNE=first."""
    def prune(configs, named_args, **kwargs):
        def need(c):
            return bytes_of({**c.kwargs, "num_stages": c.num_stages}, {**named_args, **kwargs})

        fits = [c for c in configs if need(c) <= SMEM_BYTES] or [min(configs, key=need)]
        return fits[:1] if first_only() else fits
    return prune


def autotune(configs: list[triton.Config], key: list[str], prune=None):
    """`triton.autotune` with `quick_bench` (where this Triton takes a `do_bench`) and an
    optional early-config-prune hook."""
    kw = {"prune_configs_by": {"early_config_prune": prune}} if prune is not None else {}
    if prune is None and first_only():
        configs = configs[:1]
    try:
        return triton.autotune(configs=configs, key=key, do_bench=quick_bench, **kw)
    except TypeError:  # an older Triton without do_bench
        return triton.autotune(configs=configs, key=key, **kw)


def bucket(n: int, lo: int = 16, hi: int = 1 << 20) -> int:
    """n rounded up to a power of two, within [lo, hi]: an autotuning key."""
    return min(max(triton.next_power_of_2(max(n, 1)), lo), hi)


def elem_bytes(t) -> int:
    """Bytes per element of a tensor, or of a tensor descriptor's base tensor."""
    base = getattr(t, "base", t)
    return base.element_size()
