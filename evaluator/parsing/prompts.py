"""Parsing of prompt files (JSONL or CSV) into validated rows, with errors that name the line.

Nothing here touches the database: a file is parsed and checked whole before anything is stored.
"""

import csv
import io
import json
from dataclasses import dataclass

from training.lines import split_lines

MAX_PROMPT_CHARS = 20_000
FIELDS = ("id", "prompt", "reference", "context")
REQUIRED = ("id", "prompt")


@dataclass(frozen=True)
class PromptRow:
    external_id: str
    text: str
    reference: str = ""
    context: str = ""


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


def _jsonl_rows(text: str):
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


def _csv_rows(text: str):
    # newline="" leaves line ends to the csv module, as the csv docs require: quoted fields may hold line breaks,
    # and only "\r", "\n" and "\r\n" end a record (never U+2028, U+2029 or U+0085).
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    missing = [field for field in REQUIRED if field not in header]
    if missing:
        raise PromptFileError(1, f"the header lacks column(s) {', '.join(missing)}")
    for record in reader:
        if None in record:
            raise PromptFileError(reader.line_num, "more values than header columns")
        yield reader.line_num, _row_from_mapping(reader.line_num, record)


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
    return PromptRow(values["id"], values["prompt"], values["reference"], values["context"])


def _check_unique_ids(rows: list[tuple[int, PromptRow]]) -> None:
    seen: dict[str, int] = {}
    for line, row in rows:
        if row.external_id in seen:
            raise PromptFileError(line, f"id {row.external_id!r} repeats line {seen[row.external_id]}")
        seen[row.external_id] = line
