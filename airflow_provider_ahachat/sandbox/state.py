"""
The sandbox's in-memory AhaChat: the bots (:mod:`.world`, from :mod:`.seed`), the outbox and the
request log (:mod:`.outbox`), the knobs (:mod:`.knobs`) and Messenger's rules (:mod:`.messenger`).

Nothing here knows about HTTP. Every operation either succeeds or raises
:class:`~.world.ApiError` carrying the status and message the API answers with, and a failed
operation changes nothing.
"""

from __future__ import annotations

import math
import random
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any

from airflow_provider_ahachat.models import (
    DynamicMessage,
    MessageTag,
    validate_block_name,
    validate_user_id,
)
from airflow_provider_ahachat.sandbox.json_api import JsonApiSteps
from airflow_provider_ahachat.sandbox.knobs import Fault, SandboxConfig, TokenBucket
from airflow_provider_ahachat.sandbox.outbox import OutboxEntry, OutboxQuery, RequestRecord, render
from airflow_provider_ahachat.sandbox.seed import build_bots, read_seed
from airflow_provider_ahachat.sandbox.world import (
    ApiError,
    Bot,
    SandboxUser,
    checked,
    isoformat,
    phone_key,
    utcnow,
)

#: Entries kept in the outbox and in the request log; the oldest are dropped first.
OUTBOX_LIMIT = 1_000_000
REQUEST_LOG_LIMIT = 10_000

#: How deep ``redirect_to_blocks`` may chain before the sandbox stops following.
MAX_REDIRECT_DEPTH = 10


