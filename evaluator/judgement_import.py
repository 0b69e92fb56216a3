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
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluator.accounts import role_groups_ensure
from evaluator.assignments import comparison_counters_refresh
from evaluator.models import (
    OVERALL,
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    CriterionChoice,
    Judgement,
    ModelVariant,
    Prompt,
)
from evaluator.roles import ANNOTATOR

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
        raise JudgementFileError(None, None, f"the file is not UTF-8 (byte {error.start})") from None
    rows = list(_rows(text, criteria))
    if not rows:
        raise JudgementFileError(None, None, "the file holds no judgements")
    _check_repeats(rows)
    return rows


def _rows(text: str, criteria: list[str]) -> Iterator[ImportedJudgement]:
    for number, line in enumerate(text.splitlines(), start=1):
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
    if winner not in ARENA_WINNERS:
        raise JudgementFileError(line, "winner", f"must be one of {', '.join(ARENA_WINNERS)}, not {winner!r}")
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


# Writing ---------------------------------------------------------------------------------------------------


def judgements_import(*, campaign: Campaign, data: bytes, now: datetime | None = None) -> ImportSummary:
    """Store every judgement of a JSONL file in `campaign`, or none (JudgementFileError names line and field).

    Missing prompts (by external id), variants (by name, base_model "imported:<name>"), candidates, comparisons
    and annotator accounts are created. Comparisons are canonical: variant a is the one with the lower id, and
    a line whose model_a has the higher id has its responses, outcomes and shown side swapped. A line whose
    annotator already judged that comparison is refused, so importing the same file twice stores nothing.
    """
    rows = parse_judgement_file(data, criteria=campaign.criterion_slugs)
    now = now or timezone.now()
    summary = ImportSummary(judgements=len(rows))
    try:
        with transaction.atomic():
            _write(campaign, rows, now, summary)
    except IntegrityError as error:  # a concurrent import got there first
        raise JudgementFileError(
            None, None, f"the database refused the import ({error}); nothing was imported"
        ) from None
    return summary


def _write(campaign: Campaign, rows: list[ImportedJudgement], now: datetime, summary: ImportSummary) -> None:
    variants = _variants(rows, summary)
    prompts = _prompts(campaign, rows, summary)
    users = _annotators(rows, summary)
    candidates: dict[tuple[int, int, str], Candidate] = {}
    for candidate in Candidate.objects.filter(prompt__in=prompts.values(), variant__in=variants.values()):
        candidates.setdefault((candidate.prompt_id, candidate.variant_id, candidate.text), candidate)
    next_sample: dict[tuple[int, int], int] = {}
    for candidate in candidates.values():
        key = (candidate.prompt_id, candidate.variant_id)
        next_sample[key] = max(next_sample.get(key, 0), candidate.sample_index + 1)

    canonical = []  # (row, prompt, (variant, text) of a, (variant, text) of b, flipped)
    new_candidates: list[Candidate] = []
    for row in rows:
        prompt = prompts[row.prompt_id]
        first, second = (variants[row.model_a], row.response_a), (variants[row.model_b], row.response_b)
        flipped = first[0].pk > second[0].pk
        side_a, side_b = (second, first) if flipped else (first, second)
        for variant, text in (side_a, side_b):
            key = (prompt.pk, variant.pk, text)
            if key not in candidates:
                sample = next_sample.get((prompt.pk, variant.pk), 0)
                next_sample[(prompt.pk, variant.pk)] = sample + 1
                candidates[key] = Candidate(
                    prompt=prompt,
                    variant=variant,
                    sample_index=sample,
                    text=text,
                    generation_settings={"imported": True},
                    seed=0,
                    prompt_tokens=0,
                    completion_tokens=0,
                    latency_ms=0,
                )
                new_candidates.append(candidates[key])
        canonical.append((row, prompt, side_a, side_b, flipped))
    Candidate.objects.bulk_create(new_candidates)

    comparisons = {
        (c.candidate_a_id, c.candidate_b_id): c
        for c in Comparison.objects.filter(campaign=campaign, prompt__in=prompts.values())
    }
    new_comparisons = []
    for _, prompt, side_a, side_b, _ in canonical:
        cand_a, cand_b = (
            candidates[(prompt.pk, side_a[0].pk, side_a[1])],
            candidates[(prompt.pk, side_b[0].pk, side_b[1])],
        )
        if (cand_a.pk, cand_b.pk) not in comparisons:
            comparison = Comparison(
                campaign=campaign,
                prompt=prompt,
                candidate_a=cand_a,
                candidate_b=cand_b,
                variant_a=side_a[0],
                variant_b=side_b[0],
            )
            comparisons[(cand_a.pk, cand_b.pk)] = comparison
            new_comparisons.append(comparison)
    Comparison.objects.bulk_create(new_comparisons)
    summary.comparisons_created = len(new_comparisons)

    planned = []
    for row, prompt, side_a, side_b, flipped in canonical:
        comparison = comparisons[
            (candidates[(prompt.pk, side_a[0].pk, side_a[1])].pk, candidates[(prompt.pk, side_b[0].pk, side_b[1])].pk)
        ]
        planned.append((row, comparison, users[row.annotator], flipped))
    _refuse_repeats(planned)

    assignments = Assignment.objects.bulk_create(
        Assignment(
            comparison=comparison,
            annotator=user,
            left_is_a=_left_is_a(row.shown_left, flipped),
            lease_expires_at=now,
            completed_at=now,
        )
        for row, comparison, user, flipped in planned
    )
    judgements = Judgement.objects.bulk_create(
        Judgement(assignment=assignment, comparison=comparison, annotator=user, time_on_task_ms=row.time_ms)
        for assignment, (row, comparison, user, _) in zip(assignments, planned, strict=True)
    )
    CriterionChoice.objects.bulk_create(
        CriterionChoice(judgement=judgement, criterion=slug, outcome=_flip(outcome) if flipped else outcome)
        for judgement, (row, _, _, flipped) in zip(judgements, planned, strict=True)
        for slug, outcome in row.outcomes.items()
    )
    summary.criteria = {slug for row in rows for slug in row.outcomes}
    # The rows above bypassed the assignment engine: bring its ranking columns up to date.
    comparison_counters_refresh(comparison_ids=[comparison.pk for _, comparison, _, _ in planned], now=now)


