"""The HTTP planning service (FastAPI): `create_app(...)` returns the app, `serveplan serve`
runs it under uvicorn.

- app: the app factory and its routes;
- schemas: request and response bodies (pydantic), named by direction;
- jobs: what the worker processes run (the same library calls as the CLI), under a deadline;
- pool: the bounded worker pool with its time limit and response cache;
- paths: the data folder, the only place a request may name a file.
"""

from planner.service.app import create_app

__all__ = ["create_app"]
