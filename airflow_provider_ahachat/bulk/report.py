"""
What a bulk run reports: the outcome of each row, counted in one :class:`Tally`.

The tally keeps the counts by outcome, the first failures, a dry run's sample requests and the
pace; it writes the progress lines, builds the summary (the task's XCom) and judges whether the
run failed. No Airflow import here.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatError

#: The final outcome of one input row.
DELIVERED = "delivered"  # AhaChat accepted the request (now or in an earlier try of the task)
FAILED = "failed"  # AhaChat refused it for this recipient (unknown user, a server error, ...)
#: Messenger will not let the bot message them now: they last wrote more than 24 hours ago, or Meta
#: says they are not available. Asked once; a later try of the task does not ask them again.
OUTSIDE_WINDOW = "outside_window"
#: Refused as outside the window, and held (``outside_window="hold"``): the customer sees the message
#: in the answer to their next call of the bot's JSON API block. Not asked again by a later try.
HELD = "held"
INVALID = "invalid"  # the row itself is wrong (no user_id, a bad phone, a reserved attribute)
UNKNOWN = "unknown"  # sent, but whether AhaChat processed it is unknown; not resent by default
DUPLICATE = "duplicate"  # the same recipient came earlier in the input
NOT_SENT = "not_sent"  # the run stopped before this recipient's turn
WOULD_SEND = "would_send"  # a dry run's outcome for a row it would send
OUTCOMES = (DELIVERED, FAILED, OUTSIDE_WINDOW, HELD, INVALID, UNKNOWN, DUPLICATE, NOT_SENT, WOULD_SEND)
#: Outcomes an earlier try settled for good: its recipients are not asked again.
SETTLED = (DELIVERED, OUTSIDE_WINDOW, HELD)

#: Outcomes that count against ``max_failures`` and ``max_failure_ratio``; ``outside_window`` too
#: when the run's ``outside_window`` is ``"fail"``.
COUNTED_AS_FAILURES = (FAILED, INVALID, UNKNOWN, NOT_SENT)

#: Outcomes listed among the summary's first failures.
_LISTED = (FAILED, INVALID, UNKNOWN)
#: How many failures, and how many customers outside the window, the summary names (the report
#: names every one); the summary stays small whatever the audience.
_FIRST_FAILURES = 20


class AhaChatBulkError(AhaChatError):
    """
    A bulk run ended with more failures than allowed, or stopped early.

    :param message: what happened, with counts.
    :param summary: the run's summary, as :meth:`BulkRunner.run` returns it.
    """

    def __init__(self, message: str, summary: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.summary = dict(summary or {})

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.message, self.summary))


@dataclass
class Tally:
    """
    The run's counts by outcome, and everything reported from them.

    :param action: the action's name, for the log and the summary.
    :param dry_run: whether nothing is sent.
    :param total: how many rows there are, when known, for the progress lines.
    :param logger: where progress goes.
    :param progress_interval: seconds between progress lines.
    :param sample_size: how many requests a dry run shows.
    :param dedupe_on: the columns that, with the recipient, make a message distinct.
    :param outside_window_fails: whether customers outside Messenger's window count as failures.
    """

    action: str
    dry_run: bool
    total: int | None
    logger: logging.Logger | logging.LoggerAdapter[Any]
    progress_interval: float
    sample_size: int
    dedupe_on: tuple[str, ...] = ()
    outside_window_fails: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    nulls: Counter[str] = field(default_factory=Counter)  # attribute columns NULL, left out or sent empty
    failures: list[dict[str, Any]] = field(default_factory=list)
    outside: list[dict[str, Any]] = field(default_factory=list)  # the first customers outside the window
    samples: list[dict[str, Any]] = field(default_factory=list)
    already: int = 0  # delivered in an earlier try of the task
    already_outside: int = 0  # found outside the window by an earlier try, not asked again
    already_held: int = 0  # held by an earlier try, not asked again
    checked: Counter[str] = field(default_factory=Counter)  # earlier unknowns, by what their mark showed
    rows: int = 0
    started: float = field(default_factory=time.monotonic)
    last_progress: float = field(default_factory=time.monotonic)

    def add(self, number: int, who: str, outcome: str, reason: str | None, *, earlier: bool = False) -> None:
        """Count one row's final outcome."""
        self.counts[outcome] += 1
        if earlier and outcome == DELIVERED:
            self.already += 1
        self.already_held += int(earlier and outcome == HELD)
        if outcome == OUTSIDE_WINDOW:
            self.already_outside += int(earlier)
            if len(self.outside) < _FIRST_FAILURES:
                self.outside.append({"row": number, "recipient": who})
        if outcome in _LISTED and len(self.failures) < _FIRST_FAILURES:
            self.failures.append({"row": number, "recipient": who, "outcome": outcome, "reason": reason})

    def sample(self, number: int, preview: Mapping[str, Any]) -> None:
        """Keep one of a dry run's requests to show."""
        if len(self.samples) < self.sample_size:
            self.samples.append({"row": number, **preview})

    @property
    def failed(self) -> int:
        """Rows that count against the failure limits."""
        counted = COUNTED_AS_FAILURES + ((OUTSIDE_WINDOW,) if self.outside_window_fails else ())
        return sum(self.counts[outcome] for outcome in counted)

    @property
    def sent(self) -> int:
        """Requests this try sent (with an outcome known or not)."""
        answered = sum(self.counts[outcome] for outcome in SETTLED)
        earlier = self.already + self.already_outside + self.already_held
        return answered - earlier + self.counts[FAILED] + self.counts[UNKNOWN]

    @property
    def repeat_reason(self) -> str:
        """Why a repeat is not sent."""
        if self.dedupe_on:
            return f"the same recipient and {', '.join(self.dedupe_on)} came earlier"
        return "the same recipient came earlier (one message per recipient; see dedupe_on)"

    # -- the log

    def progress_due(self) -> bool:
        """Whether it is time for a progress line."""
        return time.monotonic() - self.last_progress >= self.progress_interval

    def progress(self, *, final: bool = False) -> None:
        """Log how far the run is: done, rate, counts and, when the total is known, time left."""
        now = time.monotonic()
        self.last_progress = now
        rate = self.sent / max(now - self.started, 1e-9)
        done = sum(self.counts.values())
        of = " (total unknown)" if self.total is None else ""
        eta = ""
        if self.total:
            of = f" / {self.total:,} ({100 * done / self.total:.1f}%)"
            if rate > 0 and done < self.total and not final:
                eta = f", about {_duration((self.total - done) / rate)} left"
        outside = self.counts[OUTSIDE_WINDOW]
        held = self.counts[HELD]
        self.logger.info(
            "AhaChat %s: %s%s %s, %.1f requests/s, %d delivered, %d failed, %d unknown, %d invalid%s%s%s",
            self.action,
            f"{done:,}",
            of,
            "checked" if self.dry_run else "done",
            rate,
            self.counts[DELIVERED],
            self.counts[FAILED],
            self.counts[UNKNOWN],
            self.counts[INVALID],
            f", {outside} outside the 24-hour window" if outside else "",
            f", {held} held for their next call" if held else "",
            eta,
        )

    # -- the end

    def summary(
        self, *, report: str | None, ledger: str | None, pauses: int, retries: Mapping[str, int]
    ) -> dict[str, Any]:
        """The run's summary: the task's XCom."""
        elapsed = time.monotonic() - self.started
        summary: dict[str, Any] = {
            "action": self.action,
            "dry_run": self.dry_run,
            "total": self.rows,
            "outcomes": {outcome: self.counts[outcome] for outcome in OUTCOMES if self.counts[outcome]},
            "delivered_in_earlier_tries": self.already,
            "unknown_checked": dict(self.checked),
            "requests_per_second": round(self.sent / elapsed, 1) if elapsed > 0 else 0.0,
            "seconds": round(elapsed, 3),
            "rate_limit_pauses": pauses,
            "retries": dict(retries),
            "repeats": self.counts[DUPLICATE],
            "nulls": dict(self.nulls),
            # Workers finish out of order: list the failures kept by their row, as the input has them.
            "first_failures": sorted(self.failures, key=lambda failure: failure["row"]),
            # Who Messenger would not let the bot message now (the report names every one).
            "outside_window": sorted(self.outside, key=lambda row: row["row"]),
            # How many messages wait for their customer's next call (outside_window="hold").
            "held": self.counts[HELD],
            "report": report,
            "ledger": ledger,
        }
        if self.dry_run:
            summary["would_send"] = self.counts[WOULD_SEND]
            summary["sample_requests"] = self.samples
        return summary

    def final_line(self, summary: Mapping[str, Any]) -> None:
        """
        End the log with one line: the counts, the time, the pace and where the report is; after
        a warning when rows were skipped as repeats.
        """
        repeats = self.counts[DUPLICATE]
        if repeats:
            self.logger.warning(
                "AhaChat %s: %s of %s rows were not sent: they repeat an earlier row's %s",
                self.action,
                f"{repeats:,}",
                f"{self.rows:,}",
                f"recipient and {', '.join(self.dedupe_on)}"
                if self.dedupe_on
                else "recipient (one message per recipient; dedupe_on=[columns] sends one per "
                "recipient and those columns, e.g. one per order)",
            )
        parts = [f"{self.counts[WOULD_SEND]:,} would be sent"] if self.dry_run else []
        parts += [
            f"{self.counts[DELIVERED]:,} delivered"
            + (f" ({self.already:,} in earlier tries)" if self.already else ""),
            f"{self.counts[FAILED]:,} failed",
        ]
        if self.counts[OUTSIDE_WINDOW]:
            parts.append(
                f"{self.counts[OUTSIDE_WINDOW]:,} outside the 24-hour window"
                + (f" ({self.already_outside:,} found by earlier tries)" if self.already_outside else "")
                + (", counted as failures" if self.outside_window_fails else ", not counted as failures")
            )
        if self.counts[HELD]:
            parts.append(
                f"{self.counts[HELD]:,} held for the customer's next call"
                + (f" ({self.already_held:,} by earlier tries)" if self.already_held else "")
            )
        parts += [
            f"{self.counts[INVALID]:,} invalid",
            f"{repeats:,} repeats",
            f"{self.counts[UNKNOWN]:,} unknown",
        ]
        if self.counts[NOT_SENT]:
            parts.append(f"{self.counts[NOT_SENT]:,} not sent")
        if self.nulls:
            parts.append(
                "NULL attributes left out or sent empty: "
                + ", ".join(f"{column} in {n:,} rows" for column, n in sorted(self.nulls.items()))
            )
        self.logger.info(
            "AhaChat %s summary: %s of %s rows; %.1f s, %.1f requests/s; report: %s",
            self.action,
            ", ".join(parts),
            f"{self.rows:,}",
            summary["seconds"],
            summary["requests_per_second"],
            summary["report"] or "none (no ledger)",
        )

    def judge(
        self,
        summary: dict[str, Any],
        *,
        fatal: AhaChatError | None,
        stopped: bool,
        max_failures: int | None,
        max_failure_ratio: float | None,
    ) -> None:
        """
        Raise when the run failed: a fatal error, a stop part-way, or more failures than allowed.

        :raises AhaChatBulkError: with the summary.
        """
        rows = summary["total"]
        counts = ", ".join(f"{n} {o}" for o, n in summary["outcomes"].items()) or "no rows"
        where = f"; per-recipient report: {summary['report']}" if summary["report"] else ""
        if fatal is not None:
            raise AhaChatBulkError(f"AhaChat {self.action} stopped: {fatal} ({counts}){where}", summary)
        if stopped and self.counts[NOT_SENT]:
            raise AhaChatBulkError(f"AhaChat {self.action} was stopped part-way ({counts}){where}", summary)
        failed = self.failed
        too_many = max_failures is not None and failed > max_failures
        too_large = max_failure_ratio is not None and rows > 0 and failed / rows > max_failure_ratio
        if too_many or too_large:
            limit = []
            if max_failures is not None:
                limit.append(f"max_failures={max_failures}")
            if max_failure_ratio is not None:
                limit.append(f"max_failure_ratio={max_failure_ratio:g}")
            first = "; ".join(
                f"row {f['row']} {f['recipient']}: {f['reason']}" for f in summary["first_failures"][:5]
            )
            raise AhaChatBulkError(
                f"AhaChat {self.action}: {failed} of {rows} rows were not delivered, more than "
                f"{' and '.join(limit)} allow ({counts}). First: {first}{where}",
                summary,
            )


def _duration(seconds: float) -> str:
    seconds = math.ceil(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
