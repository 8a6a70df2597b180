"""
Which columns of the input a bulk run uses, checked against the input's header before anything is
sent: the recipient's ID or phone, the attributes, the columns that make a message distinct
(``dedupe_on``), and what a NULL becomes (``null_attributes``). No Airflow import here.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError

#: What a NULL (or empty) attribute value does to its row.
NULL_INVALID, NULL_OMIT, NULL_EMPTY = "invalid", "omit", "empty"
NULL_POLICIES = (NULL_INVALID, NULL_OMIT, NULL_EMPTY)

#: The columns that name a recipient in a file or a list, when nothing else is said.
DEFAULT_ID_COLUMNS = ("user_id", "messenger_user_id")
DEFAULT_PHONE_COLUMN = "phone"
#: A row's own attributes as one JSON object (files and lists only).
ATTRIBUTES_KEY = "attributes"


@dataclass(frozen=True)
class Columns:
    """
    How a bulk run reads each row.

    :param user_id: the columns that may hold the recipient's messenger_user_id, first found first.
    :param phone: the column that holds the phone, for rows without a user ID; None for none.
    :param attributes: which columns are attributes, as column name to attribute name; None for
        every column that is not the ID, the phone, or ``attributes`` (a JSON object of its own).
    :param dedupe_on: columns that, with the recipient, make a message distinct: one message per
        recipient and value of these columns, in this run and across the task's tries.
    :param null_attributes: a NULL or empty attribute value makes the row ``"invalid"`` (the
        default), is left out (``"omit"``, the attribute keeps its value at AhaChat) or is sent
        empty (``"empty"``).
    :param named: which of ``user_id_column`` and ``phone_column`` the user named (the others are
        defaults, used only when the input has them).
    """

    user_id: tuple[str, ...] = DEFAULT_ID_COLUMNS
    phone: str | None = DEFAULT_PHONE_COLUMN
    attributes: Mapping[str, str] | None = None
    dedupe_on: tuple[str, ...] = ()
    null_attributes: str = NULL_INVALID
    named: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def of(
        cls,
        *,
        dedupe_on: Any = None,
        null_attributes: Any = NULL_INVALID,
        **kwargs: Any,
    ) -> Columns:
        """Validate ``dedupe_on`` and ``null_attributes`` as operators receive them."""
        problems = []
        if null_attributes not in NULL_POLICIES:
            problems.append(
                f"null_attributes: must be one of {', '.join(NULL_POLICIES)}, got {null_attributes!r}"
            )
        if dedupe_on is None:
            dedupe: tuple[str, ...] = ()
        elif isinstance(dedupe_on, str):
            dedupe = (dedupe_on,)
        elif isinstance(dedupe_on, Sequence) and all(isinstance(c, str) and c for c in dedupe_on):
            dedupe = tuple(dedupe_on)
        else:
            dedupe = ()
            problems.append(f"dedupe_on: must be a column name or a list of column names, got {dedupe_on!r}")
        if problems:
            raise AhaChatValidationError(problems)
        return cls(dedupe_on=dedupe, null_attributes=null_attributes, **kwargs)

    def recipient_keys(self) -> tuple[str, ...]:
        """The columns that name the recipient."""
        return (*self.user_id, *((self.phone,) if self.phone else ()))

    def check(
        self,
        header: Sequence[str],
        source: str,
        *,
        takes_attributes: bool,
        defaults: str = "the default names; a file or a list names each recipient by user_id or phone",
        field: str = "recipients",
    ) -> Columns:
        """
        Check that every column this run is told to use is in ``header``; return the columns as
        this input has them (the defaults it lacks dropped).

        :param source: the input, for the error: ``the query``, ``the file audience.csv``.
        :param defaults: said when the default recipient columns apply and none is there.
        :param field: the argument named when no column names the recipients.
        :raises AhaChatValidationError: naming each missing column and listing ``header``.
        """
        have = [str(c) for c in header]
        problems = []
        ids = tuple(c for c in self.user_id if c in have)
        phone = self.phone if self.phone in have else None
        if "user_id" in self.named and not ids:
            problems.append(f"user_id_column: {source} has no column {self.user_id[0]!r}")
        if "phone" in self.named and self.phone and phone is None:
            problems.append(f"phone_column: {source} has no column {self.phone!r}")
        if not ids and phone is None and not problems:
            *first, last = (repr(c) for c in self.recipient_keys())
            names = f"{', '.join(first)} or {last}" if first else last
            problems.append(f"{field}: {source} has no column {names} to name the recipients by ({defaults})")
        if takes_attributes and self.attributes is not None:
            missing = [c for c in self.attributes if c not in have]
            if missing:
                problems.append(f"attribute_columns: {source} has no column {', '.join(map(repr, missing))}")
        missing = [c for c in self.dedupe_on if c not in have]
        if missing:
            problems.append(f"dedupe_on: {source} has no column {', '.join(map(repr, missing))}")
        if problems:
            listed = ", ".join(have) if have else "none"
            raise AhaChatValidationError([*problems, f"{source} has the columns: {listed}"])
        return replace(self, user_id=ids, phone=phone)

    def describe(self) -> str:
        """Which columns name the recipients, for the log."""
        parts = []
        for column in self.user_id:
            named = "user_id_column" if "user_id" in self.named else "the default"
            parts.append(f"user ID from {column!r} ({named})")
        if self.phone:
            named = "phone_column" if "phone" in self.named else "the default"
            parts.append(
                f"phone from {self.phone!r} ({named}){' when the ID is NULL' if self.user_id else ''}"
            )
        text = ", else ".join(parts)
        if self.dedupe_on:
            text += f"; one message per recipient and {', '.join(self.dedupe_on)}"
        else:
            text += "; one message per recipient (later rows for the same recipient are repeats)"
        return f"{text}; NULL attributes: {self.null_attributes}"


def file_header(path: Any) -> list[str] | None:
    """
    The columns of a CSV file (its header) or of a JSON Lines file (its first object's keys);
    None when the first JSON value is not an object (a list of user IDs needs no columns).
    """
    name = path.name.lower()
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        if name.endswith(".csv"):
            return next(csv.reader(text), None)  # an empty file has no rows to check
        for line in text:
            if line.strip():
                try:
                    first = json.loads(line)
                except ValueError:
                    return None  # reported as the row's own problem
                return [str(key) for key in first] if isinstance(first, Mapping) else None
    return None
