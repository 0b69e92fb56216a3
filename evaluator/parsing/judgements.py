"""Import pairwise judgements collected elsewhere (JSONL) into a campaign, all or nothing.

Two shapes of line are read (docs/formats.md describes every field):

- Prefloop's: {"prompt_id", "prompt", "model_a", "model_b", "response_a", "response_b", "annotator",
  "criteria": {slug: "a" | "b" | "tie", …}, "shown_left": "a" | "b" (optional), "time_ms": int (optional)};
- Chatbot Arena's: {"model_a", "model_b", "winner", "question_id", "judge"} plus optional "prompt" and
  "conversation_a"/"conversation_b"; it gives the "overall" criterion only.

The whole file is parsed and checked first (`parse_judgement_file`, no database); an error names the line and the
field. `judgements_import` then writes everything in one transaction.
"""

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from evaluator.models import (
    OVERALL,
)
from training.lines import split_lines

OUTCOMES = ("a", "b", "tie")
ARENA_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "tie"}
PREFLOOP_FIELDS = (
    "prompt_id",
    "prompt",
    "model_a",
    "model_b",
    "response_a",
    "response_b",
    "annotator",
    "criteria",
    "shown_left",
    "time_ms",
)
PREFLOOP_REQUIRED = ("prompt_id", "prompt", "model_a", "model_b", "response_a", "response_b", "annotator", "criteria")
ARENA_REQUIRED = ("model_a", "model_b", "winner", "question_id", "judge")
IMPORTED_BASE_MODEL = "imported:{name}"
NAME_LIMIT = 120
# Shown when an Arena line carries no prompt text: the prompt still needs one (the column must not be empty).
MISSING_PROMPT_TEXT = "(prompt text not imported: question {id})"


class JudgementFileError(ValueError):
    """A judgement file that cannot be imported; `line` and `field` say where."""

    def __init__(self, line: int | None, field: str | None, problem: str) -> None:
        self.line = line
        self.field = field
        self.problem = problem
        where = ", ".join(
            part for part in (f"line {line}" if line else "", f"field {field!r}" if field else "") if part
        )
        super().__init__(f"{where}: {problem}" if where else problem)


@dataclass(frozen=True)
class ImportedJudgement:
    """One line, as the file states it: a and b are the file's model_a and model_b (not yet canonical)."""

    line: int
    prompt_id: str
    prompt: str
    model_a: str
    model_b: str
    response_a: str
    response_b: str
    annotator: str
    outcomes: Mapping[str, str]
    shown_left: str | None = None
    time_ms: int = 0


@dataclass
class ImportSummary:
    judgements: int = 0
    prompts_created: int = 0
    variants_created: int = 0
    comparisons_created: int = 0
    annotators_created: int = 0
    criteria: set[str] = field(default_factory=set)


