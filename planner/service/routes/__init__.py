"""The service's routes, one APIRouter module per resource, included by `planner.service.app`:
plan (POST /v1/plan), simulate (POST /v1/simulate), cost (POST /v1/cost/step), catalogue
(GET /v1/models, /v1/gpus) and health (GET /healthz). A route reads the worker pool and the data
folder from `request.app.state`."""
