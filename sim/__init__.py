"""Discrete-event simulator of an LLM serving cluster (simpy).

`simulate(deployment, workload, seed=...)` -> RunMetrics (and a per-request frame).
"""
