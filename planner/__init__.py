"""Planner: search, LP allocation, simulator verification, the Plan type, CLI and service."""
