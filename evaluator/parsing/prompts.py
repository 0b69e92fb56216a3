"""Parsing of prompt files (JSONL or CSV) into validated rows, with errors that name the line.

Nothing here touches the database: a file is parsed and checked whole before anything is stored.
"""

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from training.lines import split_lines

MAX_PROMPT_CHARS = 20_000
MAX_CATEGORY_CHARS = 64  # Prompt.category's max_length
FIELDS = ("id", "prompt", "reference", "context", "category")
REQUIRED = ("id", "prompt")


@dataclass(frozen=True)
class PromptRow:
    external_id: str
    text: str
    reference: str = ""
    context: str = ""
    category: str = ""


class PromptFileError(ValueError):
    def __init__(self, line: int | None, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}" if line else problem)


def parse_prompt_file(name: str, data: bytes) -> list[PromptRow]:
    """Parse a `.jsonl` or `.csv` upload; raise PromptFileError at the first problem."""
    text = _decode(data)
    lowered = name.lower()
    if lowered.endswith((".jsonl", ".ndjson")):
        rows = list(_jsonl_rows(text))
    elif lowered.endswith(".csv"):
        rows = list(_csv_rows(text))
    else:
        raise PromptFileError(None, f"unsupported file type {name!r}: use .jsonl or .csv")
    if not rows:
        raise PromptFileError(None, "the file holds no prompts")
    _check_unique_ids(rows)
    return [row for _, row in rows]


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # error.object is the data after any byte-order mark; the offset shown counts from the file's first byte.
        line = error.object.count(b"\n", 0, error.start) + 1
        offset = error.start + len(data) - len(error.object)
        raise PromptFileError(line, f"the file is not UTF-8 (byte {offset})") from None


def _jsonl_rows(text: str) -> Iterator[tuple[int, PromptRow]]:
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(number, f"invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise PromptFileError(number, "expected a JSON object")
        yield number, _row_from_mapping(number, record)


def _csv_rows(text: str) -> Iterator[tuple[int, PromptRow]]:
    """Rows of an RFC 4180 file, strictly: a quote left open, text after a closing quote, or a row whose field count
    differs from the header's refuses the file, naming the line where that record starts. A lenient reader would
    let an open quote swallow every following line into one field."""
    # newline="" leaves line ends to the csv module, as the csv docs require: quoted fields may hold line breaks,
    # and only "\r", "\n" and "\r\n" end a record (never U+2028, U+2029 or U+0085).
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _csv_record(reader, 1)
    if header is None:
        return
    header = [name.strip() for name in header]
    missing = [field for field in REQUIRED if field not in header]
    if missing:
        raise PromptFileError(1, f"the header lacks column(s) {', '.join(missing)}")
    while True:
        start = reader.line_num + 1
        values = _csv_record(reader, start)
        if values is None:
            return
        if not values:  # a blank line
            continue
        if len(values) > len(header):
            raise PromptFileError(start, "more values than header columns")
        if len(values) < len(header):
            raise PromptFileError(
                start, f"{len(values)} value(s) where the header has {len(header)} columns ({', '.join(header)})"
            )
        yield start, _row_from_mapping(start, dict(zip(header, values, strict=True)))


def _csv_record(reader: Any, start: int) -> list[str] | None:
    """The next record, or None at the end; a malformed record raises PromptFileError naming the line it starts on."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as error:
        if reader.line_num > start and "unexpected end of data" in str(error):
            problem = (
                f"a quoted field opened on this line is never closed (the quote runs to line {reader.line_num}, "
                "the end of the file)"
            )
        elif "unexpected end of data" in str(error):
            problem = "a quoted field is never closed"
        else:
            problem = f"malformed CSV ({error}); a field holding a quote must be quoted whole, its quotes doubled"
        raise PromptFileError(start, problem) from None


def _row_from_mapping(line: int, record: dict[str, object]) -> PromptRow:
    unknown = sorted(set(record) - set(FIELDS))
    if unknown:
        raise PromptFileError(line, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    values: dict[str, str] = {}
    for field in FIELDS:
        value = record.get(field, "")
        if value is None:
            value = ""
        if isinstance(value, int) and not isinstance(value, bool) and field == "id":
            value = str(value)
        if not isinstance(value, str):
            raise PromptFileError(line, f"field {field!r} must be a string, not {type(value).__name__}")
        if "\x00" in value:
            raise PromptFileError(line, f"field {field!r} contains a NUL character")
        values[field] = value.strip()
    for field in REQUIRED:
        if not values[field]:
            raise PromptFileError(line, f"field {field!r} is missing or empty")
    if len(values["id"]) > 120:
        raise PromptFileError(line, "field 'id' is longer than 120 characters")
    if len(values["prompt"]) > MAX_PROMPT_CHARS:
        raise PromptFileError(line, f"field 'prompt' is longer than {MAX_PROMPT_CHARS} characters")
    if len(values["category"]) > MAX_CATEGORY_CHARS:
        raise PromptFileError(line, f"field 'category' is longer than {MAX_CATEGORY_CHARS} characters")
    return PromptRow(values["id"], values["prompt"], values["reference"], values["context"], values["category"])


def _check_unique_ids(rows: list[tuple[int, PromptRow]]) -> None:
    seen: dict[str, int] = {}
    for line, row in rows:
        if row.external_id in seen:
            raise PromptFileError(line, f"id {row.external_id!r} repeats line {seen[row.external_id]}")
        seen[row.external_id] = line