class SandboxState:
    """
    Everything the sandbox holds. Used from the server's event loop only.

    :param seed: the seed, as :func:`read_seed` returns it (the packaged seed by default).
    :param config: the knobs to start with, and to return to on :meth:`reset`.
    """

    def __init__(self, seed: Mapping[str, Any] | None = None, config: SandboxConfig | None = None) -> None:
        self.seed: dict[str, Any] = dict(seed) if seed is not None else read_seed()
        self.initial_config = config.copy() if config is not None else SandboxConfig()
        self.random = random.Random()
        self.bots: dict[str, Bot] = {}
        self.tokens: dict[str, str] = {}
        self.outbox: deque[OutboxEntry] = deque(maxlen=OUTBOX_LIMIT)
        self.requests: deque[RequestRecord] = deque(maxlen=REQUEST_LOG_LIMIT)
        self.counts: Counter[tuple[str, int]] = Counter()
        self.config = self.initial_config.copy()
        self.bucket: TokenBucket | None = None
        self.outbox_seq = 0
        self.request_seq = 0
        self.started_at = utcnow()
        #: The blocks' JSON API steps and the log of their calls (:mod:`.json_api`).
        self.json_api = JsonApiSteps(keys=lambda: self.config.answer_keys)
        self.reset()

    # -- lifecycle and knobs

    def reset(self) -> None:
        """Back to the seed (times relative to now), the starting knobs, and empty logs."""
        self.bots = build_bots(self.seed)
        self.tokens = {bot.token: bot.id for bot in self.bots.values()}
        self.outbox.clear()
        self.requests.clear()
        self.counts.clear()
        self.outbox_seq = 0
        self.request_seq = 0
        self.started_at = utcnow()
        self.bucket = None
        self.json_api.clear()
        self.set_config(self.initial_config.copy())

    def set_config(self, config: SandboxConfig) -> None:
        """Apply new knobs; a changed rate limit starts with a full bucket."""
        if self.bucket is None or config.rate_limit != self.config.rate_limit:
            self.bucket = TokenBucket(config.rate_limit) if config.rate_limit > 0 else None
        self.config = config

    @property
    def default_bot(self) -> Bot:
        """The first bot of the seed."""
        return next(iter(self.bots.values()))

    def rate_limited(self) -> int:
        """0 if the request may go on, else the ``Retry-After`` seconds of a 429."""
        if self.bucket is None:
            return 0
        wait = self.bucket.take()
        if wait <= 0:
            return 0
        return max(self.config.retry_after, math.ceil(wait))

    def next_fault(self) -> Fault | None:
        """The injected error for this request, if any: first the ``fail_next`` queue, then chance."""
        config = self.config
        if config.fail_next:
            return config.fail_next.pop(0)
        if config.error_rate > 0 and self.random.random() < config.error_rate:
            status = config.error_status
            return Fault(self.random.choice(status) if isinstance(status, list) else status)
        return None

    def fault_delivers(self, fault: Fault) -> bool:
        """Whether the request answered with ``fault`` is processed first."""
        return self.config.deliver_before_fail if fault.deliver is None else fault.deliver

    # -- request log and stats

    def log_request(self, method: str, path: str, query: bytes, body: bytes) -> RequestRecord:
        """Record an API request as it arrives."""
        self.request_seq += 1
        record = RequestRecord(self.request_seq, utcnow(), method, path, query, body)
        self.requests.append(record)
        return record

    def count(self, route: str, status: int) -> None:
        """Count an answered API request."""
        self.counts[(route, status)] += 1

    def stats(self) -> dict[str, Any]:
        """Answered API requests: in total, by status, and by route and status."""
        by_status: Counter[str] = Counter()
        by_route: dict[str, dict[str, int]] = {}
        for (route, status), number in sorted(self.counts.items()):
            by_status[str(status)] += number
            by_route.setdefault(route, {})[str(status)] = number
        return {
            "since": isoformat(self.started_at),
            "total": sum(by_status.values()),
            "by_status": dict(sorted(by_status.items())),
            "by_route": by_route,
            "outbox": len(self.outbox),
        }

    # -- lookups

    def bot(self, bot_id: str, token: str | None) -> Bot:
        """
        The bot a request may act on.

        401 if the token is missing or is no bot's token; 404 if there is no such bot; 403 if the
        token is another bot's.
        """
        if not token:
            raise ApiError(401, "missing ahachat_token")
        owner = self.tokens.get(token)
        if owner is None:
            raise ApiError(401, "invalid ahachat_token")
        bot = self.bots.get(bot_id)
        if bot is None:
            raise ApiError(404, f"bot {bot_id} not found")
        if owner != bot_id:
            raise ApiError(403, f"the token does not belong to bot {bot_id}")
        return bot

    def user(self, bot: Bot, user_id: str) -> SandboxUser:
        """The user of ``bot`` with this ID; 400 if not an ID, 404 if unknown."""
        key = checked(validate_user_id, user_id)
        user = bot.users.get(key)
        if user is None:
            raise ApiError(404, f"user {key} not found in bot {bot.id}")
        return user

    def user_by_phone(self, bot: Bot, phone: str | None) -> SandboxUser:
        """The user of ``bot`` with this phone number; 400 if missing or not a number, 404 if unknown."""
        if phone is None or phone == "":
            raise ApiError(400, "phone: required")
        key = checked(phone_key, phone)
        user_id = bot.phones.get(key)
        if user_id is None:
            raise ApiError(404, f"no user with phone {phone} in bot {bot.id}")
        return bot.users[user_id]

    def block(self, bot: Bot, name: Any, field: str = "ahachat_block_name") -> str:
        """The name of an existing block of ``bot``; 400 if missing, 404 if unknown."""
        block_name = checked(validate_block_name, name, field)
        if block_name not in bot.blocks:
            raise ApiError(404, f"block {block_name!r} not found in bot {bot.id}")
        return block_name

    # -- actions

    def messenger_check(self, user: SandboxUser, tag: MessageTag | None) -> None:
        """Messenger's rules: raise its refusal of a message with ``tag`` to ``user`` now, if any."""
        refused = user.refusal(tag, self.config.messenger_rules)
        if refused is not None:
            raise ApiError.refused(refused)

    def broadcast(
        self,
        bot: Bot,
        user: SandboxUser,
        *,
        tag: MessageTag | None,
        block_name: str,
        attributes: Mapping[str, Any],
    ) -> OutboxEntry:
        """
        Save ``attributes`` on the user, then run the block; Messenger's refusal (a retired tag, the
        user unavailable or outside the window for ``tag``) changes nothing.
        """
        self.messenger_check(user, tag)
        user.attributes.update(attributes)
        entry = self.deliver(bot, user, "broadcast", [], [block_name], dict(attributes))
        entry.block_name = block_name
        entry.message_tag = tag.value if tag is not None else None
        return entry

    def send_message(self, bot: Bot, user: SandboxUser, message: DynamicMessage) -> OutboxEntry:
        """Send a text or dynamic message (never tagged); Messenger refuses it outside the 24-hour window."""
        redirects = list(message.redirect_to_blocks or ())
        for name in redirects:
            self.block(bot, name, "redirect_to_blocks")
        self.messenger_check(user, None)
        is_text = (
            not message.set_attributes and not redirects and all(set(m) == {"text"} for m in message.messages)
        )
        saved = dict(message.set_attributes or {})
        user.attributes.update(saved)
        messages = [dict(m) for m in message.messages]
        return self.deliver(bot, user, "text" if is_text else "dynamic", messages, redirects, saved)

    def run_block(self, bot: Bot, user: SandboxUser, block_name: str) -> OutboxEntry:
        """The user tapped a button that starts ``block_name``: it runs, and counts as an interaction."""
        user.last_interaction_at = utcnow()
        entry = self.deliver(bot, user, "block", [], [block_name], {})
        entry.block_name = block_name
        return entry

    def deliver(
        self,
        bot: Bot,
        user: SandboxUser,
        kind: str,
        messages: list[dict[str, Any]],
        blocks: list[str],
        attributes: dict[str, Any],
    ) -> OutboxEntry:
        unresolved: list[str] = []
        ran: list[str] = []
        pending = [(name, 0) for name in blocks]
        while pending:
            name, depth = pending.pop(0)
            if depth > MAX_REDIRECT_DEPTH:
                continue
            ran.append(name)
            block = bot.blocks[name]
            messages.extend(render(block.get("messages") or [], user.context(), unresolved))
            if block.get("set_attributes"):
                values = render(block["set_attributes"], user.context(), unresolved)
                user.attributes.update(values)
                attributes.update(values)
            pending[:0] = [(target, depth + 1) for target in block.get("redirect_to_blocks") or ()]
        self.outbox_seq += 1
        entry = OutboxEntry(
            seq=self.outbox_seq,
            time=utcnow(),
            bot_id=bot.id,
            messenger_user_id=user.messenger_user_id,
            kind=kind,
            messages=messages,
            blocks=ran,
            attributes=attributes,
            unresolved=unresolved,
        )
        self.outbox.append(entry)
        return entry

    def outbox_counts(self, *, bot_id: str | None = None) -> dict[str, int]:
        """How many outbox entries each user has, of one bot if given: to check nobody got two."""
        entries = OutboxQuery(bot_id=bot_id).select(self.outbox)
        return dict(Counter(entry.messenger_user_id for entry in entries))

    def outbox_json(self, query: OutboxQuery) -> list[dict[str, Any]]:
        """The outbox entries ``query`` asks for, oldest first, as ``GET /_sandbox/outbox`` answers."""
        return [entry.to_json() for entry in query.select(self.outbox)]
