"""Discrete-event simulator of an LLM serving cluster (simpy).

`simulate(deployment, workload, num_requests=..., seed=...)` -> SimResult with RunMetrics (and,
on request, a per-request frame and a timeline). Workloads come from `parse_workload`.

Modules: workload (arrivals and lengths, `with_load`), traces (trace files), deployment (what
is deployed, its builders, and the one Plan-file loader), engine (simulate), cluster (arrivals,
routing, KV transfers, per-request log), router, replica (a replica's mechanics: iterations,
pipeline micro-batches, completion), scheduler (its batching policy: token budget, admission,
preemption), kvcache (block pool, prefix cache, host tier), spec (speculative decoding), slo
(SLO targets and their defaults), metrics (RunMetrics), sweep (many simulations, local or Ray).
It imports costmodel only; the planner, its interfaces and validate import it.
"""

_EXPORTS = {
    "simulate": "sim.engine",
    "SimResult": "sim.engine",
    "SLO": "sim.slo",
    "RunMetrics": "sim.metrics",
    "Workload": "sim.workload",
    "RequestArrays": "sim.workload",
    "parse_workload": "sim.workload",
    "generate_requests": "sim.workload",
    "length_stats": "sim.workload",
    "Deployment": "sim.deployment",
    "PoolConfig": "sim.deployment",
    "SpecConfig": "sim.deployment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    # keep `import sim` cheap: simpy and pandas load with the first use
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(name)
    import importlib

    return getattr(importlib.import_module(mod), name)
