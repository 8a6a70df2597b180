"""
Tapping a delivered button as the customer, under ``/_sandbox/users/<id>/tap``.

``POST /_sandbox/users/<id>/tap?bot_id=``
    ``{"title": "Đồng ý", "seq": 12}``: the customer taps the button or quick reply titled
    ``title`` in the outbox entry ``seq`` delivered to them (by default, their latest entry that
    has one). The tap counts as an interaction. A ``json_plugin_url`` button makes the bot call its
    URL, its ``{{placeholders}}`` filled from the customer's attributes and profile, with ``GET``
    as AhaChat does; the call is logged with the JSON API steps' calls and the answer goes to the
    outbox with kind ``json_api`` (see :mod:`..json_api`). A ``show_block`` button or a quick
    reply with a ``block_name`` starts that block. A ``web_url`` or ``phone_number`` button leaves
    the chat: 400. Answers ``{"button", "call", "reply"}`` (``reply`` is the outbox entry the tap
    produced, if any).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from airflow_provider_ahachat.sandbox.json_api import JsonApiStep
from airflow_provider_ahachat.sandbox.outbox import OutboxEntry
from airflow_provider_ahachat.sandbox.routes.answers import json_object, ok
from airflow_provider_ahachat.sandbox.routes.control import CONTROL_PREFIX, Sandbox, control_user
from airflow_provider_ahachat.sandbox.state import SandboxState
from airflow_provider_ahachat.sandbox.world import ApiError, utcnow

#: Seconds the bot waits for a tapped button's URL to answer.
TAP_TIMEOUT = 100.0


def _buttons(entry: OutboxEntry) -> Iterator[Mapping[str, Any]]:
    for message in entry.messages:
        yield from message.get("quick_replies") or ()
        payload = (message.get("attachment") or {}).get("payload") or {}
        yield from payload.get("buttons") or ()
        for element in payload.get("elements") or ():
            yield from element.get("buttons") or ()


#: The tap endpoint, serving the app's state.
router = APIRouter(prefix=CONTROL_PREFIX)


@router.post("/users/{user_id}/tap")
async def tap(
    user_id: str, request: Request, bot_id: str | None = None, sandbox: SandboxState = Sandbox
) -> JSONResponse:
    bot, user = control_user(sandbox, user_id, bot_id)
    body = await json_object(request)
    title, seq = body.get("title"), body.get("seq")
    if not isinstance(title, str) or not title:
        raise ApiError(400, "title: give the title of the button to tap")
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int)):
        raise ApiError(400, "seq: must be the number of an outbox entry")
    entries = [
        e
        for e in reversed(sandbox.outbox)
        if e.bot_id == bot.id and e.messenger_user_id == user_id and (seq is None or e.seq == seq)
    ]
    button = next((b for e in entries for b in _buttons(e) if b.get("title") == title), None)
    if button is None:
        where = f"outbox entry {seq} of user {user_id}" if seq is not None else f"user {user_id}'s outbox"
        raise ApiError(404, f"title: no button or quick reply {title!r} in {where}")
    kind = button.get("type") or ("show_block" if button.get("block_name") else None)
    user.last_interaction_at = utcnow()
    if kind == "json_plugin_url":
        step = JsonApiStep(url=str(button["url"]), method="GET", timeout=TAP_TIMEOUT)
        reply = await sandbox.json_api._call(sandbox.deliver, bot, user, title, step)
        call = sandbox.json_api.calls[-1].to_json()
        return ok({"button": dict(button), "call": call, "reply": reply.to_json() if reply else None})
    if kind == "show_block":
        block = sandbox.block(bot, str(button.get("block_name")), "block_name")
        entry = sandbox.run_block(bot, user, block)
        await sandbox.json_api.run(sandbox.deliver, bot, user, entry.blocks)
        return ok({"button": dict(button), "call": None, "reply": entry.to_json()})
    raise ApiError(400, f"title: the {kind} button {title!r} leaves the chat; there is nothing to tap")
