"""Measured end-to-end runs of a serving engine, and their replay in the simulator.

A run is what a benchmark client measured against one deployment: the engine (vLLM, SGLang),
the deployment (model, GPU, parallelism, precision), the workload (fixed or per-request
lengths, a concurrency or a rate, how many requests) and the measured latencies (mean TTFT and
TPOT, and percentiles where the file has them).

- `MeasuredRun`: one run, its deployment a `sim.deployment.Deployment`.
- `load_runs(path, fmt, deployment=..., engine=..., ...)`: the runs of a results file
  (sim/runs/load.py: `vllm-bench`, `sglang-bench`, `aiperf`, `aic-silicon`).
- `load_manifest(path)`: the runs of every file a YAML or JSON manifest lists, each with the
  deployment and engine that served it.
- `sim.runs.replay.replay(run, ...)`: simulate a run as it ran.
- `sim.runs.physics.work_bounds(run)`: what the measured latencies imply the GPUs did, against
  their datasheet peaks; a run that needs more than the hardware has was not made as described.
"""

from __future__ import annotations

from sim.runs.load import RUN_FORMATS, load_runs
from sim.runs.manifest import load_manifest
from sim.runs.types import MeasuredRun

__all__ = ["RUN_FORMATS", "MeasuredRun", "load_manifest", "load_runs"]
