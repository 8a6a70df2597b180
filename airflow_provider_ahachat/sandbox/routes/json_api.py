"""
The control API of the blocks' JSON API steps (:mod:`..json_api`), under ``/_sandbox/json_api``.

``GET /_sandbox/json_api?bot_id=``
    Block name to its steps, header values shown as ``***``.
``PUT /_sandbox/json_api/<block>?bot_id=``
    Give the block these steps: a list of ``{"url", "method" (POST), "headers", "body", "format"
    (json or form), "timeout" (10)}``, or one step; ``[]`` removes them. A block that does not
    exist yet is created without messages. They run when a customer reaches the block
    (``PATCH /_sandbox/users/<id>`` with ``run_block``) and the answer goes to the outbox with kind
    ``json_api``.
``DELETE /_sandbox/json_api/<block>?bot_id=``
    Remove the block's steps.
``GET /_sandbox/json_api/calls?limit=100``
    The last calls, oldest first: ``{"seq", "time", "bot_id", "messenger_user_id", "block_name",
    "method", "url", "body" (as sent), "status", "answer", "error", "duration_ms", "outbox_seq",
    "unresolved" (placeholders no attribute filled)}``; headers are not kept.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_provider_ahachat.models import validate_block_name
from airflow_provider_ahachat.sandbox.routes.answers import json_body, ok
from airflow_provider_ahachat.sandbox.routes.control import CONTROL_PREFIX, Sandbox, control_bot
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import ApiError, checked

#: The endpoints of the JSON API steps, serving the app's state.
router = APIRouter(prefix=f"{CONTROL_PREFIX}/json_api")


@router.get("")
async def list_steps(bot_id: str | None = None, sandbox: SandboxState = Sandbox) -> JSONResponse:
    return ok(sandbox.json_api.of(control_bot(sandbox, bot_id)))


@router.get("/calls")
async def calls(limit: int = 100, sandbox: SandboxState = Sandbox) -> JSONResponse:
    if limit < 0:
        raise ApiError(400, "limit: must be 0 or more")
    made = list(sandbox.json_api.calls)[-limit:] if limit else []
    return ok([call.to_json() for call in made])


@router.put("/{block_name}")
async def set_steps(
    block_name: str, request: Request, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot = control_bot(sandbox, bot_id)
    checked(validate_block_name, block_name, "block")
    body = await json_body(request)
    raw = body.get("steps", body) if isinstance(body, dict) and "url" not in body else body
    steps = sandbox.json_api.set(bot, block_name, raw)
    return ok({"block": block_name, "steps": [step.to_json() for step in steps]})


@router.delete("/{block_name}")
async def delete_steps(
    block_name: str, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot = control_bot(sandbox, bot_id)
    sandbox.json_api.set(bot, block_name, [])
    return ok({"block": block_name, "steps": []})
