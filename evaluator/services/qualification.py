"""Qualification: a campaign may ask annotators to pass a set of gold comparisons before it serves them its pairs.

An attempt fixes its items when it starts (one QualificationAnswer each, in a random order, sides drawn as for any
pair) and ends when the last is answered: passed when the share answered like the gold outcome reaches the
threshold. Only the overall preference is asked; which answer is gold-right is never shown, only the score at
the end. Invariants, and what holds each:

- Attempt numbers are 1, 2, … per annotator and campaign: ``UniqueConstraint(campaign, annotator, number)``.
- At most the campaign's number of attempts: ``allowed`` (the campaign's limit when the attempt started) is
  stored on the attempt and ``number <= allowed`` is a CheckConstraint; a start past it is refused with a message.
- One attempt under way at a time, none after a pass: two partial unique constraints.
- One annotator's starts run one at a time (the user row is locked, as the claim does), and a submission locks its
  attempt row: two submissions of the last item at once store one answer and end the attempt once; the other
  gets the stored result.

The claim (evaluator/services/rating.py) serves a campaign's pairs only once the annotator passed
(``selectors.qualification.qualification_standing``) and raises ``QualificationDue`` instead; a judgement is
stored only for a qualified annotator (``selectors.rating.campaign_served``).
"""

import math
import random
from collections.abc import Iterable
from datetime import datetime

from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from evaluator.errors import ServiceError
from evaluator.models import (
    Campaign,
    CampaignState,
    Comparison,
    QualificationAnswer,
    QualificationAttempt,
    QualificationItem,
)
from evaluator.selectors.qualification import qualification_answer_open
from evaluator.selectors.rating import campaign_state_for
from evaluator.services.rating import SIDES, left_is_a_draw, side_to_outcome

# Settings ----------------------------------------------------------------------------------------------------


def qualification_items_set(*, campaign: Campaign, comparisons: Iterable[Comparison]) -> int:
    """Make `comparisons` the campaign's qualification set (replacing the one before); returns its size.

    Each must be a gold comparison of this campaign (ServiceError naming the ones that are not, nothing changed).
    Attempts under way keep the items they started with."""
    chosen = {comparison.pk: comparison for comparison in comparisons}
    wrong = sorted(
        pk for pk, comparison in chosen.items() if comparison.campaign_id != campaign.pk or not comparison.gold_outcome
    )
    if wrong:
        raise ServiceError(
            "Qualification items must be gold comparisons of this campaign; these are not: "
            + ", ".join(f"#{pk}" for pk in wrong)
            + "."
        )
    with transaction.atomic():
        QualificationItem.objects.filter(campaign=campaign).exclude(comparison_id__in=chosen).delete()
        QualificationItem.objects.bulk_create(
            [QualificationItem(campaign=campaign, comparison_id=pk) for pk in chosen], ignore_conflicts=True
        )
    return len(chosen)


def qualification_settings_check(*, required: bool, threshold: float, attempts: int, items: int) -> None:
    """ServiceError saying what is wrong with a campaign's qualification settings; nothing when they hold."""
    if not 0 < threshold <= 1:
        raise ServiceError(f"The pass threshold is a share above 0 and at most 1, not {threshold}.")
    if attempts < 1:
        raise ServiceError(f"Annotators need at least one attempt at the qualification, not {attempts}.")
    if required and items == 0:
        raise ServiceError(
            "A qualification needs at least one gold comparison: mark some as gold (Django admin) and pick them."
        )


# Attempts ----------------------------------------------------------------------------------------------------


def qualification_pair_next(
    *, campaign: Campaign, annotator: User, now: datetime | None = None
) -> QualificationAnswer | None:
    """The next item of the annotator's attempt under way; the first attempt is started when there was none yet.
    None when the last attempt ended (failed, with a retry to ask for, or passed) and no other is under way."""
    answer = qualification_answer_open(campaign=campaign, annotator=annotator)
    if answer is not None:
        return answer
    if QualificationAttempt.objects.filter(campaign=campaign, annotator=annotator).exists():
        return None
    qualification_attempt_start(campaign=campaign, annotator=annotator, now=now)
    return qualification_answer_open(campaign=campaign, annotator=annotator)


