"""Reads about qualification: where an annotator stands in a campaign's qualification (as SQL for the claim's own
query, or as a summary for a page), the gold comparisons an admin may pick, and every annotator's results."""

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Case, Exists, F, Func, IntegerField, OuterRef, Q, QuerySet, Subquery, Value, When
from django.db.models.lookups import GreaterThanOrEqual

from evaluator.models import (
    Campaign,
    Comparison,
    QualificationAnswer,
    QualificationAttempt,
    QualificationItem,
)

# Where an annotator stands in a campaign's qualification (qualification_standing).
QUALIFIED = 0  # none asked, or passed: the campaign's pairs are served
DUE = 1  # asked and not passed yet, attempts left: only qualification pairs are served
FAILED = 2  # every attempt failed: nothing more is served from the campaign


def qualification_standing(*, annotator: User | int) -> Case:
    """QUALIFIED, DUE or FAILED for each row of a Campaign queryset, as SQL: the claim reads it in the query that
    reads the served campaigns, and a campaign that asks no qualification stops at the CASE's first branch."""
    attempts = QualificationAttempt.objects.filter(campaign=OuterRef("pk"), annotator=annotator)
    failed = attempts.filter(passed=False).order_by()
    failed_count = Subquery(
        failed.annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField())).values("n"),
        output_field=IntegerField(),
    )
    return Case(
        When(qualification_required=False, then=Value(QUALIFIED)),
        When(Exists(attempts.filter(passed=True)), then=Value(QUALIFIED)),
        When(GreaterThanOrEqual(failed_count, F("qualification_attempts")), then=Value(FAILED)),
        default=Value(DUE),
        output_field=IntegerField(),
    )


def campaign_qualified(*, annotator: User | int) -> Q:
    """A condition on Campaign rows: the campaign asks no qualification, or `annotator` passed it."""
    passed = QualificationAttempt.objects.filter(campaign=OuterRef("pk"), annotator=annotator, passed=True)
    return Q(qualification_required=False) | Q(Exists(passed))


def campaign_is_qualified(*, campaign_id: int, annotator: User) -> bool:
    """Whether `annotator` may be served the campaign's pairs as far as qualification goes, read now."""
    return Campaign.objects.filter(pk=campaign_id).filter(campaign_qualified(annotator=annotator)).exists()


@dataclass(frozen=True)
class AttemptResult:
    number: int
    correct: int
    total: int
    passed: bool | None
    threshold: float

    @property
    def percent(self) -> int:
        return round(100 * self.correct / self.total) if self.total else 0

    @property
    def needed(self) -> int:
        return round(100 * self.threshold)


@dataclass(frozen=True)
class Standing:
    """An annotator's qualification in one campaign, for the rating page."""

    campaign: Campaign
    attempts: list[AttemptResult]
    allowed: int
    open_attempt: int | None  # the number of the attempt under way, if any

    @property
    def passed(self) -> bool:
        return any(attempt.passed for attempt in self.attempts)

    @property
    def used(self) -> int:
        return len(self.attempts)

    @property
    def left(self) -> int:
        return max(0, self.allowed - self.used)

    @property
    def failed_out(self) -> bool:
        return not self.passed and self.open_attempt is None and self.left == 0

    @property
    def last(self) -> AttemptResult | None:
        finished = [attempt for attempt in self.attempts if attempt.passed is not None]
        return finished[-1] if finished else None


def qualification_standing_of(*, campaign: Campaign, annotator: User) -> Standing:
    """Every attempt of `annotator` at the campaign's qualification, oldest first (one query)."""
    rows = QualificationAttempt.objects.filter(campaign=campaign, annotator=annotator).order_by("number")
    attempts = [AttemptResult(row.number, row.correct, row.total, row.passed, row.threshold) for row in rows]
    open_attempt = next((attempt.number for attempt in attempts if attempt.passed is None), None)
    return Standing(campaign, attempts, campaign.qualification_attempts, open_attempt)


def qualification_answer_shown(*, token: str) -> QualificationAnswer | None:
    """One qualification item with everything its page shows (the attempt, its campaign, the prompt, both
    answers), in one query; None for an unknown token."""
    return (
        QualificationAnswer.objects.select_related(
            "attempt__campaign__guidelines_version",
            "comparison__prompt",
            "comparison__candidate_a",
            "comparison__candidate_b",
        )
        .filter(token=token)
        .first()
    )


def qualification_answer_open(*, campaign: Campaign, annotator: User) -> QualificationAnswer | None:
    """The next unanswered item of the annotator's attempt under way in the campaign, with what its page shows."""
    return (
        QualificationAnswer.objects.select_related(
            "attempt__campaign__guidelines_version",
            "comparison__prompt",
            "comparison__candidate_a",
            "comparison__candidate_b",
        )
        .filter(
            attempt__campaign=campaign,
            attempt__annotator=annotator,
            attempt__finished_at__isnull=True,
            answered_at__isnull=True,
        )
        .order_by("position")
        .first()
    )


def qualification_answered_count(*, attempt_id: int) -> int:
    return QualificationAnswer.objects.filter(attempt_id=attempt_id, answered_at__isnull=False).count()


def qualification_candidates(*, campaign: Campaign) -> QuerySet[Comparison]:
    """The campaign's gold comparisons, which an admin may pick as its qualification set."""
    return (
        Comparison.objects.filter(campaign=campaign, gold_outcome__isnull=False)
        .select_related("prompt")
        .order_by("prompt__external_id", "pk")
    )


def qualification_item_ids(*, campaign: Campaign) -> list[int]:
    return list(QualificationItem.objects.filter(campaign=campaign).values_list("comparison_id", flat=True))


@dataclass(frozen=True)
class QualificationRow:
    """One annotator's attempts at a campaign's qualification, for the quality page."""

    username: str
    attempts: list[AttemptResult]
    allowed: int

    @property
    def best(self) -> AttemptResult | None:
        finished = [attempt for attempt in self.attempts if attempt.passed is not None]
        return max(finished, key=lambda attempt: attempt.correct / attempt.total) if finished else None

    @property
    def outcome(self) -> str:
        if any(attempt.passed for attempt in self.attempts):
            return "passed"
        if any(attempt.passed is None for attempt in self.attempts):
            return "under way"
        return "failed" if len(self.attempts) >= self.allowed else "retry open"


def qualification_results(*, campaign: Campaign) -> list[QualificationRow]:
    """Every annotator who tried the campaign's qualification, by name, with each attempt (one query)."""
    rows: dict[str, list[AttemptResult]] = {}
    attempts = (
        QualificationAttempt.objects.filter(campaign=campaign)
        .select_related("annotator")
        .order_by("annotator__username", "number")
    )
    for attempt in attempts:
        rows.setdefault(attempt.annotator.username, []).append(
            AttemptResult(attempt.number, attempt.correct, attempt.total, attempt.passed, attempt.threshold)
        )
    return [QualificationRow(name, results, campaign.qualification_attempts) for name, results in rows.items()]
