"""Imports of uploaded files into a campaign: prompts, and judgements collected elsewhere; all or nothing."""

from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.utils import timezone

from evaluator.batching import WRITE_BATCH, batched
from evaluator.errors import ServiceError
from evaluator.models import (
    Assignment,
    Campaign,
    Candidate,
    Comparison,
    CriterionChoice,
    Judgement,
    ModelVariant,
    Prompt,
)
from evaluator.parsing.judgements import (
    IMPORTED_BASE_MODEL,
    ImportedJudgement,
    ImportSummary,
    JudgementFileError,
    parse_judgement_file,
)
from evaluator.parsing.prompts import PromptRow, parse_prompt_file
from evaluator.roles import ANNOTATOR
from evaluator.services.accounts import role_groups_ensure
from evaluator.services.participation import participations_rated_add
from evaluator.services.rating import comparison_counters_refresh


def prompts_import(*, campaign: Campaign, file_name: str, data: bytes) -> int:
    """Store every prompt of a JSONL/CSV file, or none: the file is validated whole first."""
    return prompts_store(campaign=campaign, rows=parse_prompt_file(file_name, data))


@transaction.atomic
def prompts_store(*, campaign: Campaign, rows: Sequence[PromptRow]) -> int:
    """Add validated prompt rows to a campaign, all or none: an external id the campaign has already refuses
    them all (ServiceError naming it)."""
    taken = {
        external_id
        for ids in batched(row.external_id for row in rows)
        for external_id in Prompt.objects.filter(campaign=campaign, external_id__in=ids).values_list(
            "external_id", flat=True
        )
    }
    if taken:
        raise ServiceError(f"The campaign already has prompt id(s): {', '.join(sorted(taken)[:10])}.")
    Prompt.objects.bulk_create(
        (
            Prompt(
                campaign=campaign,
                external_id=row.external_id,
                text=row.text,
                reference=row.reference,
                context=row.context,
                category=row.category,
            )
            for row in rows
        ),
        batch_size=WRITE_BATCH,
    )
    return len(rows)


def judgements_import(*, campaign: Campaign, data: bytes, now: datetime | None = None) -> ImportSummary:
    """Store every judgement of a JSONL file in `campaign`, or none (JudgementFileError names line and field).

    The error's message says what is wrong, not that nothing was stored: callers add that, once.

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
        raise JudgementFileError(None, None, f"the database refused the import ({error})") from None
    return summary


# One imported judgement, placed: the row, its prompt, (variant, text) of answer a and of answer b, and whether the
# file's model_a is our b (a is always the variant with the lower id).
Placed = tuple[ImportedJudgement, Prompt, tuple[ModelVariant, str], tuple[ModelVariant, str], bool]


def _write(campaign: Campaign, rows: list[ImportedJudgement], now: datetime, summary: ImportSummary) -> None:
    variants = _variants(rows, summary)
    prompts = _prompts(campaign, rows, summary)
    users = _annotators(rows, summary)
    placed = [_place(row, prompts[row.prompt_id], variants) for row in rows]
    candidates = _candidates_write(placed, prompts, variants)
    comparisons = _comparisons_write(campaign, placed, prompts, candidates, summary)
    planned = [
        (
            row,
            comparisons[(candidates[(prompt.pk, a[0].pk, a[1])].pk, candidates[(prompt.pk, b[0].pk, b[1])].pk)],
            users[row.annotator],
            flipped,
        )
        for row, prompt, a, b, flipped in placed
    ]
    _refuse_repeats(planned)
    _judgements_write(planned, now)
    summary.criteria = {slug for row in rows for slug in row.outcomes}
    # The rows above bypassed the assignment engine: bring its ranking columns up to date, a batch of
    # comparisons at a time (the refresh looks them up by id).
    for ids in batched(dict.fromkeys(comparison.pk for _, comparison, _, _ in planned)):
        comparison_counters_refresh(comparison_ids=ids, now=now)
    participations_rated_add(Counter((campaign.pk, user.pk) for _, _, user, _ in planned))


def _place(row: ImportedJudgement, prompt: Prompt, variants: dict[str, ModelVariant]) -> Placed:
    first, second = (variants[row.model_a], row.response_a), (variants[row.model_b], row.response_b)
    flipped = first[0].pk > second[0].pk
    side_a, side_b = (second, first) if flipped else (first, second)
    return row, prompt, side_a, side_b, flipped


def _candidates_write(
    placed: list[Placed], prompts: dict[str, Prompt], variants: dict[str, ModelVariant]
) -> dict[tuple[int, int, str], Candidate]:
    """Every answer of the file as a candidate by (prompt, variant, text): the stored one, or a new one whose
    sample index follows the variant's answers to that prompt."""
    candidates: dict[tuple[int, int, str], Candidate] = {}
    variant_ids = [variant.pk for variant in variants.values()]
    for prompt_ids in batched(prompt.pk for prompt in prompts.values()):
        for candidate in Candidate.objects.filter(prompt_id__in=prompt_ids, variant_id__in=variant_ids):
            candidates.setdefault((candidate.prompt_id, candidate.variant_id, candidate.text), candidate)
    next_sample: dict[tuple[int, int], int] = {}
    for candidate in candidates.values():
        pair = (candidate.prompt_id, candidate.variant_id)
        next_sample[pair] = max(next_sample.get(pair, 0), candidate.sample_index + 1)
    new_candidates: list[Candidate] = []
    for _, prompt, side_a, side_b, _ in placed:
        for variant, text in (side_a, side_b):
            key = (prompt.pk, variant.pk, text)
            if key in candidates:
                continue
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
    Candidate.objects.bulk_create(new_candidates, batch_size=WRITE_BATCH)
    return candidates


