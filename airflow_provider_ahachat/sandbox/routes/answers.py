"""
How the sandbox answers: the success envelope, the JSON body readers, and every error handler.

Every answer is ``{"success": true, "data": ...}`` or ``{"success": false, "message": "..."}``;
answers to invalid input also carry ``problems``, one line per problem, each naming its field, and
Messenger's refusals carry Meta's error object in ``error`` (:mod:`..messenger`). The
Broadcast API, a copy of Chatfuel's Broadcasting API, answers in Chatfuel's shape instead:
``{"success": true|false, "result": "..."}``, the reason of a refusal in ``result``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_ahachat.sandbox.world import ApiError


def ok(data: Any, status: int = 200) -> JSONResponse:
    """A success answer."""
    return JSONResponse({"success": True, "data": data}, status_code=status)


def broadcast_ok(result: str) -> JSONResponse:
    """A Broadcast API success, in Chatfuel's shape."""
    return JSONResponse({"success": True, "result": result})


def broadcast_refused(err: ApiError) -> JSONResponse:
    """A Broadcast API refusal, in Chatfuel's shape: the reason in ``result``."""
    body: dict[str, Any] = {"success": False, "result": err.message}
    if err.problems:
        body["problems"] = err.problems
    if err.meta is not None:
        body["error"] = err.meta
    return JSONResponse(body, status_code=err.status, headers=err.headers)


async def json_body(request: Request) -> Any:
    """The request's JSON body; 400 if empty or not JSON."""
    raw = await request.body()
    if not raw.strip():
        raise ApiError(400, "body: must be JSON, got an empty body")
    try:
        return json.loads(raw)
    except ValueError as err:
        raise ApiError(400, f"body: not valid JSON ({err})") from None


async def json_object(request: Request) -> Mapping[str, Any]:
    """The request's JSON body, which must be an object; 400 otherwise."""
    body = await json_body(request)
    if not isinstance(body, Mapping):
        raise ApiError(400, f"body: must be a JSON object, got {type(body).__name__}")
    return body


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.to_json(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        message = f"no such endpoint: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        message = f"method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    return JSONResponse({"success": False, "message": message}, status_code=exc.status_code)


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = [
        f"{'.'.join(str(part) for part in error.get('loc', ()))}: {error.get('msg')}"
        for error in exc.errors()
    ]
    body = {"success": False, "message": "; ".join(problems), "problems": problems}
    return JSONResponse(body, status_code=400)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    message = f"internal error of the sandbox ({type(exc).__name__})"
    return JSONResponse({"success": False, "message": message}, status_code=500)


def add_error_handlers(app: FastAPI) -> None:
    """
    Answer every error in the sandbox's shape.

    :class:`~airflow_provider_ahachat.sandbox.world.ApiError` gives its own status and message; an
    unknown path is 404 and a wrong method 405, each naming the request; a query parameter of the
    wrong type is 400 with ``problems``; anything else is 500 naming only the exception's type.

    :param app: the app to equip.
    """
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(Exception, _unexpected)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid_request)
