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

from airflow_provider_ahachat.bulk.columns import (
    ATTRIBUTES_KEY,
    DEFAULT_ID_COLUMNS,
    NULL_EMPTY,
    NULL_INVALID,
    Columns,
    file_header,
)
from airflow_provider_ahachat.exceptions import AhaChatValidationError
from airflow_provider_ahachat.models import DEFAULT_COUNTRY_CODE, Recipient, load_json, validate_attributes

#: File names that ``recipients`` reads as a file rather than as a user ID.
RECIPIENT_FILE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json")

_ID_COLUMNS = DEFAULT_ID_COLUMNS
_DEFAULT_COLUMNS = Columns()


@dataclass(frozen=True)
class Row:
    """
    One recipient from the input.

    :param number: the row's number in the input, from 1 (a file's header is not counted).
    :param recipient: who.
    :param attributes: the row's own attributes, validated.
    :param dedupe: what, with the recipient, makes the message distinct (``dedupe_on``'s values,
        as JSON after a space), or empty: one message per recipient.
    :param nulls: the attribute columns left out or sent empty because they were NULL or empty.
    """

    number: int
    recipient: Recipient
    attributes: Mapping[str, Any] = field(default_factory=dict)
    dedupe: str = ""
    nulls: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """
        The ledger's key for the message: ``user:<id>`` or ``phone:<number in E.164>``, followed by
        the ``dedupe_on`` values when there are any.
        """
        who = self.recipient
        key = f"user:{who.user_id}" if who.user_id else f"phone:{who.phone}"
        return key + self.dedupe


@dataclass(frozen=True)
class BadLine:
    """A row of a file that cannot be read: a JSON Lines line that is not JSON, a cell too large.

    :param line: its line number in the file.
    :param reason: what is wrong with it.
    """

    line: int
    reason: str = "is not valid JSON"


def parse_row(
    number: int,
    raw: Any,
    *,
    takes_attributes: bool,
    columns: Columns | None = None,
    country_code: str = DEFAULT_COUNTRY_CODE,
) -> Row:
    """
    Read one input item: a user ID, or a mapping whose ``columns`` name the recipient (by default
    ``user_id`` or ``messenger_user_id``, else ``phone``), with, for actions that take attributes,
    its attributes (by default every other column, and ``attributes``, a mapping or JSON object
    string). A row with both a user ID and a phone (an export often has both columns) is
    addressed by its user ID. A NULL or empty ID and phone make the row invalid; a NULL or empty
    attribute does what ``columns.null_attributes`` says.

    :raises AhaChatValidationError: naming the row and the field.
    """
    columns = columns or _DEFAULT_COLUMNS
    try:
        if isinstance(raw, BadLine):
            raise AhaChatValidationError(f"line {raw.line} {raw.reason}")
        if isinstance(raw, Mapping):
            values = {str(k).strip(): v for k, v in raw.items() if k is not None}
            recipient = _recipient(number, values, columns, country_code)
            attributes: dict[str, Any] = {}
            nulls: tuple[str, ...] = ()
            if takes_attributes:
                attributes, nulls = _attributes(number, values, columns)
                attributes = validate_attributes(attributes, allow_empty=True)
            return Row(number, recipient, attributes, _dedupe(number, values, columns), nulls)
        if isinstance(raw, str | int) and not isinstance(raw, bool):
            return Row(number, Recipient.of(user_id=raw))
        raise AhaChatValidationError(
            f"a recipient is a user ID or a mapping with user_id or phone, got {type(raw).__name__}"
        )
    except AhaChatValidationError as err:
        where = f" in row {number}"
        problems = [p if where in p else f"row {number}: {p}" for p in err.problems]
        raise AhaChatValidationError(problems) from None


def _blank(value: Any) -> bool:
    return value is None or value == ""


def _nothing(column: str, value: Any) -> str:
    return f"{column} is {'NULL' if value is None else 'empty'}"


def _recipient(
    number: int, values: Mapping[str, Any], columns: Columns, country_code: str = DEFAULT_COUNTRY_CODE
) -> Recipient:
    """The row's recipient: its first user ID column with a value, else its phone."""
    for column in columns.user_id:
        if not _blank(values.get(column)):
            return Recipient.of(user_id=values[column])
    if columns.phone and not _blank(values.get(columns.phone)):
        return Recipient.of(phone=values[columns.phone], country_code=country_code)
    present = [c for c in columns.recipient_keys() if c in values]
    if not present:
        *first, last = columns.recipient_keys()
        keys = f"{', '.join(first)} or {last}" if first else last
        raise AhaChatValidationError(f"no {keys} in row {number}")
    raise AhaChatValidationError(" and ".join(_nothing(c, values[c]) for c in present) + f" in row {number}")