def parse_judgement_file(data: bytes, *, criteria: list[str]) -> list[ImportedJudgement]:
    """Parse and check a whole JSONL file; raise JudgementFileError at the first problem.

    `criteria` are the slugs the campaign knows (its rubric plus "overall").
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # error.object is the data after any byte-order mark; the offset shown counts from the file's first byte.
        line = error.object.count(b"\n", 0, error.start) + 1
        offset = error.start + len(data) - len(error.object)
        raise JudgementFileError(line, None, f"the file is not UTF-8 (byte {offset})") from None
    rows = list(_rows(text, criteria))
    if not rows:
        raise JudgementFileError(None, None, "the file holds no judgements")
    _check_repeats(rows)
    return rows


def _rows(text: str, criteria: list[str]) -> Iterator[ImportedJudgement]:
    for number, line in enumerate(split_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise JudgementFileError(number, None, f"invalid JSON ({error.msg})") from None
        if not isinstance(record, dict):
            raise JudgementFileError(number, None, "expected a JSON object")
        if "criteria" in record:
            yield _prefloop_row(number, record, criteria)
        elif "winner" in record:
            yield _arena_row(number, record)
        else:
            raise JudgementFileError(
                number, "criteria", "missing: a line needs 'criteria' (Prefloop shape) or 'winner' (Arena shape)"
            )


def _text(line: int, record: Mapping[str, Any], name: str, *, allow_empty: bool = False, ident: bool = False) -> str:
    if name not in record or record[name] is None:
        raise JudgementFileError(line, name, "missing")
    value = record[name]
    if ident and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise JudgementFileError(line, name, f"must be a string, not {type(value).__name__}")
    if "\x00" in value:
        raise JudgementFileError(line, name, "contains a NUL character")
    if not allow_empty and not value.strip():
        raise JudgementFileError(line, name, "must not be empty")
    if ident and len(value.strip()) > NAME_LIMIT:
        raise JudgementFileError(line, name, f"longer than {NAME_LIMIT} characters")
    return value.strip() if ident else value


def _models(line: int, record: Mapping[str, Any]) -> tuple[str, str]:
    model_a = _text(line, record, "model_a", ident=True)
    model_b = _text(line, record, "model_b", ident=True)
    if model_a == model_b:
        raise JudgementFileError(line, "model_b", f"the same model as model_a ({model_a!r})")
    return model_a, model_b


def _prefloop_row(line: int, record: Mapping[str, Any], criteria: list[str]) -> ImportedJudgement:
    unknown = sorted(set(record) - set(PREFLOOP_FIELDS))
    if unknown:
        raise JudgementFileError(line, unknown[0], f"unknown field; allowed: {', '.join(PREFLOOP_FIELDS)}")
    for name in PREFLOOP_REQUIRED:
        if name not in record:
            raise JudgementFileError(line, name, "missing")
    prompt_id = _text(line, record, "prompt_id", ident=True)
    prompt = _text(line, record, "prompt")
    model_a, model_b = _models(line, record)
    response_a = _text(line, record, "response_a", allow_empty=True)
    response_b = _text(line, record, "response_b", allow_empty=True)
    annotator = _text(line, record, "annotator", ident=True)
    choices = record["criteria"]
    if not isinstance(choices, dict):
        raise JudgementFileError(line, "criteria", f"must be an object, not {type(choices).__name__}")
    for slug, outcome in choices.items():
        if slug not in criteria:
            raise JudgementFileError(
                line, f"criteria.{slug}", f"unknown criterion; the campaign has {', '.join(criteria)}"
            )
        if outcome not in OUTCOMES:
            raise JudgementFileError(line, f"criteria.{slug}", f"must be one of a, b, tie, not {outcome!r}")
    if OVERALL not in choices:
        raise JudgementFileError(line, f"criteria.{OVERALL}", "missing")
    shown_left = record.get("shown_left")
    if shown_left is not None and shown_left not in ("a", "b"):
        raise JudgementFileError(line, "shown_left", f"must be 'a' or 'b', not {shown_left!r}")
    time_ms = record.get("time_ms", 0)
    if time_ms is None:
        time_ms = 0
    if isinstance(time_ms, bool) or not isinstance(time_ms, int) or not 0 <= time_ms < 2**31:
        raise JudgementFileError(line, "time_ms", f"must be a non-negative integer, not {time_ms!r}")
    return ImportedJudgement(
        line, prompt_id, prompt, model_a, model_b, response_a, response_b, annotator, dict(choices), shown_left, time_ms
    )


def _arena_row(line: int, record: Mapping[str, Any]) -> ImportedJudgement:
    # Arena dumps carry many more fields (turn, anony, language, tstamp, …); they are ignored.
    for name in ARENA_REQUIRED:
        if name not in record:
            raise JudgementFileError(line, name, "missing")
    model_a, model_b = _models(line, record)
    winner = record["winner"]
    if not isinstance(winner, str) or winner not in ARENA_WINNERS:
        # A list or an object is named by its type: it cannot be looked up, and its text may be long.
        shown = type(winner).__name__ if isinstance(winner, list | dict) else repr(winner)
        raise JudgementFileError(line, "winner", f"must be one of {', '.join(ARENA_WINNERS)}, not {shown}")
    question_id = _text(line, record, "question_id", ident=True)
    judge = _text(line, record, "judge", ident=True)
    prompt = (
        _text(line, record, "prompt") if "prompt" in record else _first_message(line, record, "conversation_a", "user")
    )
    return ImportedJudgement(
        line=line,
        prompt_id=question_id,
        prompt=prompt or MISSING_PROMPT_TEXT.format(id=question_id),
        model_a=model_a,
        model_b=model_b,
        response_a=_first_message(line, record, "conversation_a", "assistant"),
        response_b=_first_message(line, record, "conversation_b", "assistant"),
        annotator=judge,
        outcomes={OVERALL: ARENA_WINNERS[winner]},
    )


def _first_message(line: int, record: Mapping[str, Any], name: str, role: str) -> str:
    """The first message of `role` in an Arena conversation ([{"role", "content"}, …]); "" when there is none."""
    conversation = record.get(name)
    if conversation is None:
        return ""
    if not isinstance(conversation, list):
        raise JudgementFileError(line, name, f"must be a list of messages, not {type(conversation).__name__}")
    for position, message in enumerate(conversation):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            raise JudgementFileError(line, f"{name}[{position}]", 'must be an object with a string "content"')
        if "\x00" in message["content"]:
            raise JudgementFileError(line, f"{name}[{position}]", "contains a NUL character")
        if message.get("role") == role:
            return message["content"]
    return ""


def _check_repeats(rows: list[ImportedJudgement]) -> None:
    # One judgement per (comparison, annotator): the same answers of the same two models on the same prompt, in
    # either order, judged twice by one person is a repeat.
    seen: dict[tuple[str, frozenset[tuple[str, str]], str], int] = {}
    for row in rows:
        answers = frozenset(((row.model_a, row.response_a), (row.model_b, row.response_b)))
        key = (row.prompt_id, answers, row.annotator)
        if key in seen:
            raise JudgementFileError(
                row.line, "annotator", f"{row.annotator!r} already judged this pair on line {seen[key]}"
            )
        seen[key] = row.line
