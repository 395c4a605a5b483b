"""`serveplan`: the command-line interface (typer).

Commands are thin: options -> one library call -> JSON (with --json) or a rich table.
Each command group lives in its own module and registers itself here.
"""

from __future__ import annotations

import typer

from planner.cli import calibrate, cost, plan, serve, simulate, sweep, validate

app = typer.Typer(
    name="serveplan",
    help="Plan LLM serving deployments: parallelism, batching, disaggregation, speculative "
    "decoding and KV budgets, from a profiled cost model and a discrete-event simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

cost.register(app)
calibrate.register(app)
simulate.register(app)
sweep.register(app)
plan.register(app)
serve.register(app)
validate.register(app)


def main() -> None:
    app()