def _attributes(
    number: int, values: Mapping[str, Any], columns: Columns
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The row's attributes, and the columns left out or sent empty because they were NULL."""
    attributes: dict[str, Any] = {}
    if columns.attributes is None:
        own = values.get(ATTRIBUTES_KEY)
        if not _blank(own):
            own = load_json(own, ATTRIBUTES_KEY)
            if not isinstance(own, Mapping):
                raise AhaChatValidationError("attributes: must be an object of name to value")
            attributes.update(own)
        skip = {*columns.recipient_keys(), *_ID_COLUMNS, ATTRIBUTES_KEY}
        chosen: Mapping[str, str] = {c: c for c in values if c not in skip}
    else:
        chosen = columns.attributes
    nulls, wrong = [], []
    for column, name in chosen.items():
        value = values.get(column)
        if not _blank(value):
            attributes[name] = value
        elif columns.null_attributes == NULL_INVALID:
            wrong.append(_nothing(column, value))
        else:
            nulls.append(column)
            if columns.null_attributes == NULL_EMPTY:
                attributes[name] = ""
    if wrong:
        raise AhaChatValidationError(
            f"{', '.join(wrong)} in row {number}: nothing is sent for this row "
            "(null_attributes='omit' leaves such an attribute as it is, 'empty' sends it empty)"
        )
    return attributes, tuple(nulls)


def _dedupe(number: int, values: Mapping[str, Any], columns: Columns) -> str:
    """``dedupe_on``'s values, as the end of the row's key."""
    if not columns.dedupe_on:
        return ""
    wrong = [_nothing(c, values.get(c)) for c in columns.dedupe_on if _blank(values.get(c))]
    if wrong:
        raise AhaChatValidationError(f"{', '.join(wrong)} in row {number} (a dedupe_on column)")
    return " " + json.dumps([str(values[c]) for c in columns.dedupe_on], ensure_ascii=False)


def describe_raw(raw: Any, columns: Columns | None = None) -> str:
    """Who an unparsed row names, as :meth:`Recipient.describe` words it."""
    columns = columns or _DEFAULT_COLUMNS
    if isinstance(raw, Mapping):
        for name in columns.recipient_keys():
            if raw.get(name) not in (None, ""):
                return f"{'phone' if name == columns.phone else 'user'} {str(raw[name]).strip()[:40]}"
        return f"a row without {' or '.join(columns.recipient_keys())}"
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
    found = _unencodable_in(raw, "the row")
    return None if found is None else printable(found)


def _bad_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _unencodable_in(value: Any, where: str) -> str | None:
    if isinstance(value, str):
        return where if _bad_text(value) else None
    if isinstance(value, Mapping):
        return _unencodable_in_mapping(value, where)
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _unencodable_in(item, f"{where}[{i}]")
            if found is not None:
                return found
    return None


def _unencodable_in_mapping(value: Mapping[Any, Any], where: str) -> str | None:
    for key, item in value.items():
        name = f"{where}.{key}" if where != "the row" else str(key)
        if isinstance(key, str) and _bad_text(key):
            return f"the name of {printable(name)!r}"
        found = _unencodable_in(item, name)
        if found is not None:
            return found
    return None


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


def open_recipients(
    recipients: Any, *, columns: Columns | None = None, takes_attributes: bool = True
) -> tuple[Iterable[Any], int | None]:
    """
    The rows of ``recipients`` as a stream, and how many there are when that is cheap to know.

    ``recipients`` is a list of user IDs or of mappings (a resolved XCom is one), a mapping (one
    recipient), a JSON list as a string, a :class:`pathlib.Path` or an ``ObjectStoragePath``, or a
    string naming a ``.csv`` or ``.jsonl`` file, locally or at an object storage URL such as
    ``s3://aws_default@bucket/audience.csv``. Files are read row by row, never whole. With
    ``columns``, a file's header (a JSON Lines file's first object) is checked against them first.
    """
    if recipients is None:
        raise AhaChatValidationError("recipients: give a list, a file or an XCom of recipients")
    if isinstance(recipients, str):
        recipients = _named(recipients.strip())
    if isinstance(recipients, Mapping):
        return [recipients], 1
    if hasattr(recipients, "open") and hasattr(recipients, "name"):  # a file
        return _open_file(recipients, columns, takes_attributes)
    if isinstance(recipients, Iterable) and not isinstance(recipients, bytes):
        return recipients, len(recipients) if isinstance(recipients, Sized) else None
    raise AhaChatValidationError(
        f"recipients: must be a list, a file or an XCom of recipients, got {type(recipients).__name__}"
    )


def _named(text: str) -> Any:
    """What a string of ``recipients`` names: a JSON list, one user ID, or a file."""
    if text.startswith("["):
        return load_json(text, "recipients")
    if text.isdigit():
        return [text]
    if "://" in text:
        from airflow_provider_ahachat.version_compat import object_storage_path

        return object_storage_path(text)
    if text.lower().endswith(RECIPIENT_FILE_SUFFIXES):
        return pathlib.Path(text).expanduser()
    raise AhaChatValidationError(
        f"recipients: {text[:80]!r} is neither a user ID, a JSON list nor a .csv or .jsonl file"
    )


def _open_file(
    path: Any, columns: Columns | None, takes_attributes: bool
) -> tuple[Iterable[Any], int | None]:
    """A file's rows, its header checked against ``columns`` first; their number when it is local."""
    from airflow_provider_ahachat.bulk.ledger import local_path

    try:
        exists = path.exists()
    except OSError as err:
        raise AhaChatValidationError(f"recipients: cannot reach {path}: {err}") from None
    if not exists:
        raise AhaChatValidationError(f"recipients: there is no file {path}")
    _file_kind(path)
    header = file_header(path) if columns is not None else None
    if columns is not None and header is not None:
        columns.check(header, f"the file {path.name}", takes_attributes=takes_attributes)
    total = count_recipients(path) if local_path(path) is not None else None
    return read_recipients(path), total
