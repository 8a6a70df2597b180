"""
The bulk run: one action for many recipients, from ``concurrency`` worker threads.

The calling thread reads the input, admits each row (validated, deduplicated, checked against the
ledger's earlier tries) and queues it; workers send through the client's retry loop under the run's
shared pace, and hand back outcomes, which the calling thread records. Where each concern lives:
recipients and files in ``recipients.py``, the journal and the claim protocol in ``ledger.py``, the
rate limit and the 429 pause in ``pacing.py``, counts, progress lines and the summary in
``report.py``, the per-recipient state in ``index.py``. No Airflow import here.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from airflow_provider_ahachat.actions import BoundAction
from airflow_provider_ahachat.client import AhaChatClient
from airflow_provider_ahachat.exceptions import (
    AhaChatAuthError,
    AhaChatError,
    AhaChatLedgerBusyError,
    AhaChatMessageTagRefusedError,
    AhaChatOutsideWindowError,
    AhaChatRateLimitError,
    AhaChatValidationError,
)
from airflow_provider_ahachat.models import (
    OUTSIDE_WINDOW_BULK_DEFAULT,
    Recipient,
    User,
    attribute_name_problem,
    validate_outside_window,
)
from airflow_provider_ahachat.request import ApiRequest

from .columns import Columns
from .index import RunIndex
from .ledger import Claims, Ledger
from .pacing import PaceUnavailable, RateLimiter, RetryCounter, Stopped, WorkerPace
from .recipients import Row, describe_raw, parse_row, printable, unencodable
from .report import (
    DELIVERED,
    DUPLICATE,
    FAILED,
    HELD,
    INVALID,
    NOT_SENT,
    OUTSIDE_WINDOW,
    SETTLED,
    UNKNOWN,
    WOULD_SEND,
    Tally,
)

if TYPE_CHECKING:
    from airflow_provider_ahachat.held.delivery import Holder

log = logging.getLogger(__name__)

_STOP = object()
_STOPPED_REASON = "the run stopped before this row"


@dataclass
class _Job:
    row: Row
    request: ApiRequest | None  # None: look the phone up first
    confirm: bool = False  # an earlier try's outcome is unknown: look for its delivery mark first


@dataclass
class _Outcome:
    row: Row
    outcome: str
    reason: str | None = None
    fatal: AhaChatError | None = None
    earlier: bool = False  # the outcome is an earlier try's, found out now
    checked: str | None = None  # for an earlier unknown outcome: what its delivery mark showed


class BulkRunner:
    """
    Run one action for many recipients.

    :param client: the API client (its pooled connections are shared by the workers).
    :param action: what to do for each recipient: an action of the table with its shared arguments
        validated (``client.bind("add_tags", tags=[...])``).
    :param ledger: the journal for exactly-once across tries; None to keep none (each try then
        starts from scratch).
    :param concurrency: requests in flight at once.
    :param rate_limit: requests per second for the whole run; None or 0 for no limit.
    :param max_failures: the most failed, invalid, unknown or unsent rows allowed; more fail the
        run once every row has had its turn.
    :param max_failure_ratio: the largest share of such rows allowed. Either limit applies only
        when given; with neither, any such row fails the run (``max_failure_ratio=1`` never does).
    :param resend_unknown: send again to recipients whose earlier outcome is unknown, at the risk of
        a duplicate. Actions that message nobody (tags, attributes) are always safe to resend.
    :param dry_run: validate and render every request, send nothing, write nothing to the journal.
    :param progress_interval: seconds between progress lines in the log.
    :param logger: where progress goes.
    :param sample_size: how many requests a dry run shows in its summary.
    :param limiter: the pace, when it is shared beyond this run (a
        :class:`~airflow_provider_ahachat.bulk.pacing.RedisRateLimiter`); by default this run's own,
        at ``rate_limit``.
    :param columns: which columns of each row name the recipient and are attributes, what makes
        a message distinct (``dedupe_on``) and what a NULL does; default: files' and lists' own.
    :param resolve_phones: look each recipient given by phone up first (one request per phone) and
        address them by their user ID, so that one customer given once by ID and once by phone is
        recognised as one (a duplicate) and keyed by their user ID in the ledger.
    :param delivery_mark: the name of an attribute that every message of the run also sets on its
        customer, to a value unique to the ledger and the recipient (:meth:`Ledger.mark`). A later
        try looks each recipient whose outcome is unknown up (one request each): if the attribute
        holds the value, the message reached AhaChat and is counted delivered; if not, it never did
        and is sent now. Unknown outcomes then end neither lost nor doubled. Needs a ledger and an
        action that messages (``broadcast_block``, ``send_text``, ``send_message``).
    :param outside_window: what a customer Messenger will not let the bot message now does:
        ``"skip"`` (the default) records them as ``outside_window``, named in the report and the
        summary, not counted against the failure limits; ``"fail"`` counts them. Either way the
        ledger keeps them, so that a later try does not ask them again. A refused message tag
        stops the run: every other message would be refused alike. ``"hold"`` holds the message
        for each of them (``holder``), recorded as ``held``; one that cannot be held (the store is
        unreachable, a phone without a customer) is ``failed``, and a later try asks again.
    :param holder: where ``outside_window="hold"`` holds messages; needed for it, but in a dry run.
    """

    def __init__(
        self,
        client: AhaChatClient,
        action: BoundAction,
        *,
        ledger: Ledger | None = None,
        concurrency: int = 8,
        rate_limit: float | None = None,
        max_failures: int | None = None,
        max_failure_ratio: float | None = None,
        resend_unknown: bool = False,
        dry_run: bool = False,
        progress_interval: float = 5.0,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
        sample_size: int = 10,
        limiter: RateLimiter | None = None,
        columns: Columns | None = None,
        resolve_phones: bool = False,
        delivery_mark: str | None = None,
        outside_window: str = OUTSIDE_WINDOW_BULK_DEFAULT,
        holder: Holder | None = None,
    ) -> None:
        problems = []
        try:
            validate_outside_window(outside_window)
        except AhaChatValidationError as err:
            problems += err.problems
        if outside_window == "hold" and holder is None and not dry_run:
            problems.append("outside_window: 'hold' needs the store of held messages (holder)")
        if delivery_mark is not None:
            problems += _mark_problems(delivery_mark, action, ledger)
        if not isinstance(concurrency, int) or isinstance(concurrency, bool) or not 1 <= concurrency <= 256:
            problems.append(f"concurrency: must be a whole number from 1 to 256, got {concurrency!r}")
        if rate_limit is not None and (not isinstance(rate_limit, int | float) or rate_limit < 0):
            problems.append(f"rate_limit: must be requests per second, 0 or more, got {rate_limit!r}")
        if max_failures is not None and (not isinstance(max_failures, int) or max_failures < 0):
            problems.append(f"max_failures: must be a whole number, 0 or more, got {max_failures!r}")
        if max_failure_ratio is not None and (
            not isinstance(max_failure_ratio, int | float) or not 0 <= max_failure_ratio <= 1
        ):
            problems.append(f"max_failure_ratio: must be from 0 to 1, got {max_failure_ratio!r}")
        if progress_interval <= 0:
            problems.append(f"progress_interval: must be above 0 seconds, got {progress_interval!r}")
        if problems:
            raise AhaChatValidationError(problems)
        self.client = client
        self.action = action
        self.ledger = ledger
        self.concurrency = concurrency
        self.limiter = limiter or RateLimiter(rate_limit)
        self.max_failures = 0 if max_failures is None and max_failure_ratio is None else max_failures
        self.max_failure_ratio = max_failure_ratio
        self.resend_unknown = resend_unknown or not action.action.sends_message
        self.dry_run = dry_run
        self.progress_interval = progress_interval
        self.log = logger or log
        self.sample_size = sample_size
        self.columns = columns or Columns()
        self.resolve_phones = resolve_phones
        self.delivery_mark = delivery_mark
        self.outside_window = outside_window
        self.holder = holder if outside_window == "hold" else None
        self.claims = Claims(ledger, dry_run=dry_run)
        self.retries = RetryCounter()
        self.stop_event = threading.Event()
        self._stop_requested = False
        self._closing = threading.Event()
        self._results: queue.Queue[_Outcome] = queue.Queue()
        self._jobs: queue.Queue[Any] = queue.Queue(maxsize=concurrency * 2)
        self._fatal: AhaChatError | None = None
        self._pace_failure: PaceUnavailable | None = None
        self._lost: AhaChatError | None = None

    def _ledger_lost(self, why: str) -> None:
        """The ledger's lease went to another run: send nothing more."""
        self._lost = AhaChatLedgerBusyError(f"The delivery ledger was lost while sending ({why}): stopped")
        self.stop_event.set()

    def stop(self) -> None:
        """Stop dispatching: requests in flight finish and are recorded, the rest are ``not_sent``."""
        self._stop_requested = True
        self.stop_event.set()

    # -- the producer: the calling thread

    def run(self, recipients: Iterable[Any], total: int | None = None) -> dict[str, Any]:
        """
        Act for every recipient; return the summary.

        :param recipients: the input items; see :func:`~airflow_provider_ahachat.bulk.recipients.parse_row`.
        :param total: how many there are, when known, for progress and the ETA.
        :raises AhaChatBulkError: when the failures exceed what is allowed, or on a fatal error
            (the token was refused); the summary is on the error.
        """
        tally = Tally(
            self.action.name,
            dry_run=self.dry_run,
            total=total,
            logger=self.log,
            progress_interval=self.progress_interval,
            sample_size=self.sample_size,
            dedupe_on=self.columns.dedupe_on,
            outside_window_fails=self.outside_window == "fail",
        )
        index = RunIndex()
        workers = [
            threading.Thread(target=self._work, name=f"ahachat-bulk-{i}", daemon=True)
            for i in range(0 if self.dry_run else self.concurrency)
        ]
        try:
            if self.ledger is not None:
                if not self.dry_run:
                    self.ledger.hold(on_lost=self._ledger_lost)  # one run at a time, or none
                index.load(self.ledger.replay())
            for worker in workers:
                worker.start()
            self._produce(index, tally, recipients)
            self._wind_down(index, tally, workers)
            summary = self._summary(index, tally)
        finally:
            # On an error (a file that cannot be read, a database cursor that broke), the rows
            # still queued are not sent, and the requests in flight are waited for so that their
            # outcomes reach the journal before it is closed.
            self.stop_event.set()
            self._closing.set()
            for worker in workers:
                if worker.is_alive():
                    worker.join(timeout=sum(self.client.timeout) + 1)
            if self.ledger is not None:
                self.claims.flush()
                self.ledger.close()
            index.close()
        tally.judge(
            summary,
            fatal=self._fatal or self._lost,
            stopped=self._stop_requested,
            max_failures=self.max_failures,
            max_failure_ratio=self.max_failure_ratio,
        )
        return summary

    def _produce(self, index: RunIndex, tally: Tally, recipients: Iterable[Any]) -> None:
        """Read every row; admit it and queue it in batches, or, once stopping, record it not sent."""
        batch: list[_Job] = []
        for number, raw in enumerate(recipients, start=1):
            tally.rows = number
            self._drain(index, tally)
            if self._should_stop():
                who = describe_raw(raw, self.columns)
                index.add(number, None, who, NOT_SENT, _STOPPED_REASON)
                tally.add(number, who, NOT_SENT, _STOPPED_REASON)
                continue
            job = self._admit(index, tally, number, raw)
            if job is not None:
                batch.append(job)
                if len(batch) >= self.concurrency:
                    self._queue(index, tally, batch)
                    batch = []
        if batch and self._should_stop():
            for job in batch:
                self._settle(index, tally, _Outcome(job.row, NOT_SENT, _STOPPED_REASON))
        elif batch:
            self._queue(index, tally, batch)

    def _wind_down(self, index: RunIndex, tally: Tally, workers: list[threading.Thread]) -> None:
        """Stop the workers once they have sent what is queued; record every outcome."""
        for _ in workers:
            self._put(index, tally, _STOP)
        while any(worker.is_alive() for worker in workers):
            self._drain(index, tally, wait=0.1)
        self._drain(index, tally)
        for number in index.unsettled():  # cannot happen unless a worker died
            index.settle(number, UNKNOWN, "no outcome was recorded")
            tally.add(number, "?", UNKNOWN, "no outcome was recorded")
        if self._pace_failure is not None and self._fatal is None:
            self._fatal = self._pace_failure

    def _summary(self, index: RunIndex, tally: Tally) -> dict[str, Any]:
        """The last progress line, the report beside the ledger, and the summary."""
        self.claims.flush()
        tally.progress(final=True)
        report = None
        if self.ledger is not None:
            name = "dry-run.jsonl" if self.dry_run else "report.jsonl"
            report = self.ledger.write(name, index.report_lines())
        summary = tally.summary(
            report=report,
            ledger=self.ledger.location() if self.ledger is not None else None,
            pauses=self.limiter.pauses,
            retries=self.retries.counts,
        )
        tally.final_line(summary)
        return summary

    def _should_stop(self) -> bool:
        return self.stop_event.is_set() or self._fatal is not None

    def _admit(self, index: RunIndex, tally: Tally, number: int, raw: Any) -> _Job | None:
        """Validate, deduplicate and check the ledger for one row; the job to send, if any."""

        def final(key: str | None, who: str, outcome: str, reason: str | None, earlier: bool = False) -> None:
            index.add(number, key, who, outcome, reason, earlier=earlier)
            tally.add(number, who, outcome, reason, earlier=earlier)

        field = unencodable(raw)  # checked before anything is claimed: such a row can never be sent
        if field is not None:
            why = (
                f"row {number}: {field}: holds text that is not valid Unicode "
                "(a lone surrogate, or bytes that are not UTF-8)"
            )
            final(None, printable(describe_raw(raw)), INVALID, why)
            return None
        try:
            parsed = self._parse(number, raw)
        except AhaChatValidationError as err:
            final(None, describe_raw(raw, self.columns), INVALID, "; ".join(err.problems))
            return None
        if isinstance(parsed, _Outcome):  # the phone could not be resolved
            final(parsed.row.key, parsed.row.recipient.describe(), parsed.outcome, parsed.reason)
            return None
        row, request = parsed
        who = row.recipient.describe()
        if index.seen(row.key):
            final(row.key, who, DUPLICATE, tally.repeat_reason)
            return None
        tally.nulls.update(row.nulls)
        earlier = index.earlier(row.key)
        settled = self._settled_before(earlier)
        if settled is not None:
            final(row.key, who, *settled, earlier=True)
            return None
        if self.dry_run:
            if request is not None:
                tally.sample(row.number, request.preview())
            final(row.key, who, WOULD_SEND, None)
            return None
        index.add(number, row.key, who, None)
        # Only with a delivery mark does an earlier unknown outcome get this far (see above).
        confirm = earlier is not None and earlier[0] == UNKNOWN and not self.resend_unknown
        return _Job(row, request, confirm=confirm)

    def _parse(self, number: int, raw: Any) -> tuple[Row, ApiRequest | None] | _Outcome:
        """
        The row, validated, and its request (None when a phone must be looked up first); or, with
        ``resolve_phones``, the outcome of a phone that could not be resolved.

        :raises AhaChatValidationError: for a row that can never be sent.
        """
        row = parse_row(
            number,
            raw,
            takes_attributes=self.action.action.takes_attributes,
            columns=self.columns,
            country_code=self.client.default_country_code,
        )
        if self.resolve_phones and row.recipient.user_id is None and not self.dry_run:
            resolved = self._resolve(row)
            if isinstance(resolved, _Outcome):
                return resolved
            row = resolved
        needs_lookup = row.recipient.user_id is None and not self.action.action.by_phone
        return row, None if needs_lookup else self._request(row.recipient, row)

    def _settled_before(self, earlier: tuple[str, str | None] | None) -> tuple[str, str | None] | None:
        """The outcome an earlier try settled for good (the recipient is not asked again), if any."""
        if earlier is None:
            return None
        before, reason = earlier
        if before in SETTLED:  # reached, refused by Messenger, or held: never asked again
            return before, reason
        if before == UNKNOWN and not self.resend_unknown and not self.delivery_mark:
            return UNKNOWN, "an earlier try's outcome is unknown; not resent (resend_unknown=True resends)"
        return None

    def _resolve(self, row: Row) -> Row | _Outcome:
        """With ``resolve_phones``: the row addressed by the user ID AhaChat has for its phone."""
        try:
            user, error = self._look_up(row.recipient)
        except Stopped:
            return _Outcome(row, NOT_SENT, _STOPPED_REASON)
        if error is None:
            return replace(row, recipient=Recipient(user_id=user.messenger_user_id))
        outcome = self._failure(row, error, sent=False)
        if outcome.fatal is not None and self._fatal is None:
            self._fatal = outcome.fatal
        return outcome

    def _request(self, recipient: Recipient, row: Row) -> ApiRequest:
        mark = None
        if self.delivery_mark is not None and self.ledger is not None:
            if self.delivery_mark in row.attributes:
                raise AhaChatValidationError(
                    f"row {row.number}: {self.delivery_mark}: is the run's delivery_mark attribute, "
                    "which the run sets itself; rename the column"
                )
            mark = {self.delivery_mark: self.ledger.mark(row.key)}
        try:
            return self.action.request(
                self.client.bot_id, recipient, row.attributes, endpoints=self.client.endpoints, mark=mark
            )
        except AhaChatValidationError as err:
            problems = [f"row {row.number}: {problem}" for problem in err.problems]
            raise AhaChatValidationError(problems) from None

    def _queue(self, index: RunIndex, tally: Tally, jobs: list[_Job]) -> None:
        """Hand ``jobs`` to the workers (each recipient is claimed when their request is about to leave)."""
        self.claims.queued([job.row.key for job in jobs])
        for job in jobs:
            self._put(index, tally, job)

    def _put(self, index: RunIndex, tally: Tally, item: Any) -> None:
        while True:
            try:
                self._jobs.put(item, timeout=0.05)
                return
            except queue.Full:
                self._drain(index, tally)

    def _drain(self, index: RunIndex, tally: Tally, wait: float = 0.0) -> None:
        """Record the workers' outcomes; log progress when it is time."""
        try:
            first = self._results.get(timeout=wait) if wait else self._results.get_nowait()
        except queue.Empty:
            first = None
        while first is not None:
            self._settle(index, tally, first)
            try:
                first = self._results.get_nowait()
            except queue.Empty:
                first = None
        if tally.progress_due():
            self.claims.flush()
            tally.progress()

    def _settle(self, index: RunIndex, tally: Tally, result: _Outcome) -> None:
        row = result.row
        index.settle(row.number, result.outcome, result.reason, earlier=result.earlier)
        tally.add(row.number, row.recipient.describe(), result.outcome, result.reason, earlier=result.earlier)
        if result.checked is not None:
            tally.checked[result.checked] += 1
        if result.fatal is not None and self._fatal is None:
            self._fatal = result.fatal
            self.log.error("AhaChat %s: stopping: %s", self.action.name, result.fatal)

    # -- the workers

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=0.2)
            except queue.Empty:
                if self._closing.is_set():
                    return
                continue
            if job is _STOP:
                return
            if self.stop_event.is_set() or self._fatal is not None:
                self._results.put(_Outcome(job.row, NOT_SENT, _STOPPED_REASON))
                continue  # never claimed by this worker: nothing to write
            try:
                result = self._deliver(job)
            except Stopped:
                result = _Outcome(job.row, NOT_SENT, _STOPPED_REASON)
            except Exception as exc:  # pragma: no cover - a bug; record rather than lose the row
                result = _Outcome(job.row, UNKNOWN, f"internal error: {type(exc).__name__}")
            self.claims.settled(job.row.key, result.outcome, result.reason)  # at once: a kill loses nothing
            self._results.put(result)

    def _deliver(self, job: _Job) -> _Outcome:
        if not job.confirm:
            return self._send_row(job)
        found = self._confirm(job.row)
        if found is not None:
            return found
        return replace(self._send_row(job), checked="not_arrived")

    def _send_row(self, job: _Job) -> _Outcome:
        request = job.request
        if request is None:  # a phone, for an action that needs the user ID: look it up first
            user, error = self._look_up(job.row.recipient)
            if error is not None:
                return self._failure(job.row, error, sent=False)
            try:
                request = self._request(Recipient(user_id=user.messenger_user_id), job.row)
            except AhaChatError as err:
                return self._failure(job.row, err, sent=False)
        _, error = self._send(request, claim=job.row.key)
        if error is None:
            return _Outcome(job.row, DELIVERED)
        return self._failure(job.row, error, sent=True)

    def _confirm(self, row: Row) -> _Outcome | None:
        """
        For a recipient whose earlier outcome is unknown: their outcome, from whether the earlier
        message's delivery mark is on them; None when it is not (the message never arrived: send it).
        """
        assert self.delivery_mark is not None and self.ledger is not None
        still = "an earlier try's outcome is unknown, and looking for its delivery mark"
        try:
            user, error = self._look_up(row.recipient)
        except Stopped:  # still unknown, not "not sent": the next try must look again
            return _Outcome(row, UNKNOWN, f"{still} was stopped with the run", earlier=True)
        if error is None:
            found = str(user.attributes.get(self.delivery_mark))
            if found == self.ledger.mark(row.key):
                why = f"an earlier try's message arrived: its {self.delivery_mark} is on the customer"
                return _Outcome(row, DELIVERED, why, earlier=True, checked="arrived")
            if found.startswith(self.ledger.mark_prefix):
                # Another message of this run to the same customer (dedupe_on) set it since:
                # whether this one arrived cannot be told; never resent blind.
                why = (
                    f"an earlier try's outcome is unknown, and the customer's {self.delivery_mark} "
                    "is another message's of this run (dedupe_on): not resent"
                )
                return _Outcome(row, UNKNOWN, why, earlier=True, checked="undecided")
            return None
        if error.status == 404:  # no such customer: nothing can have reached them
            return None
        fatal = self._failure(row, error, sent=False).fatal  # a refused token stops the run
        return _Outcome(row, UNKNOWN, f"{still} failed: {error}", fatal=fatal, earlier=True)

    def _look_up(self, who: Recipient) -> tuple[User, AhaChatError | None]:
        """The customer AhaChat has for ``who`` (by user ID, else by phone), at the run's pace."""
        lookup = self.client.prepare(
            "find_user", user_id=who.user_id, phone=None if who.user_id else who.phone
        )
        return self._send(lookup)

    def _send(self, request: ApiRequest, claim: str | None = None) -> tuple[Any, AhaChatError | None]:
        """
        One request through the client's retry loop, at the run's shared pace.

        ``claim`` is the recipient's key, claimed (where the ledger claims each) right before the
        first attempt leaves.
        """
        pace = WorkerPace(
            self.limiter,
            self.stop_event,
            self.retries,
            before_first=(lambda: self.claims.sending(claim)) if claim is not None else None,
        )
        try:
            return self.client.send(request, pacer=pace), None
        except PaceUnavailable as err:
            # No more requests may go without the shared limit: stop the run, and record this one as
            # if stopped (unsent, or as its last attempt went).
            self._pace_failure = self._pace_failure or err
            self.stop_event.set()
            if pace.last_error is None:
                raise Stopped from None
            return None, pace.last_error
        except Stopped:
            if pace.last_error is None:
                raise
            return None, pace.last_error
        except AhaChatError as err:
            return None, err

    def _failure(self, row: Row, error: AhaChatError, *, sent: bool) -> _Outcome:
        reason = str(error)
        if isinstance(error, AhaChatAuthError):  # refused before processing: nothing was sent
            self.stop_event.set()  # no other worker sends another request with this token
            return _Outcome(row, NOT_SENT, reason, fatal=error)
        longest = self.client.retry.max_retry_time
        if isinstance(error, AhaChatRateLimitError) and (error.retry_after or 0) > longest:
            # AhaChat asks for a longer pause than any retry may wait: every other row would only
            # be refused in turn, so the run stops here rather than hammer it.
            self.stop_event.set()
            stop = AhaChatRateLimitError(
                f"{error.message}; AhaChat asks to wait {error.retry_after:.0f}s (Retry-After), longer than "
                f"max_retry_time ({longest:g}s): stopping the run",
                retry_after=error.retry_after,
                status=error.status,
            )
            return _Outcome(row, FAILED, stop.message, fatal=stop)
        if isinstance(error, AhaChatOutsideWindowError):  # Messenger refused: an outcome, not an error
            return self._outside(row, reason)
        if isinstance(error, AhaChatMessageTagRefusedError):  # every other message would be refused too
            self.stop_event.set()
            return _Outcome(row, FAILED, reason, fatal=error)
        if sent and error.outcome_unknown:
            return _Outcome(row, UNKNOWN, reason)
        if self.stop_event.is_set() and not sent:
            return _Outcome(row, NOT_SENT, reason)
        return _Outcome(row, FAILED, reason)

    def _outside(self, row: Row, reason: str) -> _Outcome:
        """A customer Messenger refused as outside the window: ``outside_window``, or held for them."""
        if self.holder is None:
            return _Outcome(row, OUTSIDE_WINDOW, reason)
        try:
            user_id = row.recipient.user_id
            if user_id is None:  # held for a customer, who calls back with their user ID
                user, error = self._look_up(row.recipient)
                if error is not None:
                    raise error
                user_id = user.messenger_user_id
            self.holder.hold(user_id, row.key, row.attributes)
        except Stopped:
            return _Outcome(row, FAILED, f"{reason}; the run stopped before the message was held")
        except Exception as err:  # the store unreachable, the phone unknown: a later try asks again
            # The first line only: a database error goes on with the statement and its values.
            why = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
            return _Outcome(row, FAILED, f"{reason}; the message could not be held: {why}")
        return _Outcome(row, HELD, f"held for the customer's next call: {reason}")


def _mark_problems(name: Any, action: BoundAction, ledger: Ledger | None) -> list[str]:
    """What is wrong with ``delivery_mark=name`` for this action and ledger."""
    problems = []
    reason = attribute_name_problem(name, by_phone=True)
    if reason:
        problems.append(f"delivery_mark: {reason}")
    if action.action.marks_with is None:
        problems.append(
            f"delivery_mark: the action {action.name!r} messages nobody (only messages carry a delivery mark)"
        )
    if ledger is None:
        problems.append("delivery_mark: needs a ledger (the mark's value is the ledger's)")
    if name in (action.arguments.get("attributes") or {}):
        problems.append(f"delivery_mark: {name!r} is also one of the action's attributes")
    return problems
