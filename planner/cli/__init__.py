"""`serveplan`: the command-line interface (typer).

Commands are thin: options -> one library call -> JSON (with --json) or a rich table.
Each command group lives in its own module and registers itself here.
"""

from __future__ import annotations

import typer

from planner import cli_calibrate, cli_cost, cli_plan, cli_serve, cli_sim, cli_sweep, cli_validate

app = typer.Typer(
    name="serveplan",
    help="Plan LLM serving deployments: parallelism, batching, disaggregation, speculative "
    "decoding and KV budgets, from a profiled cost model and a discrete-event simulator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

cli_cost.register(app)
cli_calibrate.register(app)
cli_sim.register(app)
cli_sweep.register(app)
cli_plan.register(app)
cli_serve.register(app)
cli_validate.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