def _flip(outcome: str) -> str:
    return {"a": "b", "b": "a"}.get(outcome, outcome)


def _left_is_a(shown_left: str | None, flipped: bool) -> bool:
    # Unknown side: recorded as "a on the left" (see docs/formats.md); position-bias figures then say nothing
    # about these judgements.
    if shown_left is None:
        return True
    return (shown_left == "a") != flipped


def _variants(rows: list[ImportedJudgement], summary: ImportSummary) -> dict[str, ModelVariant]:
    names = sorted({name for row in rows for name in (row.model_a, row.model_b)})
    variants = {variant.name: variant for variant in ModelVariant.objects.filter(name__in=names)}
    # Created in first-appearance order so that ids, and with them the canonical sides, are predictable.
    order = list(dict.fromkeys(name for row in rows for name in (row.model_a, row.model_b)))
    new = [
        ModelVariant(name=name, base_model=IMPORTED_BASE_MODEL.format(name=name))
        for name in order
        if name not in variants
    ]
    for variant in ModelVariant.objects.bulk_create(new):
        variants[variant.name] = variant
    summary.variants_created = len(new)
    return variants


def _prompts(campaign: Campaign, rows: list[ImportedJudgement], summary: ImportSummary) -> dict[str, Prompt]:
    prompts = {
        prompt.external_id: prompt
        for prompt in Prompt.objects.filter(campaign=campaign, external_id__in={row.prompt_id for row in rows})
    }
    new: dict[str, Prompt] = {}
    for row in rows:  # the first line naming a new prompt gives its text
        if row.prompt_id not in prompts and row.prompt_id not in new:
            new[row.prompt_id] = Prompt(campaign=campaign, external_id=row.prompt_id, text=row.prompt)
    prompts.update((prompt.external_id, prompt) for prompt in Prompt.objects.bulk_create(new.values()))
    summary.prompts_created = len(new)
    return prompts


def _annotators(rows: list[ImportedJudgement], summary: ImportSummary) -> dict[str, Any]:
    model = get_user_model()
    names = list(dict.fromkeys(row.annotator for row in rows))
    users = {user.get_username(): user for user in model.objects.filter(username__in=names)}
    group = role_groups_ensure()[ANNOTATOR]
    for name in names:
        if name not in users:
            user = model(username=name)
            user.set_unusable_password()
            user.save()
            user.groups.add(group)
            users[name] = user
            summary.annotators_created += 1
    return users


def _refuse_repeats(planned: list[tuple[ImportedJudgement, Comparison, Any, bool]]) -> None:
    comparison_ids = {comparison.pk for _, comparison, _, _ in planned}
    taken = set(
        Assignment.objects.filter(comparison_id__in=comparison_ids).values_list("comparison_id", "annotator_id")
    )
    for row, comparison, user, _ in planned:
        if (comparison.pk, user.pk) in taken:
            raise JudgementFileError(
                row.line,
                "annotator",
                f"{row.annotator!r} already judged prompt {row.prompt_id!r} ({row.model_a} vs {row.model_b}) in "
                "this campaign; was the file imported before? Nothing was imported",
            )