def _comparisons_write(
    campaign: Campaign,
    placed: list[Placed],
    prompts: dict[str, Prompt],
    candidates: dict[tuple[int, int, str], Candidate],
    summary: ImportSummary,
) -> dict[tuple[int, int], Comparison]:
    """The comparison of every pair of answers by (candidate a, candidate b): the stored one, or a new one."""
    comparisons = {
        (c.candidate_a_id, c.candidate_b_id): c
        for prompt_ids in batched(prompt.pk for prompt in prompts.values())
        for c in Comparison.objects.filter(campaign=campaign, prompt_id__in=prompt_ids)
    }
    new_comparisons = []
    for _, prompt, side_a, side_b, _ in placed:
        cand_a = candidates[(prompt.pk, side_a[0].pk, side_a[1])]
        cand_b = candidates[(prompt.pk, side_b[0].pk, side_b[1])]
        if (cand_a.pk, cand_b.pk) in comparisons:
            continue
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
    Comparison.objects.bulk_create(new_comparisons, batch_size=WRITE_BATCH)
    summary.comparisons_created = len(new_comparisons)
    return comparisons


def _judgements_write(planned: list[tuple[ImportedJudgement, Comparison, Any, bool]], now: datetime) -> None:
    """A completed assignment, its judgement and a choice per criterion for every planned row."""
    assignments = Assignment.objects.bulk_create(
        (
            Assignment(
                comparison=comparison,
                annotator=user,
                left_is_a=_left_is_a(row.shown_left, flipped),
                lease_expires_at=now,
                completed_at=now,
            )
            for row, comparison, user, flipped in planned
        ),
        batch_size=WRITE_BATCH,
    )
    judgements = Judgement.objects.bulk_create(
        (
            Judgement(assignment=assignment, comparison=comparison, annotator=user, time_on_task_ms=row.time_ms)
            for assignment, (row, comparison, user, _) in zip(assignments, planned, strict=True)
        ),
        batch_size=WRITE_BATCH,
    )
    CriterionChoice.objects.bulk_create(
        (
            CriterionChoice(judgement=judgement, criterion=slug, outcome=_flip(outcome) if flipped else outcome)
            for judgement, (row, _, _, flipped) in zip(judgements, planned, strict=True)
            for slug, outcome in row.outcomes.items()
        ),
        batch_size=WRITE_BATCH,
    )


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
    variants = {
        variant.name: variant for batch in batched(names) for variant in ModelVariant.objects.filter(name__in=batch)
    }
    # Created in first-appearance order so that ids, and with them the canonical sides, are predictable.
    order = list(dict.fromkeys(name for row in rows for name in (row.model_a, row.model_b)))
    new = [
        ModelVariant(name=name, base_model=IMPORTED_BASE_MODEL.format(name=name))
        for name in order
        if name not in variants
    ]
    for variant in ModelVariant.objects.bulk_create(new, batch_size=WRITE_BATCH):
        variants[variant.name] = variant
    summary.variants_created = len(new)
    return variants


def _prompts(campaign: Campaign, rows: list[ImportedJudgement], summary: ImportSummary) -> dict[str, Prompt]:
    prompts = {
        prompt.external_id: prompt
        for ids in batched(dict.fromkeys(row.prompt_id for row in rows))
        for prompt in Prompt.objects.filter(campaign=campaign, external_id__in=ids)
    }
    new: dict[str, Prompt] = {}
    for row in rows:  # the first line naming a new prompt gives its text
        if row.prompt_id not in prompts and row.prompt_id not in new:
            new[row.prompt_id] = Prompt(campaign=campaign, external_id=row.prompt_id, text=row.prompt)
    created = Prompt.objects.bulk_create(new.values(), batch_size=WRITE_BATCH)
    prompts.update((prompt.external_id, prompt) for prompt in created)
    summary.prompts_created = len(new)
    return prompts


def _annotators(rows: list[ImportedJudgement], summary: ImportSummary) -> dict[str, Any]:
    model = get_user_model()
    names = list(dict.fromkeys(row.annotator for row in rows))
    users = {user.get_username(): user for batch in batched(names) for user in model.objects.filter(username__in=batch)}
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
    comparison_ids = dict.fromkeys(comparison.pk for _, comparison, _, _ in planned)
    taken = {
        pair
        for ids in batched(comparison_ids)
        for pair in Assignment.objects.filter(comparison_id__in=ids).values_list("comparison_id", "annotator_id")
    }
    for row, comparison, user, _ in planned:
        if (comparison.pk, user.pk) in taken:
            raise JudgementFileError(
                row.line,
                "annotator",
                f"{row.annotator!r} already judged prompt {row.prompt_id!r} ({row.model_a} vs {row.model_b}) in "
                "this campaign (was the file imported before?)",
            )
