"""Planner: the planning algorithm, and (in sub-packages) the interfaces on top of it.

`planner.plan(model=..., gpus=..., workload=..., rate=..., ttft_slo_s=..., tpot_slo_s=...)`
returns a `Plan` (planner.plan_types); `serveplan plan` prints the same object as JSON.

The algorithm, in the order a plan runs through it:
- request: the inputs checked once (PlanInputs); fleet: the GPU inventory;
- space: the replica configurations, pruned by memory; shape, screen, timing, candidates: the
  analytic screen of each one's SLO-constrained capacity;
- allocate: the MILP that picks allocations; search: the fast and the exhaustive searches;
- verify: goodput by bisection in the simulator; options: verified units and their ranking;
- sizing: a unit sized for the target load, and repaired while its SLO fails;
- planning: `plan()` itself, tying these together, and the reasons; plan_types: the Plan;
  uncertainty: its error bars from the calibration profile;
  launch: vLLM and SGLang command lines; spec_table: published speculative acceptance.
The interfaces: planner/cli/ (`serveplan`, one module per command) and planner/service/ (the
HTTP service). They import the algorithm; the algorithm never imports them, nor validate.
"""

__all__ = ["plan", "Plan"]


def __getattr__(name: str):
    # keep `import planner` cheap (the CLI imports it for every command)
    if name == "plan":
        from planner.planning import plan

        return plan
    if name == "Plan":
        from planner.plan_types import Plan

        return Plan
    raise AttributeError(name)
