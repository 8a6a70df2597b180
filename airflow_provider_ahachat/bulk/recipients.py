"""
Who a bulk run is for: the input, read as a stream of rows, each validated into a :class:`Row`.

The input is a list (of user IDs or of mappings), a JSON list, or a CSV or JSON Lines file, local
or on object storage; files are read row by row, never whole. Airflow is imported only to open an
object storage URL.
"""

from __future__ import annotations

import csv
import io
import json
import pathlib
from collections.abc import Iterable, Iterator, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import Recipient, load_json, validate_attributes

#: File names that ``recipients`` reads as a file rather than as a user ID.
RECIPIENT_FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")

_ID_COLUMNS = ("user_id", "messenger_user_id")
_ROW_KEYS = {*_ID_COLUMNS, "phone", "attributes"}


@dataclass(frozen=True)
class Row:
    """
    One recipient from the input.

    :param number: the row's number in the input, from 1 (a file's header is not counted).
    :param recipient: who.
    :param attributes: the row's own attributes, validated.
    """

    number: int
    recipient: Recipient
    attributes: Mapping[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """The ledger's key for the recipient: ``user:<id>`` or ``phone:<number>``."""
        who = self.recipient
        return f"user:{who.user_id}" if who.user_id else f"phone:{who.phone}"


@dataclass(frozen=True)
class BadLine:
    """A line of a JSON Lines file that is not JSON.

    :param line: its line number in the file.
    """

    line: int


def parse_row(number: int, raw: Any, *, takes_attributes: bool) -> Row:
    """
    Read one input item: a user ID, or a mapping with ``user_id`` or ``phone``, optional
    ``attributes`` (a mapping or JSON object string), and, for actions that take attributes, any
    other column as an attribute. Empty cells are ignored. A row with both a user ID and a phone
    (an export often has both columns) is addressed by its user ID.

    :raises AhaChatValidationError: naming the row and the field.
    """
    try:
        if isinstance(raw, BadLine):
            raise AhaChatValidationError(f"line {raw.line} is not valid JSON")
        if isinstance(raw, Mapping):
            values = {str(k).strip(): v for k, v in raw.items() if k is not None and v not in (None, "")}
            user_id = next((values[c] for c in _ID_COLUMNS if c in values), None)
            phone = values.get("phone") if user_id is None else None
            recipient = Recipient.of(user_id=user_id, phone=phone)
            attributes: dict[str, Any] = {}
            if takes_attributes:
                own = values.get("attributes")
                if own is not None:
                    own = load_json(own, "attributes")
                    if not isinstance(own, Mapping):
                        raise AhaChatValidationError("attributes: must be an object of name to value")
                    attributes.update(own)
                attributes.update({k: v for k, v in values.items() if k not in _ROW_KEYS})
                attributes = validate_attributes(attributes, allow_empty=True)
            return Row(number, recipient, attributes)
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            return Row(number, Recipient.of(user_id=raw))
        raise AhaChatValidationError(
            f"a recipient is a user ID or a mapping with user_id or phone, got {type(raw).__name__}"
        )
    except AhaChatValidationError as err:
        raise AhaChatValidationError([f"row {number}: {problem}" for problem in err.problems]) from None


def describe_raw(raw: Any) -> str:
    """Who an unparsed row names, as :meth:`Recipient.describe` words it."""
    if isinstance(raw, Mapping):
        for name in (*_ID_COLUMNS, "phone"):
            if raw.get(name) not in (None, ""):
                return f"{'phone' if name == 'phone' else 'user'} {str(raw[name]).strip()[:40]}"
        return "a row without user_id or phone"
    if isinstance(raw, BadLine):
        return f"line {raw.line}"
    if isinstance(raw, str | int) and not isinstance(raw, bool):
        return f"user {str(raw).strip()[:40]}"
    text = repr(raw)
    return text if len(text) <= 60 else text[:57] + "..."


# --------------------------------------------------------------------------- files


def read_recipients(path: Any) -> Iterator[Any]:
    """
    Stream the rows of a CSV (with a header) or JSON Lines file, one at a time.

    ``path`` is a :class:`pathlib.Path` or an Airflow ``ObjectStoragePath``. The format comes from
    the extension: ``.csv``, or ``.jsonl``/``.ndjson``/``.json`` (one JSON value per line).
    """
    kind = _file_kind(path)
    with path.open("rb") as raw, io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as text:
        if kind == "csv":
            yield from csv.DictReader(text)
            return
        for number, line in enumerate(text, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    yield BadLine(number)


def count_recipients(path: Any) -> int:
    """How many rows :func:`read_recipients` will give, counted by one streaming pass."""
    kind = _file_kind(path)
    with path.open("rb") as raw:
        if kind == "csv":
            text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
            return max(0, sum(1 for row in csv.reader(text) if row) - 1)  # DictReader skips blank lines
        return sum(1 for line in raw if line.strip())


def _file_kind(path: Any) -> str:
    name = path.name.lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    raise AhaChatValidationError(
        f"recipients: {path.name!r} must end in .csv, .jsonl, .ndjson or .json (one JSON value per line)"
    )


def open_recipients(recipients: Any) -> tuple[Iterable[Any], int | None]:
    """
    The rows of ``recipients`` as a stream, and how many there are when that is cheap to know.

    ``recipients`` is a list of user IDs or of mappings (a resolved XCom is one), a mapping (one
    recipient), a JSON list as a string, a :class:`pathlib.Path` or an ``ObjectStoragePath``, or a
    string naming a ``.csv`` or ``.jsonl`` file, locally or at an object storage URL such as
    ``s3://aws_default@bucket/audience.csv``. Files are read row by row, never whole.
    """
    from airflow_provider_ahachat.bulk.ledger import local_path

    if recipients is None:
        raise AhaChatValidationError("recipients: give a list, a file or an XCom of recipients")
    if isinstance(recipients, str):
        text = recipients.strip()
        if text.startswith("["):
            recipients = load_json(text, "recipients")
        elif text.isdigit():
            recipients = [text]
        elif "://" in text:
            from airflow_provider_ahachat.version_compat import object_storage_path

            recipients = object_storage_path(text)
        elif text.lower().endswith(RECIPIENT_FILE_SUFFIXES):
            recipients = pathlib.Path(text).expanduser()
        else:
            raise AhaChatValidationError(
                f"recipients: {text[:80]!r} is neither a user ID, a JSON list nor a .csv or .jsonl file"
            )
    if isinstance(recipients, Mapping):
        return [recipients], 1
    if hasattr(recipients, "open") and hasattr(recipients, "name"):  # a file
        try:
            exists = recipients.exists()
        except OSError as err:
            raise AhaChatValidationError(f"recipients: cannot reach {recipients}: {err}") from None
        if not exists:
            raise AhaChatValidationError(f"recipients: there is no file {recipients}")
        total = count_recipients(recipients) if local_path(recipients) is not None else None
        return read_recipients(recipients), total
    if isinstance(recipients, Iterable) and not isinstance(recipients, bytes):
        return recipients, len(recipients) if isinstance(recipients, Sized) else None
    raise AhaChatValidationError(
        f"recipients: must be a list, a file or an XCom of recipients, got {type(recipients).__name__}"
    )
