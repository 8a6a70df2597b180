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
from airflow_provider_ahachat.models import DEFAULT_COUNTRY_CODE, Recipient, load_json, validate_attributes

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
        """The ledger's key for the recipient: ``user:<id>`` or ``phone:<number in E.164>``."""
        who = self.recipient
        return f"user:{who.user_id}" if who.user_id else f"phone:{who.phone}"


@dataclass(frozen=True)
class BadLine:
    """A row of a file that cannot be read: a JSON Lines line that is not JSON, a cell too large.

    :param line: its line number in the file.
    :param reason: what is wrong with it.
    """

    line: int
    reason: str = "is not valid JSON"


def parse_row(
    number: int, raw: Any, *, takes_attributes: bool, country_code: str = DEFAULT_COUNTRY_CODE
) -> Row:
    """
    Read one input item: a user ID, or a mapping with ``user_id`` or ``phone``, optional
    ``attributes`` (a mapping or JSON object string), and, for actions that take attributes, any
    other column as an attribute. Empty cells are ignored. A row with both a user ID and a phone
    (an export often has both columns) is addressed by its user ID.

    :raises AhaChatValidationError: naming the row and the field.
    """
    try:
        if isinstance(raw, BadLine):
            raise AhaChatValidationError(f"line {raw.line} {raw.reason}")
        if isinstance(raw, Mapping):
            values = {str(k).strip(): v for k, v in raw.items() if k is not None and v not in (None, "")}
            user_id = next((values[c] for c in _ID_COLUMNS if c in values), None)
            phone = values.get("phone") if user_id is None else None
            recipient = Recipient.of(user_id=user_id, phone=phone, country_code=country_code)
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


#: The most characters a CSV cell may hold; a row with a larger one is invalid, the others are sent.
MAX_CELL = 65_536
#: The most characters a JSON Lines line may hold; a larger one is an invalid row.
MAX_LINE = 1_048_576
#: How large a CSV cell the reader reads whole (to find where it ends) before giving up on the file.
_CSV_FIELD_LIMIT = 64 * 1_048_576


def _csv_reading() -> None:
    """Let the CSV reader read cells up to :data:`_CSV_FIELD_LIMIT` (its default is 128 KiB), never lower."""
    if csv.field_size_limit() < _CSV_FIELD_LIMIT:
        csv.field_size_limit(_CSV_FIELD_LIMIT)


def _text(raw: Any) -> io.TextIOWrapper:
    # Bytes that are not UTF-8 become lone surrogates, which make their row invalid (see
    # :func:`unencodable`) instead of stopping the whole file.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")


def read_recipients(path: Any) -> Iterator[Any]:
    """
    Stream the rows of a CSV (with a header) or JSON Lines file, one at a time.

    ``path`` is a :class:`pathlib.Path` or an Airflow ``ObjectStoragePath``. The format comes from
    the extension: ``.csv``, or ``.jsonl``/``.ndjson``/``.json`` (one JSON value per line). A row
    that cannot be read (a line that is not JSON, a cell larger than :data:`MAX_CELL`, a line
    longer than :data:`MAX_LINE`) comes as a :class:`BadLine`, an invalid row; the others follow.
    """
    kind = _file_kind(path)
    with path.open("rb") as raw, _text(raw) as text:
        if kind == "csv":
            _csv_reading()
            reader = csv.DictReader(text)
            while True:
                try:
                    row = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:
                    raise AhaChatValidationError(
                        f"recipients: {path.name}, line {reader.line_num}: {err}; "
                        "the file cannot be read past it"
                    ) from None
                large = next((k for k, v in row.items() if isinstance(v, str) and len(v) > MAX_CELL), None)
                if large is not None:
                    size = len(row[large])
                    name = printable(str(large))[:40]
                    yield BadLine(
                        reader.line_num,
                        f"has a cell of {size} characters in column {name!r}; "
                        f"a cell may hold at most {MAX_CELL}",
                    )
                else:
                    yield row
            return
        for number, line in enumerate(text, start=1):
            if len(line) > MAX_LINE:
                yield BadLine(number, f"is {len(line)} characters long; a line may hold at most {MAX_LINE}")
            elif line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    yield BadLine(number)


def count_recipients(path: Any) -> int:
    """How many rows :func:`read_recipients` will give, counted by one streaming pass."""
    kind = _file_kind(path)
    with path.open("rb") as raw:
        if kind == "csv":
            _csv_reading()
            try:
                return max(
                    0, sum(1 for row in csv.reader(_text(raw)) if row) - 1
                )  # DictReader skips blank lines
            except csv.Error:
                return 0  # reading the rows will say where
        return sum(1 for line in raw if line.strip())


def unencodable(raw: Any) -> str | None:
    """
    Where ``raw`` (an input item) holds text that cannot be sent: a lone surrogate (from ``\\ud800``
    in JSON, or bytes that are not UTF-8 in a file). The field's name, or None when all is well.
    """

    def bad(text: str) -> bool:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False

    def find(value: Any, where: str) -> str | None:
        if isinstance(value, str):
            return where if bad(value) else None
        if isinstance(value, Mapping):
            for key, item in value.items():
                name = f"{where}.{key}" if where != "the row" else str(key)
                if isinstance(key, str) and bad(key):
                    return f"the name of {printable(name)!r}"
                found = find(item, name)
                if found is not None:
                    return found
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                found = find(item, f"{where}[{i}]")
                if found is not None:
                    return found
        return None

    found = find(raw, "the row")
    return None if found is None else printable(found)


def printable(text: str) -> str:
    """``text`` with what cannot be encoded written as escapes, safe for logs and reports."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


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
