"""
AhaChat's contract under ``/api``, what the provider's client talks to: a route for every endpoint
of the registry (:mod:`airflow_provider_ahachat.registry`), answered by its action's handler
(:mod:`..handlers`).

Authentication: ``ahachat_token`` missing or no bot's token is 401, a bot that does not exist is
404, another bot's token is 403. Answers are ``{"success": true, "data": ...}``, or, for the
Broadcast API (a copy of Chatfuel's), ``{"success": true, "result": "..."}``, its refusals in the
same shape (:mod:`.answers`). Every request to these endpoints goes through the knobs first
(:mod:`..middleware`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_provider_ahachat.actions import Action
from airflow_provider_ahachat.registry import ACTIONS
from airflow_provider_ahachat.request import Endpoint
from airflow_provider_ahachat.sandbox.handlers import Call, Handler, handler_for
from airflow_provider_ahachat.sandbox.routes.answers import broadcast_ok, broadcast_refused, ok
from airflow_provider_ahachat.sandbox.world import ApiError


def _route(action: Action, endpoint: Endpoint, handler: Handler) -> Any:
    """The route of ``endpoint``: the bot authenticated, then the handler, its answer shaped."""
    by_phone = endpoint == action.phone_endpoint

    async def route(request: Request) -> JSONResponse:
        sandbox = request.app.state.sandbox
        try:
            bot = sandbox.bot(request.path_params["bot_id"], request.query_params.get("ahachat_token"))
            answer = await handler(Call(sandbox, bot, request, by_phone=by_phone))
        except ApiError as err:
            if action.answer == "chatfuel":
                return broadcast_refused(err)
            raise
        return broadcast_ok(answer) if action.answer == "chatfuel" else ok(answer)

    return route


def api_router() -> APIRouter:
    """AhaChat's API: a route for every endpoint of the registry, serving the app's state."""
    router = APIRouter()
    served: set[str] = set()
    for action in ACTIONS.values():
        for endpoint in action.endpoints:
            if endpoint.name in served:
                continue  # an endpoint two actions share is served once
            served.add(endpoint.name)
            handler = handler_for({"endpoint": endpoint.name, "action": action.name})
            router.add_api_route(
                endpoint.path,
                _route(action, endpoint, handler),
                methods=[endpoint.method],
                name=endpoint.name,
            )
    return router
