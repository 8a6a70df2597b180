"""
The sandbox's HTTP app: AhaChat's contract under ``/api``, and a control API under ``/_sandbox``.

:func:`create_app` only assembles the parts, each in a file named for its concern:

- :mod:`.routes.api`: the AhaChat API, a route for every endpoint of the registry, answered by the
  action's handler;
- :mod:`.routes.control`: the control API (outbox, acting as a customer, the knobs, stats), with
  the list of its endpoints;
- :mod:`.routes.json_api`: the blocks' JSON API steps (:mod:`.json_api`), which call a URL when a
  customer reaches the block;
- :mod:`.routes.taps`: a customer taps a delivered button (``POST /_sandbox/users/<id>/tap``);
- :mod:`.routes.answers`: the shape of every answer and the error handlers;
- :mod:`.middleware`: the knobs (rate limit, latency, injected errors), the request log and the
  stats, applied to every API request;
- :mod:`.state`: the in-memory AhaChat itself, which knows nothing of HTTP: its bots and customers
  (:mod:`.world`, from the seed, :mod:`.seed`), its outbox (:mod:`.outbox`), its knobs
  (:mod:`.knobs`) and Messenger's rules (:mod:`.messenger`).
"""

from __future__ import annotations

from fastapi import FastAPI

from airflow_provider_ahachat.sandbox.middleware import ApiKnobs
from airflow_provider_ahachat.sandbox.routes import control, json_api, taps
from airflow_provider_ahachat.sandbox.routes.answers import add_error_handlers
from airflow_provider_ahachat.sandbox.routes.api import api_router
from airflow_provider_ahachat.sandbox.routes.control import CONTROL_PREFIX
from airflow_provider_ahachat.sandbox.state import SandboxState

__all__ = ["CONTROL_PREFIX", "ApiKnobs", "create_app"]


def create_app(state: SandboxState | None = None) -> FastAPI:
    """
    Build the sandbox's ASGI app.

    :param state: the state to serve; a fresh one from the packaged seed by default.
    """
    sandbox = state if state is not None else SandboxState()
    app = FastAPI(
        title="AhaChat sandbox",
        description="An in-memory AhaChat for tests and demos.",
        # The control API's docs are a plain page of its own (routes/control.py), readable offline:
        # FastAPI's Swagger UI loads its scripts from a CDN.
        docs_url=None,
        redoc_url=None,
        openapi_url=f"{CONTROL_PREFIX}/openapi.json",
    )
    app.state.sandbox = sandbox
    app.add_middleware(ApiKnobs, state=sandbox, router=app.router)
    add_error_handlers(app)
    app.include_router(api_router())
    for routes in (control.router, json_api.router, taps.router):
        app.include_router(routes)
    return app
