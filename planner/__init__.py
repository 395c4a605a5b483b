"""Planner: search, LP allocation, simulator verification, the Plan type, CLI and service.

`planner.plan(model=..., gpus=..., workload=..., rate=..., ttft_slo_s=..., tpot_slo_s=...)`
returns a `Plan` (see planner.plan_types); `serveplan plan` prints the same object as JSON.
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
