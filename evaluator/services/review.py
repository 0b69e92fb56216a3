"""Review and adjudication: a researcher's decision on a flagged answer or a skipped pair, and the final outcome of
a comparison whose judgements disagree.

Both are written once. Each decision is an insert guarded by a unique constraint (one resolution per item, one
adjudication per comparison and criterion): when two researchers decide the same thing at once, PostgreSQL makes
the second insert wait for the first transaction and then refuses it, and the second researcher is told who
decided first. Nothing of a refused decision is stored.
"""

from collections.abc import Mapping
from datetime import datetime

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.formats import date_format

from evaluator.errors import ServiceError
from evaluator.models import (
    OVERALL,
    Adjudication,
    AnswerFlag,
    Assignment,
    Comparison,
    Judgement,
    Outcome,
    ReviewResolution,
    ReviewStatus,
)

NOTE_MAX = 1000
ADJUDICATION_NOTE_MAX = 2000


def _when(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def _checked_note(note: str, limit: int, *, required: bool) -> str:
    note = note.strip()
    if required and not note:
        raise ServiceError("Write a note saying what was done or why there is nothing to do.")
    if len(note) > limit:
        raise ServiceError(f"The note is {len(note)} characters long; at most {limit} are allowed.")
    return note


def _resolution_store(*, status: str, note: str, by: User, now: datetime | None, **item: object) -> ReviewResolution:
    if status not in ReviewStatus.values:
        raise ServiceError(f"A decision is one of {', '.join(ReviewStatus.values)}, not {status!r}.")
    note = _checked_note(note, NOTE_MAX, required=True)
    try:
        with transaction.atomic():
            return ReviewResolution.objects.create(
                status=status, note=note, resolved_by=by, resolved_at=now or timezone.now(), **item
            )
    except IntegrityError:
        # The only constraint a checked decision can break: another reviewer's decision on the same item.
        earlier = ReviewResolution.objects.select_related("resolved_by").filter(**item).first()
        if earlier is None:
            raise
        raise ServiceError(
            f"{earlier.resolved_by.get_username()} already marked this {earlier.get_status_display().lower()} at "
            f"{_when(earlier.resolved_at)} (“{earlier.note}”); your decision was not stored."
        ) from None


def answer_flag_resolve(
    *, flag: AnswerFlag, status: str, note: str, by: User, now: datetime | None = None
) -> ReviewResolution:
    """Resolve (acted on) or dismiss (nothing to do) a flagged answer, with a note; ServiceError when the note is
    missing or too long, or when someone else decided first."""
    return _resolution_store(status=status, note=note, by=by, now=now, answer_flag=flag)


def skipped_pair_resolve(
    *, assignment: Assignment, status: str, note: str, by: User, now: datetime | None = None
) -> ReviewResolution:
    """Resolve or dismiss a skipped pair, with a note; ServiceError for a pair that was not skipped, a missing or
    too long note, or when someone else decided first."""
    if assignment.skipped_at is None:
        raise ServiceError("This pair was not skipped: there is nothing to review.")
    return _resolution_store(status=status, note=note, by=by, now=now, skipped_assignment=assignment)


def comparison_adjudicate(
    *, comparison: Comparison, outcomes: Mapping[str, str], note: str = "", by: User, now: datetime | None = None
) -> list[Adjudication]:
    """Record the final outcome of `comparison` on each criterion of `outcomes` ({criterion slug: "a"/"b"/"tie"}),
    all or nothing. ServiceError for an unknown criterion or outcome, a comparison nobody judged, or a criterion
    already adjudicated (naming who did it and when; none of the outcomes is stored then)."""
    if not outcomes:
        raise ServiceError("Choose an outcome for at least one criterion.")
    slugs = comparison.campaign.criterion_slugs
    for criterion, outcome in outcomes.items():
        if criterion not in slugs:
            raise ServiceError(f"Unknown criterion {criterion!r}; this campaign has {', '.join(slugs)}.")
        if outcome not in Outcome.values:
            raise ServiceError(f"The outcome of {criterion} must be one of a, b or tie, not {outcome!r}.")
    note = _checked_note(note, ADJUDICATION_NOTE_MAX, required=False)
    if not Judgement.objects.filter(comparison=comparison).exists():
        raise ServiceError("Nobody has judged this comparison yet: there is nothing to adjudicate.")
    now = now or timezone.now()
    ordered = sorted(outcomes, key=lambda slug: slugs.index(slug))
    rows = [
        Adjudication(
            comparison=comparison, criterion=slug, outcome=outcomes[slug], note=note, decided_by=by, decided_at=now
        )
        for slug in ordered
    ]
    try:
        with transaction.atomic():
            return Adjudication.objects.bulk_create(rows)
    except IntegrityError:
        earlier = (
            Adjudication.objects.select_related("decided_by")
            .filter(comparison=comparison, criterion__in=ordered)
            .order_by("decided_at", "pk")
            .first()
        )
        if earlier is None:
            raise
        raise ServiceError(
            f"{earlier.decided_by.get_username()} already adjudicated {_label(comparison, earlier.criterion)} of "
            f"this comparison at {_when(earlier.decided_at)} ({earlier.get_outcome_display()}); none of your "
            "outcomes was stored."
        ) from None


def _label(comparison: Comparison, slug: str) -> str:
    if slug == OVERALL:
        return "Overall"
    labels = {criterion["slug"]: criterion.get("label") or slug for criterion in comparison.campaign.criteria}
    return labels.get(slug, slug)