def qualification_attempt_start(
    *, campaign: Campaign, annotator: User, now: datetime | None = None
) -> QualificationAttempt:
    """Start the annotator's next attempt at the campaign's qualification: its items in a random order, each with
    its sides drawn. The attempt already under way, if any, is returned as it is (a double click starts one).

    Refused (ServiceError, nothing written) when the campaign asks no qualification or has no items, is not served
    to the annotator, when they passed already, or when they have used every attempt it allows."""
    now = now or timezone.now()
    with transaction.atomic():
        # One annotator's starts run one after the other, so the count of attempts below stays true.
        get_user_model().objects.select_for_update(no_key=True).filter(pk=annotator.pk).exists()
        campaign = Campaign.objects.get(pk=campaign.pk)
        attempts = list(QualificationAttempt.objects.filter(campaign=campaign, annotator=annotator))
        if not campaign.qualification_required:
            raise ServiceError(f"“{campaign.name}” asks no qualification.")
        _check_still_served(campaign, annotator, what="no attempt was started")
        under_way = next((attempt for attempt in attempts if attempt.finished_at is None), None)
        if under_way is not None:
            return under_way
        _check_attempts_left(campaign, attempts)
        items = list(
            QualificationItem.objects.filter(campaign=campaign, comparison__gold_outcome__isnull=False).values_list(
                "comparison_id", flat=True
            )
        )
        if not items:
            raise ServiceError(f"“{campaign.name}” has no qualification items yet; ask an admin to pick some.")
        random.shuffle(items)
        try:
            with transaction.atomic():  # a savepoint: a constraint that refuses the row leaves nothing behind
                attempt = QualificationAttempt.objects.create(
                    campaign=campaign,
                    annotator=annotator,
                    number=len(attempts) + 1,
                    allowed=campaign.qualification_attempts,
                    threshold=campaign.qualification_threshold,
                    total=len(items),
                    started_at=now,
                )
        except IntegrityError as error:  # only rows written around this service can get here
            raise ServiceError("Another attempt at this qualification was started at the same time.") from error
        QualificationAnswer.objects.bulk_create(
            QualificationAnswer(attempt=attempt, comparison_id=pk, position=position, left_is_a=left_is_a_draw())
            for position, pk in enumerate(items)
        )
    return attempt


def _check_attempts_left(campaign: Campaign, attempts: list[QualificationAttempt]) -> None:
    if any(attempt.passed for attempt in attempts):
        raise ServiceError(f"You passed the qualification of “{campaign.name}” already.")
    allowed = campaign.qualification_attempts
    if len(attempts) >= allowed:
        raise ServiceError(
            f"You have used all {allowed} attempt{'s' if allowed != 1 else ''} at the qualification of "
            f"“{campaign.name}”; no more are allowed, so it serves you no pairs."
        )


def qualification_answer_submit(
    *, token: str, annotator: User, side: str, now: datetime | None = None
) -> QualificationAttempt:
    """Answer one item of an attempt (`side`: left, right or tie, the overall preference) and return its attempt,
    ended (passed or not) when this was its last item. A repeat, or a second submission racing the first, changes
    nothing and returns the attempt as stored.

    Refused (ServiceError, nothing stored) for a side other than those, an attempt that has ended, or a campaign
    no longer served to the annotator; someone else's token is PermissionDenied."""
    now = now or timezone.now()
    answer = QualificationAnswer.objects.select_related("attempt__campaign", "comparison").filter(token=token).first()
    if answer is None or answer.attempt.annotator_id != annotator.pk:
        raise PermissionDenied("This task is not yours.")
    if side not in SIDES:
        raise ServiceError(f"Choose left, right or tie, not {side!r}.")
    campaign = answer.attempt.campaign
    with transaction.atomic():
        # Every submission of one attempt runs under its row lock: the count of answers left below is exact.
        attempt = QualificationAttempt.objects.select_for_update(no_key=True).get(pk=answer.attempt_id)
        answered = QualificationAnswer.objects.filter(pk=answer.pk, answered_at__isnull=False).exists()
        if answered:
            return attempt  # a repeat (a double click, a second tab): the first submission stands
        if attempt.finished_at is not None:
            raise ServiceError("This qualification attempt has ended, so the answer was not stored.")
        _check_still_served(campaign, annotator)
        outcome = side_to_outcome(side, left_is_a=answer.left_is_a)
        correct = outcome == answer.comparison.gold_outcome
        QualificationAnswer.objects.filter(pk=answer.pk, answered_at__isnull=True).update(
            outcome=outcome, correct=correct, answered_at=now
        )
        left = QualificationAnswer.objects.filter(attempt=attempt, answered_at__isnull=True).count()
        attempt.correct += int(correct)
        fields: dict[str, object] = {"correct": F("correct") + int(correct)}
        if left == 0:
            attempt.passed = attempt.correct >= _needed(attempt.threshold, attempt.total)
            attempt.finished_at = now
            fields.update(passed=attempt.passed, finished_at=now)
        QualificationAttempt.objects.filter(pk=attempt.pk, finished_at__isnull=True).update(**fields)
    return attempt


def _needed(threshold: float, total: int) -> int:
    """Items an attempt of `total` must get right: the threshold's share, rounded up (4 of 5 for 0.8; a float
    product such as 0.7 × 10 = 7.000000000000001 is taken as the whole number it means)."""
    return math.ceil(round(threshold * total, 9))


def _check_still_served(campaign: Campaign, annotator: User, *, what: str = "your answer was not stored") -> None:
    state, assigned = campaign_state_for(campaign_id=campaign.pk, annotator=annotator)
    if state != CampaignState.ACTIVE:
        raise ServiceError(f"“{campaign.name}” is {CampaignState(state).in_words}, so {what}.")
    if not assigned:
        raise ServiceError(f"You are not assigned to “{campaign.name}”, so {what}.")
