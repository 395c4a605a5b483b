"""`serveplan`: the command-line interface (typer); `main` is the console script's entry point.

Commands are thin: options -> one library call -> JSON (with --json) or a rich table. One module
per command, each registering itself here: plan, simulate, sweep, cost (`cost step`), calibrate
(`calibrate` and `cost eval`), serve, validate. Beside them: common (one JSON document on stdout,
one error line on failure), explain (the readable plan) and plots (HTML reports). A command
that needs validate (torch, triton) or the service (FastAPI) imports it inside the command.
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

