"""`serveplan serve`: the HTTP planning service (FastAPI under uvicorn).

One uvicorn process serves the API; planning and simulation run in `--workers` planner
processes beside it (planner.service.pool), each request within `--timeout-s` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from costmodel.errors import ServePlanError
from planner.cli.common import user_errors


@user_errors
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (0.0.0.0: all)"),
    port: int = typer.Option(8000, "--port", help="TCP port"),
    workers: int = typer.Option(None, "--workers",
                                help="planner processes (default: the machine's cores)"),
    timeout_s: float = typer.Option(120.0, "--timeout-s",
                                    help="per-request limit in seconds, queue wait included (504 past it)"),
    queue: int = typer.Option(None, "--queue",
                              help="requests admitted beyond the running ones (default 4 per "
                                   "worker; 503 past it)"),
    cache_size: int = typer.Option(128, "--cache-size", help="responses kept for identical requests"),
    data_dir: Path = typer.Option(None, "--data-dir",
                                  help="the only folder requests may read files from (trace:PATH, "
                                       "config.json, calibration); default: the shared traces folder"),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn: critical|error|warning|info|debug"),
):
    """Serve POST /v1/plan, /v1/simulate, /v1/cost/step over HTTP (OpenAPI at /openapi.json)."""
    try:
        import uvicorn
    except ImportError:
        raise ServePlanError("serveplan serve needs the service extra: pip install 'serveplan[service]'") from None
    from planner.service import create_app

    if not 1 <= port <= 65535:
        raise ServePlanError(f"--port {port}; expected 1..65535")
    n = workers if workers is not None else (os.cpu_count() or 1)
    kwargs = {} if data_dir is None else {"data_dir": data_dir}
    app = create_app(workers=n, timeout_s=timeout_s, max_queue=queue, cache_size=cache_size, **kwargs)
    typer.echo(f"serveplan: {n} planner worker(s), {timeout_s:g} s limit per request; "
               f"data folder: {app.state.data.root or 'none (no trace files)'}", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)
