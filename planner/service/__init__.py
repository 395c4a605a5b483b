"""The HTTP planning service (FastAPI): `create_app(...)` returns the app, `serveplan serve`
runs it under uvicorn. It sits on the planning algorithm, as the CLI does, and calls the same
library functions.

- app: the app factory (worker pool and data folder in app.state, error handlers, lifespan);
- routes/: one APIRouter module per resource (plan, simulate, cost, catalogue, health);
- common: what every route does to a request before the library sees it;
- schemas: request and response bodies (pydantic), named by direction;
- jobs: what the worker processes run, under a deadline;
- pool: the bounded worker pool with its time limit and response cache;
- paths: the data folder, the only place a request may name a file.
"""

from planner.service.app import create_app

__all__ = ["create_app"]
