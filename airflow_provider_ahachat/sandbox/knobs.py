"""
The sandbox's knobs, turned through ``POST /_sandbox/config``: latency, rate limit, injected errors
and Messenger's rules; and the token bucket behind the rate limit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.held.answer import ANSWER_KEYS, answer_keys
from airflow_provider_ahachat.sandbox.messenger import (
    MESSENGER_RULES,
    RULES_2026,
)
from airflow_provider_ahachat.sandbox.world import ApiError


@dataclass(slots=True)
class Fault:
    """
    One injected error answer.

    :param status: the HTTP status to answer with.
    :param deliver: whether the request is processed before the error is answered (``None``: as
        the config's ``deliver_before_fail`` says).
    """

    status: int
    deliver: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The fault as the config shows it."""
        return {"status": self.status, "deliver": self.deliver}


@dataclass(slots=True)
class SandboxConfig:
    """
    The knobs of the sandbox, changed at run time through ``POST /_sandbox/config``.

    :param latency_ms: added to every API request, without blocking the server.
    :param rate_limit: API requests per second before 429 answers (a token bucket holding one
        second's worth); 0 turns the limit off.
    :param retry_after: the least ``Retry-After`` of a 429, in whole seconds (0 lets tests go fast).
    :param error_rate: the fraction of API requests answered with ``error_status`` at random.
    :param error_status: the status of random injected errors, or a list to pick from at random.
    :param deliver_before_fail: whether a request answered with an injected error was processed
        first (the message was delivered, the tag added) or not at all.
    :param fail_next: the next API requests to fail, in order, one status each.
    :param messenger_rules: Messenger's rules the sandbox enforces: ``"2026"``, Meta's as of
        December 2026, or ``"2025"``, those before 27 April 2026 (see :mod:`.messenger`).
    :param answer_keys: the keys of a JSON API answer that AhaChat reads, by canonical name
        (``messages``, ``set_attributes``, ``redirect_to_blocks``); set the ones that differ, as a
        connection's extra ``answer_keys`` does, to play an AhaChat that reads others.
    """

    latency_ms: float = 0.0
    rate_limit: float = 0.0
    retry_after: int = 1
    error_rate: float = 0.0
    error_status: int | list[int] = 503
    deliver_before_fail: bool = False
    fail_next: list[Fault] = field(default_factory=list)
    messenger_rules: str = RULES_2026
    answer_keys: Mapping[str, str] = field(default_factory=lambda: ANSWER_KEYS)

    def to_json(self) -> dict[str, Any]:
        """The knobs as ``GET /_sandbox/config`` answers with them."""
        knobs = {knob.name: getattr(self, knob.name) for knob in fields(self)}
        extra = {
            "fail_next": [fault.to_json() for fault in self.fail_next],
            "answer_keys": dict(self.answer_keys),
        }
        return knobs | extra

    def copy(self) -> SandboxConfig:
        """An independent copy."""
        return replace(self, fail_next=[replace(fault) for fault in self.fail_next])

    def updated(self, changes: Any) -> SandboxConfig:
        """A copy with ``changes`` applied; raise a 400 :class:`ApiError` naming a bad knob."""
        if not isinstance(changes, Mapping):
            raise ApiError(400, "body: must be a JSON object of knobs")
        new = self.copy()
        for name, value in changes.items():
            read = _KNOBS.get(name)
            if read is None:
                knobs = ", ".join(self.to_json())
                raise ApiError(400, f"{name}: unknown knob; expected one of {knobs}")
            setattr(new, name, read(value, name))
        return new


def _error_status(value: Any, name: str) -> int | list[int]:
    if isinstance(value, list) and value:
        return [_status(item, f"{name}[{i}]") for i, item in enumerate(value)]
    return _status(value, name)


def _true_or_false(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiError(400, f"{name}: must be true or false, got {value!r}")
    return value


def _messenger_rules(value: Any, name: str) -> str:
    if value not in MESSENGER_RULES:
        rules = " or ".join(f'"{rule}"' for rule in MESSENGER_RULES)
        raise ApiError(400, f"{name}: must be {rules}, got {value!r}")
    return str(value)


#: How each knob of :class:`SandboxConfig` is read from the control API, checked.
_KNOBS: dict[str, Callable[[Any, str], Any]] = {
    "latency_ms": lambda value, name: number(value, name, 0, 600_000),
    "rate_limit": lambda value, name: number(value, name, 0, 1_000_000),
    "retry_after": lambda value, name: int(number(value, name, 0, 86_400, integer=True)),
    "error_rate": lambda value, name: number(value, name, 0, 1),
    "error_status": _error_status,
    "deliver_before_fail": _true_or_false,
    "fail_next": lambda value, name: _faults(value),
    "messenger_rules": _messenger_rules,
    "answer_keys": lambda value, name: _answer_keys(value, name),
}


def _answer_keys(value: Any, name: str) -> Mapping[str, str]:
    try:
        return answer_keys(value, name) if value not in (None, {}) else ANSWER_KEYS
    except AhaChatValidationError as err:
        raise ApiError(400, "; ".join(err.problems)) from None


def number(value: Any, name: str, least: float, most: float, *, integer: bool = False) -> float:
    valid = not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
    if integer and valid:
        valid = float(value).is_integer()
    if not valid or not least <= value <= most:
        kind = "an integer" if integer else "a number"
        raise ApiError(400, f"{name}: must be {kind} from {least:g} to {most:g}, got {value!r}")
    return float(value)


def _status(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ApiError(400, f"{name}: must be an HTTP error status from 400 to 599, got {value!r}")
    return value


def _faults(value: Any) -> list[Fault]:
    if not isinstance(value, list):
        raise ApiError(400, f"fail_next: must be a list of statuses, got {value!r}")
    faults: list[Fault] = []
    for index, item in enumerate(value):
        where = f"fail_next[{index}]"
        if isinstance(item, Mapping):
            unknown = set(item) - {"status", "deliver"}
            if unknown:
                raise ApiError(400, f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
            deliver = item.get("deliver")
            if deliver is not None and not isinstance(deliver, bool):
                raise ApiError(400, f"{where}.deliver: must be true, false or null")
            faults.append(Fault(_status(item.get("status"), f"{where}.status"), deliver))
        else:
            faults.append(Fault(_status(item, where)))
    return faults


class TokenBucket:
    """
    A global rate limit: ``rate`` requests per second, with a burst of one second's worth.

    :param rate: requests per second; more than 0.
    """

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.stamp = time.monotonic()

    def take(self) -> float:
        """Take a token; return 0 if one was free, else the seconds until one will be."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
